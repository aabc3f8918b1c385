"""Full retraining of a chosen architecture from scratch: the recipe after the search.

SGD with Nesterov momentum (or RMSProp, as in MnasNet, arXiv:1807.11626; or Adam), linear
warm-up then cosine decay to zero, label smoothing, L2 weight decay on conv/dense kernels only
(not BatchNorm, not biases), flip + pad-and-crop augmentation and cutout (DeVries & Taylor,
arXiv:1708.04552), optionally an exponential moving average of the weights. A validation split
carved from the training set selects the best epoch; the test split is evaluated once, at the end.

It runs on the same fused training step as the proxy trials (`trainers.fused`): measured side by
side on full CIFAR-10 it is several times faster per epoch than `model.fit` (bench/retrain_speed.py).

Resumable: after every epoch one checkpoint file holds the weights, the optimizer's state, the
weight average, the best epoch's weights and the run's state, written atomically, so it is either
complete or absent. Shuffling is a function of (seed, epoch) and augmentation of (seed, epoch,
batch), so a run resumed at epoch k sees exactly the data an uninterrupted run would have seen;
with `deterministic=True` it also computes bit for bit the same (slower kernels).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from search_spaces.files import atomic_path, locked, read_json, write_text_atomic

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.npz"
RESULT = "result.json"
MODEL = "model.keras"
TRAINING_LOCK = "training.lock"


def _knob(default, help: str, **flag):
    """A recipe field with its command-line flag (read by nas.flags)."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass(frozen=True)
