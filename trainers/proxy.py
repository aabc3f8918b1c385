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


@dataclass(frozen=True)
class ProxyBudget:
    """How much training one trial gets; the defaults are chosen by measurement (see README)."""

    train_images: int = 8_000
    val_images: int = 2_000
    epochs: int = 1
    batch_size: int = 64
    peak_lr: float = 5e-3
    warmup_fraction: float = 0.15
    weight_decay: float = 0.0  # one or two epochs do not overfit; regularisation only slows the ranking
    label_smoothing: float = 0.1
    optimizer: str = "adam"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        for name in ("train_images", "val_images", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.peak_lr <= 0:
            raise ValueError(f"peak_lr={self.peak_lr} must be positive")


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


PAD = 4


def augment_batch(images, *, seed: int):
    """Flip + reflect-pad-and-crop, vectorised over a batch (one op each instead of a per-image
    map). `crop_and_resize` with integer boxes of the output size copies pixels exactly."""
    import tensorflow as tf

    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    flip = tf.random.uniform([batch], seed=seed) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT")
    offsets = tf.cast(tf.random.uniform([batch, 2], maxval=2 * PAD + 1, dtype=tf.int32, seed=seed + 1), tf.float32)
    span_h, span_w = float(height + 2 * PAD - 1), float(width + 2 * PAD - 1)
    top, left = offsets[:, 0], offsets[:, 1]
    boxes = tf.stack([top / span_h, left / span_w, (top + height - 1) / span_h, (left + width - 1) / span_w], axis=1)
    return tf.image.crop_and_resize(padded, boxes, tf.range(batch), [height, width], method="nearest")


def augment_pipeline(x: np.ndarray, y: np.ndarray, *, num_classes: int, batch_size: int, seed: int, training: bool):
    """uint8 images -> batched float32 images in [0, 255] and one-hot labels; flip + pad-crop."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size, drop_remainder=training)

    def prepare(images, labels):
        images = tf.cast(images, tf.float32)
        if training:
            images = augment_batch(images, seed=seed)
        return images, tf.one_hot(labels, num_classes)

    return data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


OPTIMIZERS = ("adam", "sgd")


def make_optimizer(budget: ProxyBudget, *, total_steps: int):
    """The proxy recipe as a Keras optimizer (for comparisons with a plain `model.fit`)."""
    import keras

    from trainers.schedules import WarmupCosine

    schedule = WarmupCosine(peak=budget.peak_lr, warmup=int(budget.warmup_fraction * total_steps), total=total_steps)
    if budget.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=budget.weight_decay)
    return keras.optimizers.AdamW(schedule, weight_decay=budget.weight_decay)


class FusedStep:
    """One compiled training step whose optimizer update is one fused kernel per variable
    (`ResourceApplyAdam` / `ResourceApplyKerasMomentum`).

    Why not `model.fit`: Keras' optimizers emit ~10 ops per variable through tf.distribute's
    per-variable update path; for a ~300-variable MnasNet, tracing and instantiating that graph
    took 22-34 s of a 60 s trial (measured, bench/trial_cost.py). Fused updates (and fused
    BatchNorm, see `proxy_model`) take ~1.7 s for the first step and run 2.8x faster per step.
    Same recipe: Adam or SGD+Nesterov, linear warm-up then cosine decay to zero, label smoothing,
    decoupled weight decay on kernels only."""

    def __init__(self, model, budget: ProxyBudget, *, total_steps: int):
        import keras
        import tensorflow as tf

        from trainers.schedules import WarmupCosine

        self.model = model
        self.variables = [v.value for v in model.trainable_variables]
        self.slots = [
            [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
            for _ in range(2 if budget.optimizer == "adam" else 1)
        ]
        self.decayed = [len(v.shape) > 1 for v in self.variables]  # kernels, not BatchNorm or biases
        self.step = tf.Variable(0.0, trainable=False)
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=budget.label_smoothing)
        # the same schedule object the Keras optimizer of `make_optimizer` uses
        schedule = WarmupCosine(peak=budget.peak_lr, warmup=int(budget.warmup_fraction * total_steps), total=total_steps)

        def train_step(images, labels):
            with tf.GradientTape() as tape:
                value = loss(labels, model(images, training=True))
            gradients = tape.gradient(value, self.variables)
            t = self.step + 1.0
            lr = schedule(self.step)
            # Every constant made once per step, not once per variable: a Python float passed
            # to a raw op becomes a new graph constant at each call.
            if budget.optimizer == "adam":
                beta1, beta2, epsilon = tf.constant(0.9), tf.constant(0.999), tf.constant(1e-7)
                beta1_power, beta2_power = tf.pow(beta1, t), tf.pow(beta2, t)
            else:
                momentum = tf.constant(0.9)
            for k, (variable, gradient) in enumerate(zip(self.variables, gradients, strict=True)):
                if budget.weight_decay and self.decayed[k]:
                    variable.assign_sub(lr * budget.weight_decay * variable)
                if budget.optimizer == "adam":
                    tf.raw_ops.ResourceApplyAdam(
                        var=variable.handle,
                        m=self.slots[0][k].handle,
                        v=self.slots[1][k].handle,
                        beta1_power=beta1_power,
                        beta2_power=beta2_power,
                        lr=lr,
                        beta1=beta1,
                        beta2=beta2,
                        epsilon=epsilon,
                        grad=gradient,
                    )
                else:
                    tf.raw_ops.ResourceApplyKerasMomentum(
                        var=variable.handle,
                        accum=self.slots[0][k].handle,
                        lr=lr,
                        grad=gradient,
                        momentum=momentum,
                        use_nesterov=True,
                    )
            self.step.assign_add(1.0)
            return value

        # No AutoGraph: the step has no tensor-dependent Python control flow, and converting it
        # costs ~0.4 s of tracing per trial.
        self.run = tf.function(train_step, autograph=False)


class Predictor:
    """Logits of a model in fixed-size batches through one traced function (a Keras predict
    function costs a trace of its own; a short last batch would cost another, so it is padded)."""

    def __init__(self, model, *, batch_size: int = 250):
        import tensorflow as tf

        self.batch_size = batch_size
        self.forward = tf.function(lambda images: model(images, training=False), autograph=False)

    def logits(self, x: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(x), self.batch_size):
            batch = x[i : i + self.batch_size].astype(np.float32)
            short = self.batch_size - len(batch)
            if short:
                batch = np.concatenate([batch, np.zeros((short, *batch.shape[1:]), np.float32)])
            out.append(np.asarray(self.forward(batch))[: self.batch_size - short])
        return np.concatenate(out)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(np.argmax(self.logits(x), axis=1) == y))


def evaluate(model, x: np.ndarray, y: np.ndarray, *, batch_size: int = 250) -> float:
    """Top-1 accuracy as a fraction."""
    return Predictor(model, batch_size=batch_size).accuracy(x, y)


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

    keras.utils.set_random_seed(budget.seed)
    steps_per_epoch = len(x_train) // budget.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(x_train)} training images are fewer than one batch of {budget.batch_size}")
    total = steps_per_epoch * budget.epochs
    data = augment_pipeline(
        x_train, y_train, num_classes=num_classes, batch_size=budget.batch_size, seed=budget.seed, training=True
    )
    rungs = {max(1, round(f * total)): f for f in RUNGS if round(f * total) < total}
    step = FusedStep(model, budget, total_steps=total)
    predictor = Predictor(model)
    curve: list[tuple[float, float]] = []
    stopped, steps, first_step_seconds, first_epoch_seconds, curve_seconds = "", 0, 0.0, 0.0, 0.0
    start = time.perf_counter()
    for _epoch in range(budget.epochs):
        for images, labels in data:
            loss = step.run(images, labels)
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
    )
