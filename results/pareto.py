"""Reading a study: per-trial rows, the accuracy/latency Pareto front and the best MnasNet reward.

Compute, then render: `pareto_info(study)` returns plain values; the table, the CSV and the
reports read that value and never touch Optuna themselves.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace

from results.dominance import non_dominated
from results.formatting import number
from results.record import StudySettings, TrialRecord
from results.reward import Reward
from search_spaces.files import write_text_atomic


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    arch: str
    arch_id: str
    accuracy: float | None
    latency_ms: float | None
    latency_p90_ms: float | None
    latency_cv: float | None
    params_count: int | None
    reward: float | None
    trial_seconds: float | None
    seeded_from: str
    reason: str
    params: dict = field(default_factory=dict, compare=False, repr=False)
    reused_from: int | None = None  # an identical earlier trial: the same point, never listed twice on a front
    latency_busy_cores: float | None = None  # cores other processes kept busy while it was timed
    latency_spell_rounds: int | None = None  # rounds of its timing set aside, run in a slow spell of the machine

    @property
    def measured(self) -> bool:
        return self.state == "COMPLETE" and self.accuracy is not None and self.latency_ms is not None


def trial_row(trial) -> TrialRow:
    record = TrialRecord.from_trial(trial)
    return TrialRow(
        number=trial.number,
        state=trial.state.name,
        arch=record.arch,
        arch_id=record.arch_id,
        accuracy=record.accuracy,
        latency_ms=record.latency_ms,
        latency_p90_ms=record.latency.p90_ms if record.latency else None,
        latency_cv=record.latency.cv if record.latency else None,
        params_count=record.params_count,
        reward=record.reward,
        trial_seconds=record.trial_seconds,
        seeded_from=record.seeded_from,
        reason=record.fail_reason,
        params=dict(trial.params),
        reused_from=record.reused_from,
        latency_busy_cores=record.latency.busy_cores if record.latency else None,
        latency_spell_rounds=record.latency.spell_rounds if record.latency else None,
    )


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Non-dominated measured trials, sorted by latency; each architecture once (its earliest trial),
    while distinct architectures that tie are all kept."""
    measured, seen = [], set()
    for row in sorted((r for r in rows if r.measured), key=lambda r: r.number):
        if row.arch_id not in seen or not row.arch_id:
            seen.add(row.arch_id)
            measured.append(row)
    return non_dominated(measured, lambda r: (r.latency_ms, r.accuracy))


def hypervolume(rows: list[TrialRow], *, reference: tuple[float, float]) -> float:
    """Area dominated by the measured rows (accuracy up, latency down) and bounded by
    `reference` = (accuracy, latency_ms)."""
    return hypervolume_of([(r.latency_ms, r.accuracy) for r in rows if r.measured], reference=reference)


def hypervolume_of(points: list[tuple[float, float]], *, reference: tuple[float, float]) -> float:
    """Area dominated by (latency, accuracy) points inside `reference` = (accuracy, latency):
    an exact sweep in latency order."""
    ref_accuracy, ref_latency = reference
    points = sorted((lat, acc) for lat, acc in points if lat < ref_latency and acc > ref_accuracy)
    if not points:
        return 0.0  # nothing measured inside the reference box (yet)
    area, best = 0.0, ref_accuracy
    for (latency, accuracy), following in zip(points, [*points[1:], (ref_latency, 0.0)], strict=True):
        best = max(best, accuracy)
        area += (following[0] - latency) * (best - ref_accuracy)
    return area


def hypervolume_reference(rows: list[TrialRow]) -> tuple[float, float]:
    """Accuracy 0 and 1.1 x the slowest measured latency: fixed for the whole history."""
    latencies = [r.latency_ms for r in rows if r.measured]
    return (0.0, 1.1 * max(latencies)) if latencies else (0.0, 1.0)


def hypervolume_history(rows: list[TrialRow], *, reference: tuple[float, float]) -> list[tuple[int, float]]:
    """(trial number, hypervolume of every trial up to it) after each finished trial."""
    history, seen = [], []
    for row in sorted(rows, key=lambda r: r.number):
        seen.append(row)
        if row.measured:
            history.append((row.number, hypervolume(seen, reference=reference)))
    return history


def choice_frequencies(rows: list[TrialRow], front: list[TrialRow]) -> dict[str, dict]:
    """For each searched parameter, the share of each value among the front and among all
    measured trials: {"b3_op": {"mbconv6": (front_share, all_share), ...}, ...}."""
    measured = [r for r in rows if r.measured and r.reused_from is None]  # each evaluated architecture once
    result: dict[str, dict] = {}
    for name in sorted({name for r in measured for name in r.params}, key=_param_order):
        everywhere = Counter(r.params[name] for r in measured if name in r.params)
        on_front = Counter(r.params[name] for r in front if name in r.params)
        total, front_total = sum(everywhere.values()), max(1, sum(on_front.values()))
        result[name] = {
            value: (on_front[value] / front_total, count / total) for value, count in sorted(everywhere.items(), key=str)
        }
    return result


