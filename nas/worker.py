"""Evaluate one architecture in a worker process: build, time on LiteRT, short-train.

Why a separate process: TensorFlow/Keras keep ~80 MB per trained model alive even after
`clear_session()` (measured on these machines), so a long search in one process runs out of memory.
`TrialRunner` keeps one worker that is replaced every `trials_per_worker` trials (amortising the
~3 s TensorFlow import), and a worker that dies (OOM kill, converter crash) costs one failed trial,
not the search. The parent never imports TensorFlow.
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import trainers  # noqa: F401  (TensorFlow's settings, before a job imports it: see trainers/__init__.py)
from latency.measure import LatencyResult
from search_spaces.errors import error_line
from search_spaces.files import WORKER_LOG  # noqa: F401  (re-exported: the workers' stderr, in the run's directory)

log = logging.getLogger(__name__)
# Set before TensorFlow is imported in the worker: keeps its C++ start-up chatter out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class TrialJob:
    """A proxy training (no latency: the parent measured it first); plain values, so it crosses
    the process boundary."""

    arch: str
    dataset: str
    data_dir: str | None
    train_images: int
    val_images: int
    epochs: int
    batch_size: int
    seed: int
    latency_ms: float | None = None  # the measured latency, for the early-stopping rule
    early_stop_peers: tuple | None = None  # None: early stopping off; else nas.early_stop.peers(study)

    @classmethod
    def from_config(cls, config, *, arch: str, **overrides) -> TrialJob:
        """The job a `SearchConfig` asks for: one mapping for the search, proxy-check and the benchmarks."""
        fields = {
            "dataset": config.dataset,
            "data_dir": config.data_dir,
            "train_images": config.train_images,
            "val_images": config.val_images,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "seed": config.seed,
        }
        return cls(arch=arch, **(fields | overrides))


@dataclass(frozen=True)
class MeasureJob:
    """Latency only (no data, no training): build, convert (checked against Keras), measure on the
    device, count multiply-adds."""

    arch: str
    input_hw: int
    num_classes: int
    device: object  # a latency.devices device: plain values, picklable
    tflite_path: str


class Status(enum.Enum):
    OK = "ok"
    EARLY_STOPPED = "early_stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """What a job returns: its status (with the reason when not OK) and what it measured."""

    status: Status
    reason: str = ""
    params_count: int | None = None
    multiply_adds: int | None = None
    accuracy: float | None = None
    latency: LatencyResult | None = None
    timings: dict = field(default_factory=dict)
    curve: tuple = ()  # ((fraction of training, held-out accuracy), ...)
    train_loss_mean: float | None = None  # proxy training's mean loss, and over its second half
    train_loss_late_mean: float | None = None


# ---------------------------------------------------------------------------------------------
# Inside the worker process

_DATA_CACHE: dict = {}


def _data(job: TrialJob):
    """The dataset and split, loaded once per worker process."""
    from trainers.cifar import load_cifar, train_val_split

    key = (job.dataset, job.data_dir, job.val_images)
    if key not in _DATA_CACHE:
        dataset = load_cifar(job.dataset, data_dir=job.data_dir)
        train_idx, val_idx = train_val_split(dataset, val_size=job.val_images)
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = (dataset, train_idx, val_idx)
    return _DATA_CACHE[key]


def die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the search process dies, even by SIGKILL, instead of
    training on as an orphan."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits when its task queue closes


def _quiet() -> None:
    """Silence warnings that are expected here: one new model per trial retraces by design."""
    import warnings

    warnings.filterwarnings("ignore", module="keras")
    import absl.logging
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    absl.logging.set_verbosity(absl.logging.ERROR)  # the converter's advice on trackable_obj, every trial


def measure_job(job: MeasureJob) -> Outcome:
    """Runs in the worker: build, convert, measure, count multiply-adds."""
    timings: dict = {}
    try:
        _quiet()
        import keras
        import numpy as np

        from latency.convert import untrained_tflite
        from latency.devices import DeviceError
        from latency.macs import tflite_macs
        from search_spaces import ArchSpec
        from search_spaces.keras_blocks import build

        keras.backend.clear_session(free_memory=False)  # the previous job's `_clear_keras` collected
        start = time.perf_counter()
        input_shape = (job.input_hw, job.input_hw, 3)
        spec = ArchSpec.from_string(job.arch)

        def build_model():
            began = time.perf_counter()
            model = build(spec, input_shape=input_shape, num_classes=job.num_classes)
            timings["build_seconds"] = timings.get("build_seconds", 0.0) + time.perf_counter() - began
            return model

        # int8 calibration only sets scales; latency does not depend on them, nor on the weights
        images = np.random.default_rng(0).uniform(0, 255, size=(32, *input_shape)).astype("float32")
        model = untrained_tflite(
            build_model,
            job.tflite_path,
            input_shape=input_shape,
            precision=job.device.precision,
            representative=images if job.device.precision == "int8" else None,
        )
        timings["convert_seconds"] = time.perf_counter() - start - timings["build_seconds"]
        start = time.perf_counter()
        try:
            latency = job.device.measure(job.tflite_path)
        except DeviceError as error:
            return Outcome(Status.FAILED, reason=f"device error: {error}"[:500], timings=timings)
        timings["measure_seconds"] = time.perf_counter() - start
        return Outcome(
            Status.OK,
            params_count=int(model.count_params()),
            multiply_adds=tflite_macs(job.tflite_path),
            latency=latency,
            timings=timings,
        )
    except Exception as error:
        return _failed(error, timings)
    finally:
        _clear_keras()


def _failed(error: Exception, timings: dict) -> Outcome:
    log.debug("job failed:\n%s", traceback.format_exc())
    return Outcome(Status.FAILED, reason=error_line(error, typed=True)[:500], timings=timings)


def _clear_keras() -> None:
    try:
        import keras

        keras.backend.clear_session()
    except Exception:
        pass


def train_job(job: TrialJob) -> Outcome:
    """Runs in the worker: build and proxy-train. Expected failures come back with a reason."""
    timings: dict = {}
    try:
        _quiet()
        import keras

        from search_spaces import ArchSpec
        from trainers.proxy import ProxyBudget, proxy_model, train_proxy

        keras.backend.clear_session(free_memory=False)  # the previous job's `_clear_keras` collected
        keras.utils.set_random_seed(job.seed)  # before building: initial weights depend on it
        spec = ArchSpec.from_string(job.arch)
        dataset, train_idx, val_idx = _data(job)
        budget = ProxyBudget(
            train_images=min(job.train_images, len(train_idx)),
            val_images=job.val_images,
            epochs=job.epochs,
            batch_size=job.batch_size,
            seed=job.seed,
        )
        start = time.perf_counter()
        model = proxy_model(spec, input_shape=dataset.x_train.shape[1:], num_classes=dataset.num_classes)
        timings["build_seconds"] = time.perf_counter() - start
        x_train, y_train = dataset.x_train[train_idx[: budget.train_images]], dataset.y_train[train_idx[: budget.train_images]]
        x_val, y_val = dataset.x_train[val_idx], dataset.y_train[val_idx]
        rule = None
        if job.early_stop_peers is not None and job.latency_ms is not None:
            from nas.early_stop import dominance_rule
            from trainers.proxy import RUNG_VAL_IMAGES, RUNGS

            images = min(RUNG_VAL_IMAGES, len(x_val))
            rule = dominance_rule(job.early_stop_peers, job.latency_ms, images=images, rungs=len(RUNGS))
        proxy = train_proxy(model, x_train, y_train, x_val, y_val, budget=budget, num_classes=dataset.num_classes, stop_rule=rule)
        timings |= {
            "train_seconds": proxy.train_seconds,
            "first_epoch_seconds": proxy.first_epoch_seconds,
            "first_step_seconds": proxy.first_step_seconds,
            "curve_seconds": proxy.curve_seconds,
            "eval_seconds": proxy.eval_seconds,
            "train_images_per_second": proxy.images_per_second,
            "train_steps": proxy.steps,
        }
        return Outcome(
            Status.EARLY_STOPPED if proxy.stopped else Status.OK,
            reason=proxy.stopped,
            params_count=int(model.count_params()),
            accuracy=proxy.accuracy,
            timings=timings,
            curve=tuple(proxy.curve),
            train_loss_mean=proxy.train_loss_mean,
            train_loss_late_mean=proxy.train_loss_late_mean,
        )
    except Exception as error:  # the trial fails, the search goes on
        return _failed(error, timings)
    finally:
        _clear_keras()


# ---------------------------------------------------------------------------------------------
# In the parent


def _start_worker(log_path: str | None) -> None:
    die_with_parent()
    if log_path:
        # TensorFlow's and LiteRT's C++ chatter goes to a log, not over the search's progress lines;
        # a trial's failure still reaches the user as its reason.
        try:
            os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            return  # an unwritable log is no reason to lose the trial: keep stderr
        os.dup2(fd, 2)
        os.close(fd)


class TrialRunner:
    """Runs jobs one at a time in a worker process that is replaced after `trials_per_worker`
    trainings (what leaks memory; latency measurements do not count). With `log_path`, the worker's
    stderr is appended there."""

    def __init__(self, *, trials_per_worker: int = 8, log_path: str | None = None):
        self.trials_per_worker = trials_per_worker
        self.log_path = log_path
        self._pool: ProcessPoolExecutor | None = None
        self._trained = 0  # trainings the current worker ran

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.log_path,),
            )
            self._trained = 0
        return self._pool

    @property
    def worker_pid(self) -> int | None:
        """The current worker's process id (None before the first job or after a replacement)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return next(iter(processes), None)

    def run(self, job: TrialJob | MeasureJob, *, timeout_s: float | None = None) -> Outcome:
        """The job's outcome; a worker that dies or exceeds `timeout_s` is replaced and the job fails."""
        task = measure_job if isinstance(job, MeasureJob) else train_job
        try:
            outcome = self._executor().submit(task, job).result(timeout=timeout_s)
            if task is train_job:
                self._trained += 1
                if self._trained >= self.trials_per_worker:
                    self.close()  # the next job starts a fresh worker
            return outcome
        except FutureTimeout:
            self.close(kill=True)
            return Outcome(Status.FAILED, reason=f"timed out after {timeout_s:g} s: the worker was stopped")
        except BrokenProcessPool:
            self.close(kill=True)
            return Outcome(Status.FAILED, reason="the worker process died (out of memory or a crash in TensorFlow/LiteRT)")

    def close(self, *, kill: bool = False) -> None:
        if self._pool is None:
            return
        if kill:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
        self._pool.shutdown(wait=not kill, cancel_futures=True)
        self._pool = None

    def __enter__(self) -> TrialRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close(kill=exc[0] is not None)
