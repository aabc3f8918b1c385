"""Proxy training: a short, fixed budget whose accuracy ranks architectures (MnasNet's 5-epoch
proxy task, arXiv:1807.11626 section 5, shrunk to what a 2-core CPU affords).

The images stay in memory as uint8 in a `tf.data` pipeline (flip + pad-and-crop augmentation);
the default recipe is Adam at batch 64 with a linear warm-up then cosine decay to zero and label
smoothing: measured on real CIFAR-10 (1 epoch of 10k images, MobileNetV2-like skeleton), it reached
26 % held-out accuracy where SGD+Nesterov reached 12 % at lr 0.1 and 23 % at its best (lr 0.03);
80-150 steps are too few for SGD's usual large learning rates.

Models must be built with a low BatchNorm momentum (`PROXY_BN_MOMENTUM`): after only ~100 steps
Keras' default 0.99 leaves the moving statistics near their initial values and the held-out
accuracy at chance whatever the architecture.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

PROXY_BN_MOMENTUM = 0.9


def proxy_model(spec, *, input_shape=(32, 32, 3), num_classes: int = 10):
    """The Keras model a proxy trial trains: BatchNorm momentum `PROXY_BN_MOMENTUM`, fused
    BatchNorm ops (see `search_spaces.keras_blocks.FusedBatchNormalization`)."""
    from search_spaces.keras_blocks import build

    return build(spec, input_shape=input_shape, num_classes=num_classes, bn_momentum=PROXY_BN_MOMENTUM, fused_bn=True)


#: (training images per epoch, epochs) of a trial, per data set, chosen with `nas proxy-check` (docs/proxy.md).
#: CIFAR-10: against 30-epoch final accuracy of 11 architectures (the proof, bench/data/proof/), 24,000 images x
#: 2 epochs ranked best of the budgets tried (Spearman 0.83, against 0.69-0.75 for 8,000 x 1 over three seeds),
#: for about 6x the training. 100 classes need more than 10: at 8,000 images x 1 epoch CIFAR-100 trials scored
#: 0.018-0.031, within noise of chance (0.010). CIFAR-100: against the 15-epoch finals of 9 architectures of a
#: CIFAR-100 search (bench/data/cifar100/), 20,000 x 1 ranked at Spearman 0.98 [0.74, 1.00] for a median 66 s
#: per trial, 20,000 x 2 at 0.87 [0.39, 1.00] for 136 s (2026-12-06).
DEFAULT_BUDGETS = {"cifar10": (24_000, 2), "cifar100": (20_000, 1)}


@dataclass(frozen=True)
class ProxyBudget:
    """How much training one trial gets; the defaults are chosen by measurement (docs/proxy.md)."""

    train_images: int = DEFAULT_BUDGETS["cifar10"][0]
    val_images: int = 2_000
    epochs: int = DEFAULT_BUDGETS["cifar10"][1]
    batch_size: int = 64
    peak_lr: float = 5e-3
    warmup_fraction: float = 0.15
    weight_decay: float = 0.0  # one or two epochs do not overfit; regularisation only slows the ranking
    label_smoothing: float = 0.1
    optimizer: str = "adam"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer={self.optimizer!r} is not one of adam, sgd")
        for name in ("train_images", "val_images", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.peak_lr <= 0:
            raise ValueError(f"peak_lr={self.peak_lr} must be positive")


def default_budget(dataset: str) -> tuple[int, int]:
    """(training images, epochs) of the proxy on `dataset` (a table-only data set: CIFAR-10's)."""
    return DEFAULT_BUDGETS.get(dataset, DEFAULT_BUDGETS["cifar10"])


def chance_ceiling(*, num_classes: int, val_images: int) -> float:
    """The accuracy a model that learned nothing stays below with 99.9 % probability: chance plus 3.1
    binomial standard errors on `val_images` images. A proxy whose trials score under it ranks noise."""
    chance = 1.0 / num_classes
    return chance + 3.1 * math.sqrt(chance * (1.0 - chance) / val_images)


@dataclass(frozen=True)
class ProxyResult:
    accuracy: float  # held-out fraction in [0, 1]
    train_seconds: float
    first_epoch_seconds: float  # includes tracing/compilation
    first_step_seconds: float  # tracing/compilation + one step
    eval_seconds: float
    steps: int
    images_per_second: float  # steady-state training throughput (every step but the first, curve points left out)
    curve: tuple[tuple[float, float], ...] = ()  # (fraction of training done, held-out accuracy on a subset)
    curve_seconds: float = 0.0  # part of train_seconds spent evaluating the curve's points (with their trace)
    stopped: str = ""  # why training stopped early ("" = it ran to the end)
    # training losses (label-smoothed cross-entropy): their sum ranks architectures like final accuracy
    # in some studies (Ru et al., "Speedy Performance Estimation", arXiv:2006.04492); recorded to check it here
    train_loss_mean: float | None = None  # over every step
    train_loss_late_mean: float | None = None  # over the second half of the steps


def step_recipe(budget: ProxyBudget, *, total_steps: int):
    from trainers.fused import StepRecipe

    return StepRecipe(
        optimizer=budget.optimizer,
        peak_lr=budget.peak_lr,
        warmup_steps=int(budget.warmup_fraction * total_steps),
        total_steps=total_steps,
        weight_decay=budget.weight_decay,
        label_smoothing=budget.label_smoothing,
    )


def make_optimizer(budget: ProxyBudget, *, total_steps: int):
    """The proxy recipe as a Keras optimizer (for comparisons with a plain `model.fit`)."""
    import keras

    from trainers.schedules import WarmupCosine

    schedule = WarmupCosine(peak=budget.peak_lr, warmup=int(budget.warmup_fraction * total_steps), total=total_steps)
    if budget.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(schedule)


#: points of training (fractions of all steps) where the learning curve is sampled
RUNGS = (0.25, 0.5)
#: held-out images for the curve's points: enough to rank, cheap enough to do twice per trial
RUNG_VAL_IMAGES = 500


def train_proxy(model, x_train, y_train, x_val, y_val, *, budget: ProxyBudget, num_classes: int, stop_rule=None) -> ProxyResult:
    """Train `model` in place for `budget` and return its held-out accuracy and timings.

    The learning curve is sampled at `RUNGS` on the first `RUNG_VAL_IMAGES` held-out images;
    `stop_rule(fraction, accuracy)` may end training there with a reason (multi-objective
    early stopping)."""
    import keras

    from trainers.fused import FusedStep, Predictor, batches

    keras.utils.set_random_seed(budget.seed)
    steps_per_epoch = len(x_train) // budget.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(x_train)} training images are fewer than one batch of {budget.batch_size}")
    total = steps_per_epoch * budget.epochs
    rungs = {max(1, round(f * total)): f for f in RUNGS if round(f * total) < total}
    step = FusedStep(model, step_recipe(budget, total_steps=total))
    predictor = Predictor(model)
    curve: list[tuple[float, float]] = []
    losses = []  # tensors: read once at the end, so no step waits for the previous one
    stopped, steps, first_step_seconds, first_epoch_seconds, curve_seconds = "", 0, 0.0, 0.0, 0.0
    start = time.perf_counter()
    for epoch in range(budget.epochs):
        order = np.random.default_rng([budget.seed, epoch]).permutation(len(x_train))
        data = batches(
            x_train[order], y_train[order], num_classes=num_classes, batch_size=budget.batch_size, seed=budget.seed, key=epoch
        )
        for images, labels in data:
            loss = step.run(images, labels)
            losses.append(loss)
            steps += 1
            if steps == 1:
                float(loss)  # waits for the step to finish
                first_step_seconds = time.perf_counter() - start
            if steps in rungs:
                curve_start = time.perf_counter()
                accuracy = predictor.accuracy(x_val[:RUNG_VAL_IMAGES], y_val[:RUNG_VAL_IMAGES])
                curve_seconds += time.perf_counter() - curve_start
                curve.append((rungs[steps], accuracy))
                stopped = (stop_rule(rungs[steps], accuracy) if stop_rule else None) or ""
                if stopped:
                    break
        loss = float(loss)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged (loss={loss})")
        first_epoch_seconds = first_epoch_seconds or time.perf_counter() - start
        if stopped:
            break
    train_seconds = time.perf_counter() - start
    eval_start = time.perf_counter()
    accuracy = curve[-1][1] if stopped else predictor.accuracy(x_val, y_val)
    eval_seconds = time.perf_counter() - eval_start
    # Steady throughput: every step but the first (which traces the graph), curve points left out.
    images_per_second = (steps - 1) * budget.batch_size / max(1e-9, train_seconds - first_step_seconds - curve_seconds)
    log.info("proxy training: accuracy %.3f in %.1f s (%.0f img/s)", accuracy, train_seconds, images_per_second)
    loss_values = np.array([float(v) for v in losses])
    return ProxyResult(
        accuracy=accuracy,
        train_seconds=train_seconds,
        first_epoch_seconds=first_epoch_seconds,
        first_step_seconds=first_step_seconds,
        eval_seconds=eval_seconds,
        steps=steps,
        images_per_second=images_per_second,
        curve=tuple(curve),
        curve_seconds=curve_seconds,
        stopped=stopped,
        train_loss_mean=float(loss_values.mean()),
        train_loss_late_mean=float(loss_values[len(loss_values) // 2 :].mean()),
    )