def _param_order(name: str):
    block, _, kind = name.partition("_")
    return (int(block[1:]) if block[1:].isdigit() else 0, kind)


@dataclass(frozen=True)
class ParetoInfo:
    study_name: str
    rows: tuple[TrialRow, ...]
    front: tuple[TrialRow, ...]
    best_reward: TrialRow | None
    settings: StudySettings
    hypervolume_reference: tuple[float, float] = (0.0, 1.0)
    hypervolume_history: tuple[tuple[int, float], ...] = ()
    choice_frequencies: dict = field(default_factory=dict)

    @property
    def counts(self) -> dict:
        """Trials by state, each evaluated architecture once: re-proposals answered from the study are `reused`."""
        counts: dict = {}
        for row in self.rows:
            if row.reused_from is None:
                counts[row.state] = counts.get(row.state, 0) + 1
        return counts

    @property
    def reused(self) -> int:
        return sum(row.reused_from is not None for row in self.rows)


def with_reward(row: TrialRow, reward: Reward | None) -> TrialRow:
    """The row's MnasNet reward under the study's current target and exponents."""
    if not row.measured or reward is None:
        return row
    return replace(row, reward=reward.of(row.accuracy, row.latency_ms))


def pareto_info(study) -> ParetoInfo:
    settings = StudySettings.of(study)
    rows = trial_rows(study, settings)
    front = pareto_front(rows)
    rewarded = [r for r in rows if r.measured and r.reward is not None]
    best = max(rewarded, key=lambda r: (r.reward, -r.number)) if rewarded else None
    reference = hypervolume_reference(rows)
    return ParetoInfo(
        study_name=study.study_name,
        rows=tuple(rows),
        front=tuple(front),
        best_reward=best,
        settings=settings,
        hypervolume_reference=reference,
        hypervolume_history=tuple(hypervolume_history(rows, reference=reference)),
        choice_frequencies=choice_frequencies(rows, front),
    )


# ---------------------------------------------------------------------------------------------
# Rendering


def format_front(info: ParetoInfo, *, max_arch: int = 70) -> str:
    """The front as a fixed-width table sorted by latency; `*` marks the best reward."""
    if not info.front:
        return "no completed trials yet: the Pareto front is empty"
    header = f"{'':1} {'trial':>5} {'acc':>6} {'lat ms':>7} {'p90 ms':>7} {'params':>8} {'reward':>7}  arch"
    lines = [header, "-" * len(header)]
    best = info.best_reward.number if info.best_reward else None
    for row in info.front:
        arch = row.arch if len(row.arch) <= max_arch else row.arch[: max_arch - 3] + "..."
        lines.append(
            f"{'*' if row.number == best else ' ':1} {row.number:>5} {number(row.accuracy, '.3f'):>6} "
            f"{number(row.latency_ms, '.3f'):>7} {number(row.latency_p90_ms, '.3f'):>7} "
            f"{number(row.params_count, ','):>8} {number(row.reward, '.4f'):>7}  {arch}"
        )
    if best is not None and best not in {r.number for r in info.front}:
        lines.append(f"* best reward: trial {best} ({info.best_reward.reward:.4f}), not on the front")
    else:
        lines.append("* = best MnasNet reward")
    return "\n".join(lines)


def front_rows(info: ParetoInfo) -> list[dict]:
    """The front as plain records (a DataFrame's rows), by latency."""
    return [{k: v for k, v in asdict(row).items() if k != "params"} for row in info.front]


def trial_rows(study, settings: StudySettings | None = None) -> list[TrialRow]:
    """Every trial as a row, its reward under the study's current target and exponents (`settings`,
    read from the study when not given)."""
    reward = (settings or StudySettings.of(study)).reward
    return [with_reward(trial_row(t), reward) for t in study.get_trials(deepcopy=False)]


def write_trials_csv(study, path: str) -> None:
    """trials.csv: every trial, its reward under the study's current target and exponents (written
    after every trial: the rows only, not the front's statistics)."""
    write_csv_atomic(trial_rows(study), path)


def write_csv_atomic(rows: list[TrialRow], path: str) -> None:
    """Every trial with its figures; replaced atomically so a reader never sees half a file."""
    buffer = io.StringIO()
    columns = [f.name for f in fields(TrialRow) if f.name != "params"]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    write_text_atomic(path, buffer.getvalue())


__all__ = ["write_text_atomic"]  # re-exported: one atomic-write helper for every file (search_spaces.files)
