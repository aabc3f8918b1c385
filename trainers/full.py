"""Full retraining of a chosen architecture from scratch: the recipe after the search.

SGD with Nesterov momentum (or RMSProp, as in MnasNet, arXiv:1807.11626), linear warm-up then
cosine decay, label smoothing, weight decay on conv/dense kernels only (not BatchNorm, not biases),
pad-and-crop + flip augmentation, optional cutout (DeVries & Taylor, arXiv:1708.04552). A
validation split carved from the training set selects the best epoch; the test split is evaluated
once, at the end.

Resumable: after every epoch the model and optimizer state are checkpointed (atomically) with the
epoch count. Augmentation and shuffling are stateless functions of (seed, epoch, image index), so
a run resumed from epoch k sees exactly the data an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.keras"
STATE = "state.json"
BEST_WEIGHTS = "best.weights.h5"


@dataclass(frozen=True)
class Recipe:
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (Nesterov) or "rmsprop"
    lr: float = 0.1
    warmup_epochs: int = 2
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    cutout: int = 0  # side of the erased square in pixels; 0 = off
    dropout: float = 0.2
    val_images: int = 5_000
    train_images: int | None = None  # None: every training image not held out
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"optimizer={self.optimizer!r} is not one of sgd, rmsprop")
        for name in ("epochs", "batch_size", "val_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')}={getattr(self, name)} must be at least 1")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"lr={self.lr} must be > 0, weight-decay={self.weight_decay} >= 0, label-smoothing in [0, 1)")
        if not 0 <= self.warmup_epochs < self.epochs + 1 or self.cutout < 0 or not 0 <= self.dropout < 1:
            raise ValueError(
                f"warmup-epochs={self.warmup_epochs}, cutout={self.cutout} or dropout={self.dropout} is out of range"
            )


@dataclass(frozen=True)
class RetrainResult:
    arch: str
    epochs_run: int
    best_epoch: int
    val_accuracy: float
    test_accuracy: float
    train_seconds: float
    history: tuple[dict, ...]
    model_path: str


def training_pipeline(x: np.ndarray, y: np.ndarray, *, num_classes: int, recipe: Recipe, epoch: int):
    """One epoch's batches: shuffled and augmented as a pure function of (seed, epoch, index)."""
    import tensorflow as tf

    order = np.random.default_rng([recipe.seed, epoch]).permutation(len(x))
    steps = len(x) // recipe.batch_size
    order = order[: steps * recipe.batch_size]
    data = tf.data.Dataset.from_tensor_slices((x[order], y[order], np.arange(len(order))))

    def augment(image, label, index):
        seed = tf.stack([tf.cast(recipe.seed * 100_003 + epoch, tf.int64), tf.cast(index, tf.int64)])
        image = tf.cast(image, tf.float32)
        image = tf.image.stateless_random_flip_left_right(image, seed)
        image = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(image, tf.shape(image) - [8, 8, 0], seed + 1)
        if recipe.cutout:
            centre = tf.random.stateless_uniform([2], seed + 2, maxval=32, dtype=tf.int32)
            rows, cols = tf.range(32)[:, None], tf.range(32)[None, :]
            half = recipe.cutout // 2
            inside = (tf.abs(rows - centre[0]) <= half) & (tf.abs(cols - centre[1]) <= half)
            image = image * tf.cast(~inside, tf.float32)[:, :, None]
        return image, tf.one_hot(label, num_classes)

    return data.map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(recipe.batch_size).prefetch(tf.data.AUTOTUNE)


def make_optimizer(recipe: Recipe, *, steps_per_epoch: int):
    import keras

    from trainers.schedules import WarmupCosine

    total = steps_per_epoch * recipe.epochs
    schedule = WarmupCosine(peak=recipe.lr, warmup=recipe.warmup_epochs * steps_per_epoch, total=total)
    if recipe.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(schedule, rho=0.9, momentum=0.9, epsilon=1e-3, weight_decay=recipe.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay)
    return decay_kernels_only(optimizer)


def decay_kernels_only(optimizer):
    """BatchNorm scales/offsets and biases are not regularised. Not part of the optimizer's saved
    config: re-applied after a checkpoint is loaded."""
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias", "moving_mean", "moving_variance"])
    return optimizer


def bn_momentum_for(total_steps: int) -> float:
    """BatchNorm's moving averages must settle within the run: horizon ~ a tenth of the steps."""
    return float(min(0.99, max(0.5, 1.0 - 10.0 / total_steps)))


def random_states(model) -> dict[str, list[int]]:
    """Dropout's seed-generator states: `.keras` files do not keep them, and without them a resumed
    run would drop other units than an uninterrupted one."""
    return {
        layer.name: np.asarray(layer.seed_generator.state.value).tolist()
        for layer in model.layers
        if getattr(layer, "seed_generator", None) is not None
    }


def restore_random_states(model, states: dict[str, list[int]]) -> None:
    for name, value in states.items():
        generator = model.get_layer(name).seed_generator
        generator.state.assign(np.asarray(value, dtype=generator.state.dtype))


