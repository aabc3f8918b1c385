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
    images_per_second: float  # steady-state training throughput (epochs after the first)
    epoch_accuracies: tuple[float, ...] = ()


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
    """The proxy optimizer with its warm-up + cosine schedule."""
    import keras

    from trainers.schedules import WarmupCosine

    schedule = WarmupCosine(peak=budget.peak_lr, warmup=int(budget.warmup_fraction * total_steps), total=total_steps)
    if budget.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=budget.weight_decay)
    return keras.optimizers.AdamW(schedule, weight_decay=budget.weight_decay)


def evaluate(model, x: np.ndarray, y: np.ndarray, *, batch_size: int = 256) -> float:
    """Top-1 accuracy as a fraction."""
    logits = model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


class _FirstStepTimer:
    """Keras callback: seconds from the start of training to the end of its first batch."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            first_step_seconds = 0.0

            def on_train_begin(self, logs=None):
                self._start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                if batch == 0 and not self.first_step_seconds:
                    self.first_step_seconds = time.perf_counter() - self._start

        return Timer()


def train_proxy(model, x_train, y_train, x_val, y_val, *, budget: ProxyBudget, num_classes: int) -> ProxyResult:
    """Train `model` in place for `budget` and return its held-out accuracy and timings."""
    import keras

    keras.utils.set_random_seed(budget.seed)
    steps_per_epoch = len(x_train) // budget.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(x_train)} training images are fewer than one batch of {budget.batch_size}")
    total = steps_per_epoch * budget.epochs
    model.compile(
        optimizer=make_optimizer(budget, total_steps=total),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=budget.label_smoothing),
    )
    data = augment_pipeline(
        x_train, y_train, num_classes=num_classes, batch_size=budget.batch_size, seed=budget.seed, training=True
    )
    epoch_seconds: list[float] = []
    timer = _FirstStepTimer()
    start = time.perf_counter()
    for epoch in range(budget.epochs):
        epoch_start = time.perf_counter()
        history = model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[timer] if epoch == 0 else [])
        epoch_seconds.append(time.perf_counter() - epoch_start)
        loss = history.history["loss"][-1]
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged (loss={loss})")
    train_seconds = time.perf_counter() - start
    eval_start = time.perf_counter()
    accuracy = evaluate(model, x_val, y_val)
    eval_seconds = time.perf_counter() - eval_start
    # Steady throughput: every step but the first (which traces the graph).
    images_per_second = (total - 1) * budget.batch_size / max(1e-9, train_seconds - timer.first_step_seconds)
    log.info("proxy training: accuracy %.3f in %.1f s (%.0f img/s)", accuracy, train_seconds, images_per_second)
    return ProxyResult(
        accuracy=accuracy,
        train_seconds=train_seconds,
        first_epoch_seconds=epoch_seconds[0],
        first_step_seconds=timer.first_step_seconds,
        eval_seconds=eval_seconds,
        steps=total,
        images_per_second=images_per_second,
    )
