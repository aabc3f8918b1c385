"""Retraining throughput: the recipe's fused training step against a plain `model.fit`, side by side.

Both train the same architecture (default MobileNetV2-0.5) on the same real CIFAR-10 images with
the same optimizer settings (SGD + Nesterov, batch 128, label smoothing): (a) `trainers.fused`:
fused BatchNorm, one fused update kernel per variable, the stateless batch augmentation;
(b) Keras' BatchNormalization and SGD through `model.fit` on an equally augmented `tf.data`
pipeline. They alternate in rounds in one process, so a drift of the machine's speed touches both;
the first step (trace) is timed apart.

    python bench/retrain_speed.py --data-dir data [--arch mobilenetv2-0.5] [--steps 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--arch", default="mobilenetv2-0.5")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import keras

    from nas.choice import parse_arch
    from search_spaces.keras_blocks import build
    from trainers.cifar import load_cifar
    from trainers.fused import FusedStep, StepRecipe, batches

    batch = 128
    images = batch * (args.steps + 1)
    data = load_cifar("cifar10", data_dir=args.data_dir)
    x, y = data.x_train[:images], data.y_train[:images]
    spec = parse_arch(args.arch)
    recipe = StepRecipe(optimizer="sgd", peak_lr=0.05, warmup_steps=0, total_steps=10_000, weight_decay=5e-4, label_smoothing=0.1)

    keras.utils.set_random_seed(0)
    fused_model = build(spec, bn_momentum=0.99, fused_bn=True)
    step = FusedStep(fused_model, recipe)
    plain = build(spec, bn_momentum=0.99, fused_bn=False)
    plain.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
    )

    def fused_round(key: int) -> tuple[float, float]:
        stream = iter(batches(x, y, num_classes=10, batch_size=batch, seed=0, key=key, cutout=16))
        start = time.perf_counter()
        float(step.run(*next(stream)))
        first = time.perf_counter() - start
        start = time.perf_counter()
        for images_, labels in stream:
            loss = step.run(images_, labels)
        float(loss)
        return first, args.steps * batch / (time.perf_counter() - start)

    def fit_round(key: int) -> tuple[float, float]:
        pipeline = batches(x, y, num_classes=10, batch_size=batch, seed=0, key=key, cutout=16)
        start = time.perf_counter()
        plain.fit(pipeline.take(1), epochs=1, verbose=0)
        first = time.perf_counter() - start
        start = time.perf_counter()
        plain.fit(pipeline.skip(1), epochs=1, verbose=0)
        return first, args.steps * batch / (time.perf_counter() - start)

    results: dict[str, list] = {"fused step (nas retrain)": [], "model.fit, Keras BatchNorm": []}
    for k in range(args.rounds):
        for rows, run in zip(results.values(), (fused_round, fit_round), strict=True):
            rows.append(run(k))
    print(f"{args.arch}, batch {batch}, {args.steps} steps per round, {args.rounds} rounds alternating\n")
    print(f"{'trainer':<28} {'first step s':>12} {'img/s per round':>28} {'median img/s':>13}")
    medians = {}
    for name, rows in results.items():
        medians[name] = statistics.median(r[1] for r in rows)
        per_round = " ".join(f"{r[1]:.0f}" for r in rows)
        print(f"{name:<28} {rows[0][0]:>12.1f} {per_round:>28} {medians[name]:>13.0f}")
    fused, fit = medians.values()
    print(f"\nfused / fit: {fused / fit:.2f}x; a 45,000-image epoch: {45_000 / fused:.0f} s vs {45_000 / fit:.0f} s")


if __name__ == "__main__":
    main()