class Recipe:
    """Every knob of a retraining. Defaults chosen by measurement (README, "The retraining recipe")."""

    epochs: int = _knob(100, "epochs")
    minutes: float | None = _knob(
        None,
        "instead of --epochs, as many epochs as fit in this much training time on this machine (chosen from the "
        "median epoch over the run's first tenth, the first epoch left out, and shortened later if the run would "
        "overrun; the count chosen is recorded)",
        default_text="off",
    )
    batch_size: int = _knob(128, "batch size")
    optimizer: str = _knob("sgd", "sgd (Nesterov), rmsprop (MnasNet's) or adam")
    lr: float = _knob(0.1, "peak learning rate")
    warmup_epochs: float | None = _knob(
        None, "linear warm-up before the cosine decay", default_text="2, or a tenth of a shorter run"
    )
    weight_decay: float = _knob(5e-4, "L2 on conv and dense kernels only, not BatchNorm or biases")
    label_smoothing: float = _knob(0.1, "label smoothing")
    cutout: int = _knob(16, "side of the erased square in pixels, 0 = off")
    dropout: float = _knob(0.2, "dropout before the classifier")
    ema_decay: float = _knob(0.999, "per-step weight averaging, 0 = off")
    ema_bn_batches: int = _knob(32, "training batches that re-estimate BatchNorm's statistics for the averaged weights")
    val_images: int = _knob(
        5_000,
        "validation images carved from the training set; 0 = train on every image and ship the last epoch's raw weights "
        "(no best epoch or weight set to choose: the test split is never used for a choice)",
    )
    train_images: int | None = _knob(None, "use only this many training images", default_text="every one not held out")
    seed: int = _knob(0, "seed")
    deterministic: bool = _knob(False, "bit-exact kernels: a resumed run equals an uninterrupted one (slower)")

    def __post_init__(self) -> None:
        for f in fields(self):  # 115 and 115.0 minutes are one recipe, with one id (the command line gives floats)
            value = getattr(self, f.name)
            if f.type in ("float", "float | None") and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
        for name in ("epochs", "batch_size", "ema_bn_batches"):
            _at_least(name, getattr(self, name), 1)
        _at_least("val_images", self.val_images, 0)
        if self.train_images is not None:
            _at_least("train_images", self.train_images, self.batch_size)
        if self.optimizer not in ("sgd", "rmsprop", "adam"):
            raise ValueError(f"optimizer={self.optimizer!r} is not one of sgd, rmsprop, adam")
        _in_range("lr", self.lr, low=0.0, high=10.0, low_open=True)
        _in_range("weight_decay", self.weight_decay, low=0.0, high=0.1)
        _in_range("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        _in_range("dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        _in_range("ema_decay", self.ema_decay, low=0.0, high=1.0, high_open=True)
        if not isinstance(self.cutout, int) or not 0 <= self.cutout <= 32:
            raise ValueError(f"cutout={self.cutout!r} must be a side in pixels, 0..32 (0 = off)")
        if self.minutes is not None:
            _in_range("minutes", self.minutes, low=0.0, high=100_000.0, low_open=True)
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup-epochs={self.warmup_epochs:g} must be >= 0 and less than epochs={self.epochs}")
        timed_warmup = self.warmup_epochs if self.minutes is not None else None
        if timed_warmup is not None and not TIMED_AFTER_EPOCH <= timed_warmup < MIN_TIMED_EPOCHS:
            # the length is chosen inside the warm-up
            raise ValueError(
                f"warmup-epochs={self.warmup_epochs:g} must lie in [{TIMED_AFTER_EPOCH}, {MIN_TIMED_EPOCHS}) with --minutes"
            )

    @property
    def warmup(self) -> float:
        """Epochs of linear warm-up. A timed run (`minutes`) learns its length only after its second epoch, the
        last of a warm-up of fixed length, so its schedule so far does not depend on the length."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return 2.0 if self.minutes is not None else min(2.0, self.epochs / 10)

    def fitting_epochs(self, done: int, spent_seconds: float, epoch_seconds: float) -> int:
        """How many epochs a timed run trains, `done` of them in `spent_seconds`: those, and as many more of
        `epoch_seconds` as fit in the rest of `minutes`; at least MIN_TIMED_EPOCHS (past the warm-up)."""
        left = max(0.0, self.minutes * 60 - spent_seconds)
        return max(MIN_TIMED_EPOCHS, done + int(left // epoch_seconds))

    def timed_length(self, history: Sequence[dict], spent_seconds: float, chosen: int | None) -> int | None:
        """A timed run's length after the epochs of `history` (`spent_seconds` in all), or None where it stays
        `chosen`: chosen at the warm-up's end and again after each epoch of the run's first tenth, from the
        median epoch since the warm-up's last, while the cosine has barely begun to decay (there a 5 % longer
        run changes the learning rate by under 0.3 %): one fast or slow epoch does not decide the budget.
        Later it only shortens, when the median of the last RECENT_EPOCHS says the rest would overrun the
        minutes (MobileNetV2-0.5's epochs went from 60 s to 65 s after the first tenth, and its 115 minutes
        took 121): the budget is a limit; one epoch fewer moves the learning rate by at most 0.7 % of its peak in
        a 116-epoch run."""
        done = len(history)
        if self.minutes is None or done < TIMED_AFTER_EPOCH:
            return None
        early = chosen is None or done * 10 <= chosen
        window = history[TIMED_AFTER_EPOCH - 1 :] if early else history[-RECENT_EPOCHS:]
        fitted = self.fitting_epochs(done, spent_seconds, float(np.median([r["seconds"] for r in window])))
        return fitted if early or fitted < chosen else None

    @property
    def recipe_id(self) -> str:
        """A short hash of the recipe's record: retrained models are reused only under the same recipe."""
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:8]

    def record(self) -> dict:
        """The recipe as checkpoints, results and ids hold it: every field, but a field added since models were
        kept only when set, so that an older recipe keeps its id, checkpoints and models."""
        return {k: v for k, v in asdict(self).items() if not (k in ADDED_FIELDS and v is None)}

    def describe(self) -> str:
        ema = f", EMA {self.ema_decay:g}" if self.ema_decay and self.validated else ""
        shipped = "" if self.validated else ", every training image (no validation: the last epoch's raw weights ship)"
        length = f"as many epochs as fit in {self.minutes:g} minutes" if self.minutes is not None else f"{self.epochs} epochs"
        return (
            f"{length}, batch {self.batch_size}, {self.optimizer} lr {self.lr:g} (warm-up {self.warmup:g} epochs, "
            f"cosine), L2 {self.weight_decay:g}, label smoothing {self.label_smoothing:g}, cutout {self.cutout}, "
            f"dropout {self.dropout:g}{ema}{shipped}"
        )

    @property
    def validated(self) -> bool:
        """Whether a validation split chooses the best epoch and weight set (`val_images` > 0)."""
        return self.val_images > 0


