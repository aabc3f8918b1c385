"""Where one trial's time goes, and what the proxy trainer costs against a plain `model.fit`.

    python bench/trial_cost.py --data-dir data [--arch STRING] [--repeats 3]

1. Runs real trials exactly as `nas search` does (a fresh worker process: spawn + TensorFlow
   import, build, conversion, LiteRT measurement, proxy training, evaluation) and prints the
   breakdown of each, the framework's fixed overhead and its share of the trial.
2. Times the storage of one finished trial in a real SQLite Optuna study.
3. In one process, side by side: the proxy trainer's steady training throughput vs a plain
   `model.fit` on the same model and the same images (no augmentation), as a ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nas.config import SearchConfig
from nas.evaluators import RealEvaluator
from nas.worker import Status, TrialRunner
from search_spaces import ArchSpec, MnasNetSpace

PARTS = ("build_seconds", "convert_seconds", "measure_seconds", "first_epoch_seconds", "train_seconds", "eval_seconds")


def default_arch() -> str:
    import optuna

    space = MnasNetSpace()
    return space.sample(optuna.trial.FixedTrial(space.default_params())).to_string()


def trial_breakdown(args, config: SearchConfig, workdir: str) -> None:
    print(
        f"arch: {args.arch}\nbudget: {config.train_images} images x {config.epochs} epochs, batch {config.batch_size}, "
        f"{config.val_images} validation images\n"
    )
    rows = []
    # As in a search, one worker serves the trials (its start-up is paid by the first);
    # --fresh-worker starts one per trial, as the first trial of every search.
    runner = TrialRunner(trials_per_worker=1 if args.fresh_worker else 2 * args.repeats)
    spec = ArchSpec.from_string(args.arch)
    for repeat in range(args.repeats):
        # the search's own evaluator, latency first (its cache in a fresh folder per repeat: measured every time)
        trial_config = dataclasses.replace(config, seed=repeat, runs_dir=os.path.join(workdir, str(repeat)))
        evaluator = RealEvaluator(trial_config, runner, *trial_config.device_config.open())
        start = time.perf_counter()
        latency = evaluator.latency(spec)
        outcome = evaluator.accuracy(spec, latency_ms=latency.median_ms)
        wall = time.perf_counter() - start
        if outcome.status is not Status.OK:
            sys.exit(f"trial failed: {outcome.reason}")
        t = latency.timings | outcome.timings
        rows.append(
            {
                "wall": wall,
                "process start + imports + data": wall - sum(t[p] for p in PARTS if p != "first_epoch_seconds"),
                "build (for latency, then for training)": t["build_seconds"],
                "conversion (+check)": t["convert_seconds"],
                "latency measurement": t["measure_seconds"],
                "first step (trace/compile)": t["first_step_seconds"],
                "training (other steps)": t["train_seconds"] - t["first_step_seconds"] - t["curve_seconds"],
                "learning-curve points": t["curve_seconds"],
                "evaluation": t["eval_seconds"],
                "accuracy": outcome.accuracy,
                "latency_ms": latency.median_ms,
                "images/s": t["train_images_per_second"],
            }
        )
    print(f"{'part':32} " + " ".join(f"{'run ' + str(i + 1):>9}" for i in range(len(rows))) + f" {'median':>9} {'share':>7}")
    wall_median = statistics.median(r["wall"] for r in rows)
    for key in rows[0]:
        values = [r[key] for r in rows]
        median = statistics.median(values)
        share = f"{100 * median / wall_median:6.1f}%" if key not in ("wall", "accuracy", "latency_ms", "images/s") else ""
        print(f"{key:32} " + " ".join(f"{v:9.3f}" for v in values) + f" {median:9.3f} {share:>7}")
    runner.close()
    overhead = statistics.median(r["wall"] - r["training (other steps)"] for r in rows)
    print(
        f"\nfixed overhead (everything but training): {overhead:.1f} s = "
        f"{100 * overhead / wall_median:.0f} % of a {wall_median:.1f} s trial"
    )


def storage_cost(workdir: str) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{workdir}/bench.db", directions=["maximize", "minimize"])
    space = MnasNetSpace()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        trial = study.ask()
        space.sample(trial)
        for k in range(20):  # about as many attributes as a real trial records
            trial.set_user_attr(f"attr_{k}", float(k))
        study.tell(trial, (0.5, 1.0))
        times.append(time.perf_counter() - start)
    print(f"storage: a trial's parameters, 20 attributes and values in SQLite: median {1000 * statistics.median(times):.0f} ms")


def throughput_vs_fit(args, config: SearchConfig) -> None:
    import keras
    import numpy as np

    from search_spaces import ArchSpec
    from search_spaces.keras_blocks import build
    from trainers.cifar import load_cifar, train_val_split
    from trainers.proxy import PROXY_BN_MOMENTUM, ProxyBudget, make_optimizer, proxy_model, train_proxy

    data = load_cifar(data_dir=args.data_dir)
    train_idx, val_idx = train_val_split(data, val_size=config.val_images)
    x, y = data.x_train[train_idx[: config.train_images]], data.y_train[train_idx[: config.train_images]]
    spec = ArchSpec.from_string(args.arch)
    epochs = max(2, config.epochs)  # the first epoch traces; steady state needs a second
    budget = ProxyBudget(train_images=len(x), val_images=config.val_images, epochs=epochs, batch_size=config.batch_size)

    ours = train_proxy(
        proxy_model(spec),
        x,
        y,
        data.x_train[val_idx],
        data.y_train[val_idx],
        budget=budget,
        num_classes=10,
    )
    keras.backend.clear_session()
    # the same trainer on Keras' own BatchNormalization layer: what the fused layer buys
    keras_bn = train_proxy(
        build(spec, bn_momentum=PROXY_BN_MOMENTUM),
        x,
        y,
        data.x_train[val_idx],
        data.y_train[val_idx],
        budget=budget,
        num_classes=10,
    )
    keras.backend.clear_session()

    model = build(spec, bn_momentum=PROXY_BN_MOMENTUM)
    steps = len(x) // budget.batch_size
    model.compile(
        optimizer=make_optimizer(budget, total_steps=steps * epochs), loss=keras.losses.CategoricalCrossentropy(from_logits=True)
    )
    xf, yf = x.astype(np.float32), keras.utils.to_categorical(y, 10)
    seconds = []
    start = time.perf_counter()
    model.fit(xf[: budget.batch_size], yf[: budget.batch_size], batch_size=budget.batch_size, epochs=1, verbose=0)
    first_fit = time.perf_counter() - start
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(
            xf[: steps * budget.batch_size],
            yf[: steps * budget.batch_size],
            batch_size=budget.batch_size,
            epochs=1,
            verbose=0,
            shuffle=True,
        )
        seconds.append(time.perf_counter() - start)
    plain = steps * budget.batch_size * (epochs - 1) / sum(seconds[1:])
    print(f"\ntraining throughput, same model and images, {epochs} epochs, steady state (after the first epoch):")
    print(f"  nas proxy trainer (fused steps + fused BatchNorm, flip + pad-crop): {ours.images_per_second:7.0f} img/s")
    print(f"  the same trainer with Keras' BatchNormalization layer:              {keras_bn.images_per_second:7.0f} img/s")
    print(f"  plain model.fit on numpy arrays (Keras AdamW, Keras BatchNorm):     {plain:7.0f} img/s")
    bn_ratio = ours.images_per_second / keras_bn.images_per_second
    print(f"  ratio nas / Keras BatchNorm:                                        {bn_ratio:7.2f}")
    print(f"  ratio nas / plain:                                                  {ours.images_per_second / plain:7.2f}")
    print(
        f"  first step (trace + compile): nas {ours.first_step_seconds:.1f} s, with Keras BatchNorm "
        f"{keras_bn.first_step_seconds:.1f} s, model.fit {first_fit:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--arch", default=None, help="architecture string (default: the space's MobileNetV2-like skeleton)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=SearchConfig.train_images)
    parser.add_argument("--epochs", type=int, default=SearchConfig.epochs)
    parser.add_argument("--skip-fit", action="store_true", help="leave out the comparison with model.fit")
    parser.add_argument("--fresh-worker", action="store_true", help="a new worker process per trial (a search's first trial)")
    args = parser.parse_args()
    args.arch = args.arch or default_arch()
    config = SearchConfig(data_dir=args.data_dir, train_images=args.train_images, epochs=args.epochs)
    with tempfile.TemporaryDirectory() as workdir:
        trial_breakdown(args, config, workdir)
        storage_cost(workdir)
    if not args.skip_fit:
        throughput_vs_fit(args, config)


if __name__ == "__main__":
    main()
