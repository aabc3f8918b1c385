"""The training core shared by proxy trials and full retraining: a fused, traced training step,
stateless batch augmentation, weight averaging and batched evaluation.

Why not `model.fit`: Keras' optimizers emit ~10 ops per variable through tf.distribute's
per-variable update path; for a ~300-variable MnasNet, tracing and instantiating that graph took
22-34 s of a 60 s proxy trial (bench/trial_cost.py), and each step ran 2.8x slower than one whose
update is a single fused kernel per variable (`ResourceApplyKerasMomentum`, `ResourceApplyAdam`,
`ResourceApplyRMSProp`). With fused BatchNorm (`search_spaces.keras_blocks.FusedBatchNormalization`)
the graph is small enough to trace in ~1.5 s.

Augmentation is a pure function of (seed, batch key): a retraining resumed at epoch k sees exactly
the images an uninterrupted run saw (shuffling is a function of (seed, epoch), see
`trainers.full`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from search_spaces.keras_blocks import CIFAR_MEAN

OPTIMIZERS = ("sgd", "adam", "rmsprop")
PAD = 4
#: batches augmented at once, ahead of the training step
PIPELINE_THREADS = 2


@dataclass(frozen=True)
class StepRecipe:
    """What one training step does: optimizer, peak learning rate with its warm-up/cosine schedule,
    L2 weight decay on kernels (conv and dense, not BatchNorm or biases) and label smoothing."""

    optimizer: str
    peak_lr: float
    warmup_steps: int
    total_steps: int
    weight_decay: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")


def augment_batch(images, *, seed, cutout: int = 0):
    """Flip + reflect-pad-and-crop (+ cutout of a `cutout` x `cutout` square filled with the mean
    pixel), vectorised over a batch of float images in [0, 255]. `seed` is a stateless seed (a
    shape-[2] int tensor): the same seed gives the same augmentation, wherever the run resumed.
    `crop_and_resize` with integer boxes of the output size copies pixels exactly."""
    import tensorflow as tf

    seed = tf.cast(seed, tf.int64)
    batch, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    flip = tf.random.stateless_uniform([batch], seed=seed) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed=seed + tf.constant([0, 1], tf.int64), maxval=2 * PAD + 1, dtype=tf.int32
    )
    offsets = tf.cast(offsets, tf.float32)
    span_h, span_w = float(height + 2 * PAD - 1), float(width + 2 * PAD - 1)
    top, left = offsets[:, 0], offsets[:, 1]
    boxes = tf.stack([top / span_h, left / span_w, (top + height - 1) / span_h, (left + width - 1) / span_w], axis=1)
    images = tf.image.crop_and_resize(padded, boxes, tf.range(batch), [height, width], method="nearest")
    if cutout:
        # the square's top-left corner may lie off the image (as in DeVries & Taylor): partial squares at the edges
        corner = tf.random.stateless_uniform(
            [batch, 2], seed=seed + tf.constant([0, 2], tf.int64), minval=-cutout + 1, maxval=height, dtype=tf.int32
        )
        rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
        in_rows = (rows >= corner[:, :1]) & (rows < corner[:, :1] + cutout)  # [batch, height]
        in_cols = (cols >= corner[:, 1:]) & (cols < corner[:, 1:] + cutout)  # [batch, width]
        inside = in_rows[:, :, None, None] & in_cols[:, None, :, None]
        images = tf.where(inside, tf.constant(CIFAR_MEAN, tf.float32), images)
    return images


def batches(x: np.ndarray, y: np.ndarray, *, num_classes: int, batch_size: int, seed: int, key: int, cutout: int = 0):
    """uint8 images in the given order -> augmented float batches and one-hot labels. Batch b is
    augmented with the stateless seed (seed * 1000003 + key, b): `key` separates epochs."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).enumerate()

    def prepare(index, pair):
        images, labels = pair
        stateless_seed = tf.stack([tf.constant(seed * 1_000_003 + key, tf.int64), index])
        images = augment_batch(tf.cast(images, tf.float32), seed=stateless_seed, cutout=cutout)
        return images, tf.one_hot(labels, num_classes)

    # Fixed parallelism, no autotuning: tf.data's autotuning thread sleeps up to a minute between rounds and, in
    # this TensorFlow, is not woken when its iterator goes away, so the end of an epoch waited for it, 0-41 s
    # (every few epochs of a 100-epoch retraining, 35 s idle; bench/data_pipeline.py measures both)
    options = tf.data.Options()
    options.autotune.enabled = False
    return data.map(prepare, num_parallel_calls=PIPELINE_THREADS).prefetch(2).with_options(options)


