"""The LiteRT measurement protocol: batch 1, fixed threads, warm-up, repeated rounds.

MnasNet (arXiv:1807.11626) measured real latency on one big phone core; on the host we do the
same with `ai_edge_litert.interpreter.Interpreter` (tf.lite.Interpreter is deprecated):
`num_threads=1` by default, a warm-up, then `rounds` x `runs_per_round` timed invocations.
The reported latency is the median of all runs; the spread is the coefficient of variation of
the per-round medians (how stable the reported figure is), and the per-run CV is kept too.
A measurement whose spread exceeds `max_cv` is repeated, keeping the steadiest attempt.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class LatencyProtocol:
    threads: int = 1
    warmup_runs: int = 30
    rounds: int = 5
    runs_per_round: int = 40
    max_cv: float = 0.05
    max_attempts: int = 3

    def __post_init__(self) -> None:
        for name in ("threads", "rounds", "runs_per_round", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.warmup_runs < 0 or self.max_cv <= 0:
            raise ValueError(f"warmup_runs={self.warmup_runs} must be >= 0 and max_cv={self.max_cv} > 0")


@dataclass(frozen=True)
class LatencyResult:
    median_ms: float
    p90_ms: float
    cv: float  # coefficient of variation of the per-round medians
    run_cv: float  # coefficient of variation of single runs
    runs: int
    attempts: int  # measurements made (more than one: the spread was above max_cv)
    busy_cores: float | None = None  # cores other processes kept busy meanwhile (host only; None: not known)

    def as_attrs(self) -> dict:
        return {f"latency_{key}": value for key, value in asdict(self).items()}

    @classmethod
    def from_attrs(cls, attrs: dict) -> LatencyResult | None:
        """The inverse of `as_attrs`; None without a median. A figure an older version did not record is None."""
        if attrs.get("latency_median_ms") is None:
            return None
        return cls(**{name: attrs.get(f"latency_{name}") for name in cls.__dataclass_fields__})

    @classmethod
    def exact(cls, median_ms: float) -> LatencyResult:
        """A latency known exactly (a published table): no spread, no runs made here."""
        return cls(median_ms=median_ms, p90_ms=median_ms, cv=0.0, run_cv=0.0, runs=0, attempts=0)


#: busy cores of other processes above which a host timing is flagged as noisy: measured on a 2-core
#: machine, one training beside a 1-thread timing moved single rounds by 0.83-1.27x (bench/latency_under_load.py)
BUSY_CORES_WARNING = 0.25


#: a call more than this over the fastest of its repeats ran in one of the machine's slow spells
SLOW_SPELL_OVER_FAST = 1.1


def fast_state_ms(calls: Sequence[float]) -> float:
    """The latency of a file timed in several calls, outside the machine's slow spells: the median of the
    calls within SLOW_SPELL_OVER_FAST of the fastest. On the shared 2-core machines here about a third of
    the calls ran about 1.2x slower (1.05-1.6x), in spells that slowed every model timed at the time alike
    (bench/latency_modes.py); the median of all calls then depends on how many of one model's calls fell
    in a spell, and orders models within 20 % by luck."""
    if not calls:
        raise ValueError("no calls to take a latency from")
    return float(statistics.median(c for c, in_spell in zip(calls, in_slow_spell(calls), strict=True) if not in_spell))


def in_slow_spell(figures: Sequence[float]) -> list[bool]:
    """Which of repeated figures of one file ran in a slow spell: over SLOW_SPELL_OVER_FAST x the fastest."""
    fastest = min(figures)
    return [f > SLOW_SPELL_OVER_FAST * fastest for f in figures]


def busy_while(work: Callable[[], T], *, min_seconds: float = 0.5) -> tuple[T, float]:
    """`work()`'s answer, and how many cores other processes kept busy meanwhile: the machine's busy CPU
    time less this process's own, per second of wall time. Around a host timing (1 thread, in this
    process) it says whether the timing was quiet. CPU time is counted in 10 ms ticks, so a shorter
    `work` is followed by a wait up to `min_seconds` (a sub-millisecond model's timing takes ~0.1 s)."""
    import psutil

    def busy() -> float:
        times = psutil.cpu_times()
        return times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)

    own = psutil.Process(os.getpid())
    before, own_before, start = busy(), sum(own.cpu_times()[:2]), time.perf_counter()
    answer = work()
    time.sleep(max(0.0, min_seconds - (time.perf_counter() - start)))
    elapsed = time.perf_counter() - start
    return answer, max(0.0, (busy() - before - (sum(own.cpu_times()[:2]) - own_before)) / elapsed)


def measure_tflite(path: str, protocol: LatencyProtocol = LatencyProtocol()) -> LatencyResult:
    return measure_interpreter(ready_interpreter(path, protocol.threads), protocol)


def ready_interpreter(path: str, threads: int):
    """A LiteRT interpreter of `path`, its tensors allocated and a fixed random input set."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    sample = np.random.default_rng(0).uniform(0, 255, size=detail["shape"]).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], sample)
    return interpreter


def measure_interpreter(interpreter, protocol: LatencyProtocol = LatencyProtocol()) -> LatencyResult:
    """The protocol on a ready interpreter (tensors allocated, input set)."""
    best = None
    for attempt in range(1, protocol.max_attempts + 1):
        result = _one_attempt(interpreter, protocol, attempt)
        if best is None or result.cv < best.cv:
            best = result
        if result.cv <= protocol.max_cv:
            break
        log.info("latency spread %.1f %% above %.1f %%: measuring again", 100 * result.cv, 100 * protocol.max_cv)
    return dataclasses.replace(best, attempts=attempt)  # the steadiest, and how many were made


def _one_attempt(interpreter, protocol: LatencyProtocol, attempt: int) -> LatencyResult:
    for _ in range(protocol.warmup_runs):
        interpreter.invoke()
    samples = np.empty((protocol.rounds, protocol.runs_per_round))
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed run is noise, not model latency
    try:
        for r in range(protocol.rounds):
            for i in range(protocol.runs_per_round):
                start = time.perf_counter_ns()
                interpreter.invoke()
                samples[r, i] = (time.perf_counter_ns() - start) / 1e6
    finally:
        if gc_was_enabled:
            gc.enable()
    round_medians = np.median(samples, axis=1)
    return LatencyResult(
        median_ms=float(np.median(samples)),
        p90_ms=float(np.percentile(samples, 90)),
        cv=float(np.std(round_medians) / np.mean(round_medians)),
        run_cv=float(np.std(samples) / np.mean(samples)),
        runs=int(samples.size),
        attempts=attempt,
    )