def _save_atomically(model, workdir: str, state: dict) -> None:
    tmp = os.path.join(workdir, "checkpoint.tmp.keras")
    model.save(tmp)
    os.replace(tmp, os.path.join(workdir, CHECKPOINT))
    tmp_state = os.path.join(workdir, STATE + ".tmp")
    with open(tmp_state, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp_state, os.path.join(workdir, STATE))  # the state names the checkpoint's epoch: written last


def retrain(
    spec,
    dataset,
    *,
    recipe: Recipe,
    workdir: str,
    on_epoch: Callable[[int, int, dict], None] | None = None,
) -> RetrainResult:
    """Train `spec` on `dataset` with `recipe` in `workdir`, resuming from its checkpoint if any."""
    import keras

    # Deterministic kernels: without them two runs with one seed already differ after an epoch
    # (multithreaded reductions), and "resumed == uninterrupted" could not hold.
    import tensorflow as tf

    import trainers.schedules  # noqa: F401  (registers the schedule a checkpoint's optimizer refers to)
    from search_spaces.keras_blocks import FusedBatchNormalization, build, with_keras_batchnorm
    from trainers.cifar import train_val_split
    from trainers.proxy import evaluate

    tf.config.experimental.enable_op_determinism()
    os.makedirs(workdir, exist_ok=True)
    train_idx, val_idx = train_val_split(dataset, val_size=recipe.val_images, seed=recipe.seed)
    if recipe.train_images:
        train_idx = train_idx[: recipe.train_images]
    x_train, y_train = dataset.x_train[train_idx], dataset.y_train[train_idx]
    x_val, y_val = dataset.x_train[val_idx], dataset.y_train[val_idx]
    steps_per_epoch = len(x_train) // recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(x_train)} training images are fewer than one batch of {recipe.batch_size}")
    identity = {"arch": spec.to_string(), "recipe": asdict(recipe), "dataset": dataset.name}

    state_path = os.path.join(workdir, STATE)
    state = None
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
        if {k: state.get(k) for k in identity} != identity:
            raise ValueError(f"{workdir} holds a run of another architecture or recipe; choose another --out")
    build_args = {
        "input_shape": dataset.x_train.shape[1:],
        "num_classes": dataset.num_classes,
        "bn_momentum": bn_momentum_for(steps_per_epoch * recipe.epochs),
        "dropout": recipe.dropout,
    }
    keras.utils.set_random_seed(recipe.seed)
    if state and os.path.exists(os.path.join(workdir, CHECKPOINT)):
        model = keras.models.load_model(os.path.join(workdir, CHECKPOINT))
        restore_random_states(model, state.get("random_states", {}))
        decay_kernels_only(model.optimizer)
        log.info("resuming %s after epoch %d", spec.arch_id, state["epochs_done"])
    else:
        state = {**identity, "epochs_done": 0, "history": [], "best_epoch": 0, "best_val_accuracy": -1.0, "train_seconds": 0.0}
        model = build(spec, **build_args, fused_bn=True)
        model.compile(
            optimizer=make_optimizer(recipe, steps_per_epoch=steps_per_epoch),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing),
        )

    for epoch in range(state["epochs_done"], recipe.epochs):
        start = time.perf_counter()
        data = training_pipeline(x_train, y_train, num_classes=dataset.num_classes, recipe=recipe, epoch=epoch)
        history = model.fit(data, epochs=1, verbose=0, shuffle=False)
        loss = float(history.history["loss"][-1])
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss={loss}); try a lower --lr")
        val_accuracy = evaluate(model, x_val, y_val)
        record = {"epoch": epoch + 1, "loss": loss, "val_accuracy": val_accuracy, "seconds": time.perf_counter() - start}
        state["history"].append(record)
        state["epochs_done"] = epoch + 1
        state["train_seconds"] += record["seconds"]
        if val_accuracy > state["best_val_accuracy"]:
            state["best_epoch"], state["best_val_accuracy"] = epoch + 1, val_accuracy
            model.save_weights(os.path.join(workdir, "best.tmp.weights.h5"))
            os.replace(os.path.join(workdir, "best.tmp.weights.h5"), os.path.join(workdir, BEST_WEIGHTS))
        state["random_states"] = random_states(model)
        _save_atomically(model, workdir, state)
        if on_epoch:
            on_epoch(epoch, recipe.epochs, record)

    model.load_weights(os.path.join(workdir, BEST_WEIGHTS))
    if any(isinstance(layer, FusedBatchNormalization) for layer in model.layers):
        model = with_keras_batchnorm(model, spec, **build_args)  # what ships loads with Keras alone
    test_accuracy = evaluate(model, dataset.x_test, dataset.y_test)  # once, at the end
    model_path = os.path.join(workdir, "model.keras")
    model.save(model_path)
    result = RetrainResult(
        arch=spec.to_string(),
        epochs_run=state["epochs_done"],
        best_epoch=state["best_epoch"],
        val_accuracy=state["best_val_accuracy"],
        test_accuracy=test_accuracy,
        train_seconds=state["train_seconds"],
        history=tuple(state["history"]),
        model_path=model_path,
    )
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(asdict(result), f, indent=1)
    return result