class FusedStep:
    """One compiled training step whose optimizer update is one fused kernel per variable.

    The optimizer's state lives in `slots` (plain variables) and `step`, so a checkpoint is just
    their values (`state_arrays` / `load_state_arrays`)."""

    def __init__(self, model, recipe: StepRecipe):
        import keras
        import tensorflow as tf

        from trainers.schedules import WarmupCosine

        self.model = model
        self.recipe = recipe
        self.variables = [v.value for v in model.trainable_variables]
        slot_count = {"sgd": 1, "adam": 2, "rmsprop": 2}[recipe.optimizer]
        self.slots = [[tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables] for _ in range(slot_count)]
        self.decayed = [len(v.shape) > 1 for v in self.variables]  # kernels, not BatchNorm or biases
        self.step = tf.Variable(0.0, trainable=False)
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing)
        schedule = WarmupCosine(peak=recipe.peak_lr, warmup=recipe.warmup_steps, total=recipe.total_steps)
        self.schedule = schedule

        def train_step(images, labels):
            with tf.GradientTape() as tape:
                value = loss(labels, model(images, training=True))
            gradients = tape.gradient(value, self.variables)
            t = self.step + 1.0
            lr = schedule(self.step)
            # Every constant made once per step, not once per variable: a Python float passed
            # to a raw op becomes a new graph constant at each call.
            beta1, beta2, epsilon = tf.constant(0.9), tf.constant(0.999), tf.constant(1e-7)
            momentum, rho, rms_epsilon = tf.constant(0.9), tf.constant(0.9), tf.constant(1e-3)
            decay = tf.constant(recipe.weight_decay)
            if recipe.optimizer == "adam":
                beta1_power, beta2_power = tf.pow(beta1, t), tf.pow(beta2, t)
            for k, (variable, gradient) in enumerate(zip(self.variables, gradients, strict=True)):
                if recipe.weight_decay and self.decayed[k]:
                    gradient = gradient + decay * variable  # L2, as the classic CIFAR recipes apply it
                if recipe.optimizer == "adam":
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
                elif recipe.optimizer == "rmsprop":
                    tf.raw_ops.ResourceApplyRMSProp(
                        var=variable.handle,
                        ms=self.slots[0][k].handle,
                        mom=self.slots[1][k].handle,
                        lr=lr,
                        rho=rho,
                        momentum=momentum,
                        epsilon=rms_epsilon,
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

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"step": np.asarray(self.step.numpy())}
        for s, slots in enumerate(self.slots):
            arrays |= {f"slot{s}_{k}": v.numpy() for k, v in enumerate(slots)}
        return arrays

    def load_state_arrays(self, arrays) -> None:
        self.step.assign(arrays["step"])
        for s, slots in enumerate(self.slots):
            for k, v in enumerate(slots):
                v.assign(arrays[f"slot{s}_{k}"])