RECIPE_FIELDS = tuple(f.name for f in fields(Recipe))
#: fields added after recipes had ids: left out of the id while unset (None)
ADDED_FIELDS = ("minutes",)
#: a timed run trains at least this many epochs, whatever its minutes: its warm-up's two, and one to decay
MIN_TIMED_EPOCHS = 3
#: a timed run chooses its length after this epoch, the warm-up's last, from the epochs since it: the first also
#: traces the graphs (94 s against 77-82 s for the next ones, MobileNetV2-0.5 on 2026-12-06), so timing it left
#: 17 % of a 115-minute budget unused; the second alone was 6 % fast (trial 19: 47 s, then 49-51 s), which would
#: have overrun 2 hours
TIMED_AFTER_EPOCH = 2
#: a timed run past its first tenth judges whether it still fits from its last this many epochs
RECENT_EPOCHS = 10


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _at_least(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{_flag(name)}={value!r} must be an integer >= {low}")


def _in_range(name: str, value, *, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{_flag(name)}={value!r} must lie in {interval}")


@dataclass(frozen=True)
class RetrainResult:
    arch: str
    dataset: str
    recipe: dict
    epochs_run: int
    best_epoch: int
    val_accuracy: float | None  # of the delivered weights, at the best epoch (None: a recipe without validation)
    val_accuracy_flip: float | None  # the same weights with flip test-time augmentation (information only: twice the latency)
    test_accuracy: float
    train_seconds: float
    images_per_second: float  # median training throughput over the epochs
    history: tuple[dict, ...]
    model_path: str
    best_weights: str = "raw"  # which weights were delivered: "raw" or "average" (the better at the best epoch)


def bn_momentum_for(total_steps: int) -> float:
    """BatchNorm's moving averages must settle within the run: horizon ~ a tenth of the steps."""
    return float(min(0.99, max(0.5, 1.0 - 10.0 / total_steps)))


def average_decay(recipe: Recipe, total_steps: int) -> float:
    """The weight average's per-step decay: like BatchNorm's statistics, the average must settle
    within the run (horizon <= a tenth of the steps), so a short run averages over less; never
    below 0 (a run of 10 steps or fewer simply delivers its last weights as the "average")."""
    return min(recipe.ema_decay, max(0.0, 1.0 - 10.0 / total_steps))


def _seed_states(model) -> dict[str, np.ndarray]:
    """Dropout's seed-generator states (not among the weights): without them a resumed run would
    drop other units than an uninterrupted one."""
    return {
        f"rng_{layer.name}": np.asarray(layer.seed_generator.state.value)
        for layer in model.layers
        if getattr(layer, "seed_generator", None) is not None
    }


def _restore_seed_states(model, arrays) -> None:
    for layer in model.layers:
        if getattr(layer, "seed_generator", None) is not None and f"rng_{layer.name}" in arrays:
            layer.seed_generator.state.assign(arrays[f"rng_{layer.name}"])


def _weights(model) -> list[np.ndarray]:
    return [w.numpy() for w in model.weights]


def _set_weights(model, values) -> None:
    for w, v in zip(model.weights, values, strict=True):
        w.assign(v)


def save_checkpoint(path: str, *, state: dict, arrays: dict[str, np.ndarray]) -> None:
    """Weights, optimizer state and run state in one file, replaced atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, state=np.frombuffer(json.dumps(state).encode(), dtype=np.uint8), **arrays)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getvalue())


def load_checkpoint(path: str) -> tuple[dict, dict[str, np.ndarray]] | None:
    if not os.path.exists(path):
        return None
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return json.loads(arrays.pop("state").tobytes().decode()), arrays


def split(dataset, recipe: Recipe):
    """(x_train, y_train, x_val, y_val) of a recipe: the validation images are carved from the
    training set with the recipe's seed, the rest (or `train_images` of it) trains; without validation
    every image trains (in the seed's order, so `train_images` takes a random subset) and the validation
    arrays are empty."""
    from trainers.cifar import train_val_split

    train_idx, val_idx = train_val_split(dataset, val_size=recipe.val_images, seed=recipe.seed)
    if recipe.train_images:
        train_idx = train_idx[: recipe.train_images]
    return dataset.x_train[train_idx], dataset.y_train[train_idx], dataset.x_train[val_idx], dataset.y_train[val_idx]


def epoch_batches(x_train, y_train, order, recipe: Recipe, num_classes: int, epoch: int):
    """Epoch `epoch`'s training batches, augmented as `recipe` says: the images of `order`, in that order."""
    from trainers.fused import batches

    return batches(
        x_train[order],
        y_train[order],
        num_classes=num_classes,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        key=epoch,
        cutout=recipe.cutout,
    )


def retrain(
    spec,
    dataset,
    *,
    recipe: Recipe,
    workdir: str,
    on_epoch: Callable[[int, int | None, dict], None] | None = None,
) -> RetrainResult:
    """Train `spec` on `dataset` with `recipe` in `workdir`, resuming from its checkpoint if any.
    One process trains in a folder at a time (two would write one checkpoint): a second one gets
    `Busy` at once."""
    os.makedirs(workdir, exist_ok=True)
    busy = f"{workdir} is being trained by another process; wait for it to finish (its result is then reused)"
    with locked(os.path.join(workdir, TRAINING_LOCK), busy=busy):
        return _train(spec, dataset, recipe=recipe, workdir=workdir, on_epoch=on_epoch)


def _train(spec, dataset, *, recipe: Recipe, workdir: str, on_epoch) -> RetrainResult:
    import keras
    import tensorflow as tf

    from search_spaces.keras_blocks import build, with_keras_batchnorm
    from trainers.fused import FusedStep, Predictor, StepRecipe, WeightAverage

    if recipe.deterministic:
        tf.config.experimental.enable_op_determinism()
    x_train, y_train, x_val, y_val = split(dataset, recipe)
    steps_per_epoch = len(x_train) // recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(x_train)} training images are fewer than one batch of {recipe.batch_size}")
    checkpoint_path = os.path.join(workdir, CHECKPOINT)
    loaded = load_checkpoint(checkpoint_path)
    # the run's length: the recipe's, or a timed run's, chosen after its warm-up and kept in the checkpoint (until
    # then the warm-up's schedule does not depend on it);
    # BatchNorm's momentum and the average's decay are set as for --epochs either way (both at their caps for
    # any run of some length), so a resumed timed run computes what an uninterrupted one does
    epochs = recipe.epochs
    if recipe.minutes is not None:
        epochs = loaded[0].get("epochs", MIN_TIMED_EPOCHS) if loaded else MIN_TIMED_EPOCHS
    planned_steps = steps_per_epoch * recipe.epochs
    identity = {"arch": spec.to_string(), "recipe": recipe.record(), "dataset": dataset.name}
    build_args = {
        "input_shape": dataset.x_train.shape[1:],
        "num_classes": dataset.num_classes,
        "bn_momentum": bn_momentum_for(planned_steps),
        "dropout": recipe.dropout,
    }
    keras.utils.set_random_seed(recipe.seed)
    model = build(spec, **build_args, fused_bn=True)

    def fused_step(epochs: int) -> FusedStep:
        return FusedStep(
            model,
            StepRecipe(
                optimizer=recipe.optimizer,
                peak_lr=recipe.lr,
                warmup_steps=round(recipe.warmup * steps_per_epoch),
                total_steps=steps_per_epoch * epochs,
                weight_decay=recipe.weight_decay,
                label_smoothing=recipe.label_smoothing,
            ),
        )

    step = fused_step(epochs)
    # the average is a second weight set to choose from: without validation nothing chooses it
    average = WeightAverage(model, decay=average_decay(recipe, planned_steps)) if recipe.ema_decay and recipe.validated else None
    predictor = Predictor(model)

    best_weights = None
    if loaded:
        state, arrays = loaded
        if {k: state.get(k) for k in identity} != identity:
            raise ValueError(f"{workdir} holds a run of another architecture, recipe or dataset; choose another --out")
        _set_weights(model, [arrays[f"w_{k}"] for k in range(len(model.weights))])
        best_weights = [arrays[f"best_{k}"] for k in range(len(model.weights))]
        step.load_state_arrays(arrays)
        if average:
            average.load_arrays(arrays)
        _restore_seed_states(model, arrays)
        log.info("resuming %s after epoch %d", spec.arch_id, state["epochs_done"])
    else:
        state = {
            **identity,
            "epochs_done": 0,
            "history": [],
            "best_epoch": 0,
            "best_val_accuracy": -1.0,
            "best_weights": "raw",
            "train_seconds": 0.0,
        }

    while state["epochs_done"] < epochs:
        epoch = state["epochs_done"]
        start = time.perf_counter()
        order = np.random.default_rng([recipe.seed, epoch]).permutation(len(x_train))
        data = epoch_batches(x_train, y_train, order, recipe, dataset.num_classes, epoch)
        losses = []
        for images, labels in data:
            losses.append(step.run(images, labels))
            if average:
                average.update(epoch * steps_per_epoch + len(losses))
        loss = float(np.mean([float(v) for v in losses]))
        train_seconds = time.perf_counter() - start
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss={loss}); try a lower --lr")
        record = {"epoch": epoch + 1, "loss": loss, "lr_end": float(step.schedule(step.step - 1.0))}
        if not recipe.validated:
            # the last epoch ships, its raw weights: at a cosine schedule's end they score as the average does
            # (MobileNetV2-0.5 0.9046 vs 0.9054, trial 19 0.8936 vs 0.8940 after 100 epochs; bench/data/bn_reestimation.json)
            state["best_epoch"], best_weights = epoch + 1, _weights(model)
        else:
            # the best epoch is chosen over both weight sets: early on the raw weights are ahead
            record["val_accuracy_raw"] = predictor.accuracy(x_val, y_val)
            record["val_accuracy"], record["weights"] = record["val_accuracy_raw"], "raw"
            if record["val_accuracy"] > state["best_val_accuracy"]:
                state["best_epoch"], state["best_val_accuracy"], state["best_weights"] = epoch + 1, record["val_accuracy"], "raw"
                best_weights = _weights(model)
            if average:
                # BatchNorm's statistics for the averages, from the first batches this epoch trained on, augmented
                # as they were: without cutout they describe other inputs than training normalised (measured at the
                # end of a 100-epoch run: 1.1 points lower, for the raw weights too; bench/data/bn_reestimation.json)
                head = order[: recipe.ema_bn_batches * recipe.batch_size]
                bn_data = epoch_batches(x_train, y_train, head, recipe, dataset.num_classes, epoch)
                with average.applied(images for images, _ in bn_data):
                    record["val_accuracy_ema"] = predictor.accuracy(x_val, y_val)
                    if record["val_accuracy_ema"] > record["val_accuracy"]:
                        record["val_accuracy"], record["weights"] = record["val_accuracy_ema"], "average"
                    if record["val_accuracy_ema"] > state["best_val_accuracy"]:
                        state["best_epoch"], state["best_val_accuracy"] = epoch + 1, record["val_accuracy_ema"]
                        state["best_weights"] = "average"
                        best_weights = _weights(model)  # the averages with their own statistics
        record |= {
            "seconds": time.perf_counter() - start,
            "train_seconds": train_seconds,
            "images_per_second": steps_per_epoch * recipe.batch_size / train_seconds,
        }
        state["history"].append(record)
        state["epochs_done"] = epoch + 1
        state["train_seconds"] += record["seconds"]
        fitted = recipe.timed_length(state["history"], state["train_seconds"], state.get("epochs"))
        if fitted not in (None, state.get("epochs")):
            # timed: the schedule's decay is rebuilt for the new length, the optimizer's state carried over
            state["epochs"] = epochs = fitted
            optimizer_state = step.state_arrays()
            step = fused_step(epochs)
            step.load_state_arrays(optimizer_state)
            done, spent = len(state["history"]), state["train_seconds"]
            log.info("after %d epochs (%.0f s): %d epochs fit in %g minutes", done, spent, epochs, recipe.minutes)
        arrays = {f"w_{k}": v for k, v in enumerate(_weights(model))}
        arrays |= {f"best_{k}": v for k, v in enumerate(best_weights)}
        arrays |= step.state_arrays() | _seed_states(model) | (average.arrays() if average else {})
        save_checkpoint(checkpoint_path, state=state, arrays=arrays)
        if on_epoch:  # a timed run's length is None until chosen
            on_epoch(epoch, None if recipe.minutes is not None and "epochs" not in state else epochs, record)

    _set_weights(model, best_weights)
    val_accuracy_flip = predictor.accuracy(x_val, y_val, flip=True) if recipe.validated else None
    delivered = with_keras_batchnorm(model, spec, **build_args)  # what ships loads with Keras alone
    test_accuracy = Predictor(delivered).accuracy(dataset.x_test, dataset.y_test)  # once, at the end
    model_path = os.path.join(workdir, MODEL)
    with atomic_path(model_path, suffix=".keras") as tmp:
        delivered.save(tmp)
    throughput = [r["images_per_second"] for r in state["history"]]
    result = RetrainResult(
        arch=spec.to_string(),
        dataset=dataset.name,
        recipe=recipe.record(),
        epochs_run=state["epochs_done"],
        best_epoch=state["best_epoch"],
        val_accuracy=state["best_val_accuracy"] if recipe.validated else None,
        val_accuracy_flip=val_accuracy_flip,
        test_accuracy=test_accuracy,
        train_seconds=state["train_seconds"],
        images_per_second=float(np.median(throughput)),
        history=tuple(state["history"]),
        model_path=model_path,
        best_weights=state["best_weights"],
    )
    write_text_atomic(os.path.join(workdir, RESULT), json.dumps(asdict(result), indent=1))
    return result


def load_result(workdir: str) -> RetrainResult | None:
    """The finished retraining in `workdir`, or None."""
    document = read_json(os.path.join(workdir, RESULT), None)
    if document is None:
        return None
    document["history"] = tuple(document["history"])
    return RetrainResult(**document)
