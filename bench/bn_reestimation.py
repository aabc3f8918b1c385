"""Which batches should re-estimate BatchNorm's statistics for the weight average? Validation accuracy of a
finished retraining's last weights, raw and averaged, with the statistics training left and re-estimated on
training batches augmented with and without cutout (the recipe trains with it).

Until 2026-12-06 the recipe re-estimated on batches without cutout; this measured what that cost at the end of a
100-epoch run (the raw weights and their average agree there, so any gap is the statistics'):

    python bench/bn_reestimation.py runs/retrained/cifar10/<recipe_id>/<arch_id> [--batches 32 128]

It needs the folder's checkpoint (kept in runs/, not under bench/data/). Each run is appended to
bench/data/bn_reestimation.json with the code and the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runlog import append_run  # noqa: E402

OUT = os.path.join(ROOT, "bench", "data", "bn_reestimation.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", help="a retraining's folder holding checkpoint.npz")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128], help="training batches per re-estimation")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()

    from search_spaces import ArchSpec
    from search_spaces.keras_blocks import build
    from trainers.cifar import load_cifar
    from trainers.full import CHECKPOINT, Recipe, _set_weights, bn_momentum_for, epoch_batches, load_checkpoint, split
    from trainers.fused import BatchNormEstimator, Predictor

    loaded = load_checkpoint(os.path.join(args.workdir, CHECKPOINT))
    if loaded is None:
        sys.exit(f"bn_reestimation: no {CHECKPOINT} in {args.workdir}")
    state, arrays = loaded
    recipe = Recipe(**state["recipe"])
    spec = ArchSpec.from_string(state["arch"])
    data = load_cifar(state["dataset"], data_dir=args.data_dir)
    x_train, y_train, x_val, y_val = split(data, recipe)
    steps = len(x_train) // recipe.batch_size * recipe.epochs
    model = build(
        spec,
        input_shape=data.x_train.shape[1:],
        num_classes=data.num_classes,
        bn_momentum=bn_momentum_for(steps),
        dropout=recipe.dropout,
        fused_bn=True,
    )
    _set_weights(model, [arrays[f"w_{k}"] for k in range(len(model.weights))])
    predictor, estimator = Predictor(model), BatchNormEstimator(model)
    trained_statistics = estimator.statistics()
    last_epoch = state["epochs_done"] - 1
    order = np.random.default_rng([recipe.seed, last_epoch]).permutation(len(x_train))  # the last epoch's batches

    def training_batches(count: int, cutout: int):
        augmented = dataclasses.replace(recipe, cutout=cutout)
        kept = epoch_batches(x_train, y_train, order[: count * recipe.batch_size], augmented, data.num_classes, last_epoch)
        return (images for images, _ in kept)

    rows = []

    def score(weights: str) -> None:
        def row(statistics: str) -> None:
            rows.append({"weights": weights, "statistics": statistics, "val_accuracy": predictor.accuracy(x_val, y_val)})

        estimator.assign(trained_statistics)
        row("training's moving averages")
        for count in args.batches:
            for cutout in (0, recipe.cutout):
                estimator.reestimate(training_batches(count, cutout))
                row(f"re-estimated, {count} batches, cutout {cutout}")
        for scored in rows[-1 - 2 * len(args.batches) :]:
            print(f"{scored['weights']:<9} {scored['statistics']:<38} {scored['val_accuracy']:.4f}")

    print(f"{spec.arch_id} after epoch {state['epochs_done']} of {recipe.epochs}; validation accuracy of {len(x_val)} images")
    score("raw")
    for k, variable in enumerate(model.trainable_weights):
        variable.assign(arrays[f"ema_{k}"])
    score("average")

    append_run(
        args.out,
        {
            "arch_id": spec.arch_id,
            "recipe": state["recipe"],
            "epochs_done": state["epochs_done"],
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