class BatchNormEstimator:
    """BatchNorm moving statistics measured afresh for a model's current weights: the mean, over
    some training batches, of each BatchNorm layer's batch mean and (Bessel-corrected) variance,
    the network run in training mode so that every layer sees inputs normalised as in training
    (PyTorch's `swa_utils.update_bn` does the same). No gradient step, no weight changes but the
    statistics."""

    def __init__(self, model):
        import keras
        import tensorflow as tf

        self.layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        probe = keras.Model(model.inputs, [layer.input for layer in self.layers]) if self.layers else None

        def moments(images):
            stats = []
            for x in probe(images, training=True):
                mean, variance = tf.nn.moments(x, axes=list(range(len(x.shape) - 1)))
                n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), variance.dtype)
                stats.append((mean, variance * n / (n - 1.0)))
            return stats

        self._moments = tf.function(moments, autograph=False)

    def statistics(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in self.layers]

    def assign(self, statistics) -> None:
        for layer, (mean, variance) in zip(self.layers, statistics, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)

    def reestimate(self, image_batches) -> int:
        """Set every layer's statistics from `image_batches` (float images); the batches used."""
        totals, count = None, 0
        for images in image_batches:
            stats = [(m.numpy(), v.numpy()) for m, v in self._moments(images)]
            totals = stats if totals is None else [(tm + m, tv + v) for (tm, tv), (m, v) in zip(totals, stats, strict=True)]
            count += 1
        if count and self.layers:
            self.assign([(m / count, v / count) for m, v in totals])
        return count


class WeightAverage:
    """An exponential moving average of the trainable weights, updated every `every` steps with
    decay**every, which keeps the horizon while costing 1/every of the updates. Polyak & Juditsky
    (1992); as in the MnasNet/EfficientNet training code.

    BatchNorm's moving statistics are not averaged: averaged along with the kernels, they do not
    describe the averaged kernels (measured: MobileNetV2-0.5 scored 0.246 with them against 0.614
    for the raw weights at epoch 10 of 100). `applied` re-estimates them for the averages."""

    def __init__(self, model, *, decay: float, every: int = 4):
        import tensorflow as tf

        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay={decay!r} must lie in [0, 1)")
        self.model = model
        self.every = every
        self.weights = [w.value for w in model.trainable_weights]
        self.shadow = [tf.Variable(w, trainable=False) for w in self.weights]
        self.batchnorm = BatchNormEstimator(model)
        factor = tf.constant(1.0 - decay**every)

        def update():
            for w, s in zip(self.weights, self.shadow, strict=True):
                s.assign_sub(factor * (s - w))

        self._update = tf.function(update, autograph=False)

    def update(self, step: int) -> None:
        if step % self.every == 0:
            self._update()

    def _swap(self) -> None:
        for w, s in zip(self.weights, self.shadow, strict=True):
            current = w.numpy()
            w.assign(s)
            s.assign(current)

    @contextmanager
    def applied(self, image_batches):
        """The model holds the averaged weights, with BatchNorm statistics re-estimated on
        `image_batches`, inside the block; its own weights and statistics again after it."""
        raw_statistics = self.batchnorm.statistics()
        self._swap()
        try:
            self.batchnorm.reestimate(image_batches)
            yield
        finally:
            self._swap()
            self.batchnorm.assign(raw_statistics)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"ema_{k}": s.numpy() for k, s in enumerate(self.shadow)}

    def load_arrays(self, arrays) -> None:
        for k, s in enumerate(self.shadow):
            s.assign(arrays[f"ema_{k}"])


class Predictor:
    """Logits of a model in fixed-size batches through one traced function (a Keras predict
    function costs a trace of its own; a short last batch would cost another, so it is padded).
    `flip=True` averages the logits of each image and its mirror image (test-time augmentation)."""

    def __init__(self, model, *, batch_size: int = 250):
        import tensorflow as tf

        self.batch_size = batch_size
        self.forward = tf.function(lambda images: model(images, training=False), autograph=False)

    def logits(self, x: np.ndarray, *, flip: bool = False) -> np.ndarray:
        out = []
        for i in range(0, len(x), self.batch_size):
            batch = x[i : i + self.batch_size].astype(np.float32)
            short = self.batch_size - len(batch)
            if short:
                batch = np.concatenate([batch, np.zeros((short, *batch.shape[1:]), np.float32)])
            logits = np.asarray(self.forward(batch))
            if flip:
                logits = logits + np.asarray(self.forward(np.ascontiguousarray(batch[:, :, ::-1])))
            out.append(logits[: self.batch_size - short])
        return np.concatenate(out)

    def accuracy(self, x: np.ndarray, y: np.ndarray, *, flip: bool = False) -> float:
        return float(np.mean(np.argmax(self.logits(x, flip=flip), axis=1) == y))
