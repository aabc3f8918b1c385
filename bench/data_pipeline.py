"""What the end of an epoch costs: tf.data with autotuning (the pipeline until 2026-12-05) against the fixed
parallelism `trainers.fused.batches` uses now, one epoch of each in turn, in one process.

With autotuning, each iterator starts a thread that re-tunes the pipeline at doubling intervals (up to a
minute); in TensorFlow 2.21 that thread is not woken when its iterator is destroyed, so the epoch's last
step is followed by an idle wait for it (py-spy: `~LogicalThreadWrapper` under `RootDataset::Iterator`;
gdb: the thread in `Model::OptimizeLoop`). The benchmark trains the fused step over real CIFAR-10, as the
proxy does (batch 64), and times each epoch's loop and its iterator's destruction apart.

    python bench/data_pipeline.py --data-dir data [--images 24000] [--rounds 3] [--arch mobilenetv2-0.5]

Each run is appended to bench/data/data_pipeline.json with the code and the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runlog import append_run  # noqa: E402

OUT = os.path.join(ROOT, "bench", "data", "data_pipeline.json")


def autotuned_batches(x, y, *, num_classes: int, batch_size: int, seed: int, key: int):
    """The pipeline as it was: the same batches, parallelism and prefetch left to tf.data's autotuning."""
    import tensorflow as tf

    from trainers.fused import augment_batch

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).enumerate()

    def prepare(index, pair):
        images, labels = pair
        stateless_seed = tf.stack([tf.constant(seed * 1_000_003 + key, tf.int64), index])
        return augment_batch(tf.cast(images, tf.float32), seed=stateless_seed), tf.one_hot(labels, num_classes)

    return data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--arch", default="mobilenetv2-0.5")
    parser.add_argument("--images", type=int, default=24_000, help="training images per epoch (the proxy's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="epochs of each pipeline, alternating")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()

    import keras
    import numpy as np

    from nas.choice import parse_arch
    from search_spaces.keras_blocks import build
    from trainers.cifar import load_cifar
    from trainers.fused import FusedStep, StepRecipe, batches

    data = load_cifar("cifar10", data_dir=args.data_dir)
    x, y = data.x_train[: args.images], data.y_train[: args.images]
    steps = args.images // args.batch_size
    recipe = StepRecipe(optimizer="sgd", peak_lr=0.05, warmup_steps=0, total_steps=10 * steps, weight_decay=5e-4)
    keras.utils.set_random_seed(0)
    step = FusedStep(build(parse_arch(args.arch), bn_momentum=0.99, fused_bn=True), recipe)
    pipelines = {"autotuned (before)": autotuned_batches, "fixed parallelism (now)": batches}
    first = batches(x[: args.batch_size], y[: args.batch_size], num_classes=10, batch_size=args.batch_size, seed=0, key=0)
    float(step.run(*next(iter(first))))  # traced before any epoch is timed
    epochs: dict[str, list[dict]] = {name: [] for name in pipelines}
    for round_ in range(args.rounds):
        order = list(pipelines) if round_ % 2 == 0 else list(reversed(pipelines))  # neither always goes first
        for name in order:
            order_ = np.random.default_rng([0, round_]).permutation(len(x))
            pipeline = pipelines[name](x[order_], y[order_], num_classes=10, batch_size=args.batch_size, seed=0, key=round_)
            stream = iter(pipeline)
            start = time.perf_counter()
            for images, labels in stream:
                loss = step.run(images, labels)
            float(loss)
            loop = time.perf_counter() - start
            del stream, pipeline, images, labels  # the last references to the iterator: it is destroyed here
            teardown = time.perf_counter() - start - loop
            epochs[name].append({"loop_s": loop, "teardown_s": teardown})
            print(f"round {round_ + 1}: {name:<24} loop {loop:6.1f} s, iterator destroyed in {teardown:5.1f} s", flush=True)

    print(f"\n{args.arch}, {args.images} images x batch {args.batch_size}, {args.rounds} epochs of each, alternating")
    print(f"{'pipeline':<24} {'loop s (median)':>16} {'teardown s (each)':>22} {'epoch s (median)':>17}")
    medians = {}
    for name, rows in epochs.items():
        medians[name] = statistics.median(r["loop_s"] + r["teardown_s"] for r in rows)
        teardowns = " ".join(f"{r['teardown_s']:.1f}" for r in rows)
        print(f"{name:<24} {statistics.median(r['loop_s'] for r in rows):>16.1f} {teardowns:>22} {medians[name]:>17.1f}")
    before, now = medians
    print(f"epoch time, {now} / {before}: {medians[now] / medians[before]:.2f}x")

    append_run(
        args.out,
        {
            "arch": args.arch,
            "images": args.images,
            "batch_size": args.batch_size,
            "threads": {k: os.environ.get(k, "TensorFlow's") for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")},
            "epochs": epochs,
            "ratio_now_over_before": medians[now] / medians[before],
        },
    )


if __name__ == "__main__":
    main()
