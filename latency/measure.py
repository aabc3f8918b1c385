"""The LiteRT measurement protocol: batch 1, fixed threads, warm-up, repeated rounds spread in time.

MnasNet (arXiv:1807.11626) measured real latency on one big phone core; on the host we do the
same with `ai_edge_litert.interpreter.Interpreter` (tf.lite.Interpreter is deprecated):
`num_threads=1` by default, a warm-up, then `rounds` x `runs_per_round` timed invocations, the
rounds `round_gap_s` apart. The machines here fall into slow spells (about a third of the time,
1.05-1.6x slower, lasting seconds: bench/latency_modes.py); rounds spread over a few seconds
sample both states, and a round over SLOW_SPELL_OVER_FAST x the fastest round ran in a spell and
is set aside (counted in `spell_rounds`). The reported latency is the median of the kept rounds'
runs; the spread is the coefficient of variation of the kept rounds' medians (how stable the
reported figure is), and the per-run CV is kept too. A measurement whose spread exceeds `max_cv`,
or with most of its rounds in a spell, measures another set of rounds, up to `max_attempts` sets,
and reports all rounds measured together.
"""

from __future__ import annotations

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


#: the longest pause between rounds: longer ones only make a measurement slow
MAX_ROUND_GAP_S = 10.0
#: untimed runs after each pause between rounds, so caches and clocks are warm again
REWARM_RUNS = 5


@dataclass(frozen=True)
class LatencyProtocol:
    threads: int = 1
    warmup_runs: int = 30
    rounds: int = 5
    runs_per_round: int = 40
    max_cv: float = 0.05
    max_attempts: int = 3
    round_gap_s: float = 0.5  # pause between rounds, so that they sample the machine at different moments

    def __post_init__(self) -> None:
        for name in ("threads", "rounds", "runs_per_round", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.warmup_runs < 0 or self.max_cv <= 0:
            raise ValueError(f"warmup_runs={self.warmup_runs} must be >= 0 and max_cv={self.max_cv} > 0")
        if not 0 <= self.round_gap_s <= MAX_ROUND_GAP_S:
            raise ValueError(f"round_gap_s={self.round_gap_s} must be in [0, {MAX_ROUND_GAP_S}] seconds")


@dataclass(frozen=True)
class LatencyResult:
    median_ms: float
    p90_ms: float
    cv: float  # coefficient of variation of the per-round medians
    run_cv: float  # coefficient of variation of single runs
    runs: int  # timed runs, kept or not
    attempts: int  # sets of rounds measured (more than one: the spread was above max_cv, or most rounds in a spell)
    busy_cores: float | None = None  # cores other processes kept busy meanwhile (host only; None: not known)
    spell_rounds: int | None = None  # rounds set aside as run in a slow spell (None: not known, older records)

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
    rounds: list[np.ndarray] = []
    for attempt in range(1, protocol.max_attempts + 1):
        rounds += _timed_rounds(interpreter, protocol)
        result = summarize_rounds(rounds, attempts=attempt)
        in_spell_mostly = 2 * result.spell_rounds > len(rounds)
        if result.cv <= protocol.max_cv and not in_spell_mostly:
            break
        if attempt < protocol.max_attempts:
            log.info(
                "latency spread %.1f %% (limit %.1f %%), %d of %d rounds in a slow spell: measuring more rounds",
                100 * result.cv,
                100 * protocol.max_cv,
                result.spell_rounds,
                len(rounds),
            )
    return result


def summarize_rounds(rounds: Sequence[np.ndarray], *, attempts: int = 1) -> LatencyResult:
    """The latency of rounds of timed runs (ms): the median of the runs of the rounds outside a slow spell
    (within SLOW_SPELL_OVER_FAST of the fastest round's median), their 90th percentile and spreads."""
    medians = [float(np.median(r)) for r in rounds]
    spelled = in_slow_spell(medians)
    kept = [r for r, in_spell in zip(rounds, spelled, strict=True) if not in_spell]
    kept_medians = np.array([m for m, in_spell in zip(medians, spelled, strict=True) if not in_spell])
    samples = np.concatenate(kept)
    return LatencyResult(
        median_ms=float(np.median(samples)),
        p90_ms=float(np.percentile(samples, 90)),
        cv=float(np.std(kept_medians) / np.mean(kept_medians)),
        run_cv=float(np.std(samples) / np.mean(samples)),
        runs=int(sum(r.size for r in rounds)),
        attempts=attempts,
        spell_rounds=sum(spelled),
    )


def _timed_rounds(interpreter, protocol: LatencyProtocol) -> list[np.ndarray]:
    """A warm-up, then `protocol.rounds` rounds of timed runs (ms) `protocol.round_gap_s` apart."""
    for _ in range(protocol.warmup_runs):
        interpreter.invoke()
    rounds = []
    for r in range(protocol.rounds):
        if r and protocol.round_gap_s:
            time.sleep(protocol.round_gap_s)
            for _ in range(min(REWARM_RUNS, protocol.warmup_runs)):
                interpreter.invoke()
        samples = np.empty(protocol.runs_per_round)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a collection inside a timed run is noise, not model latency
        try:
            for i in range(protocol.runs_per_round):
                start = time.perf_counter_ns()
                interpreter.invoke()
                samples[i] = (time.perf_counter_ns() - start) / 1e6
        finally:
            if gc_was_enabled:
                gc.enable()
        rounds.append(samples)
    return rounds
