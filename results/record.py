"""What a trial stores: one typed record, written as Optuna user attributes and read back.

Every attribute a search writes is a field here, with its unit in its name; nothing else reads or
writes trial attributes by name. Unknown attributes (from a newer version) are ignored on read,
missing ones take the field's default, so older studies stay readable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from latency.measure import LatencyResult
from results.reward import Reward

#: the study-level attribute holding the search's settings (identity, reward, fingerprint)
SETTINGS_ATTR = "nas_settings"


@dataclass(frozen=True)
class StudySettings:
    """What a search records on its study, as one flat user attribute: the settings its trials must
    share to be comparable (`IDENTITY`), the reward (a derived column in Pareto mode, which later
    runs may change), the strategy and the latency fingerprint. None: not recorded (an older
    study, or one no search has run)."""

    mode: str | None = None
    space: str | None = None
    width: float | None = None
    stem_stride: int | None = None
    dataset: str | None = None
    train_images: int | None = None
    val_images: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    latency_threads: int | None = None
    device: str | None = None
    latency_precision: str | None = None
    target_ms: float | None = None
    alpha: float | None = None
    beta: float | None = None
    strategy: str | None = None
    fingerprint: dict = field(default_factory=dict)

    @property
    def recorded(self) -> bool:
        return self != StudySettings()

    @property
    def reward(self) -> Reward | None:
        if None in (self.target_ms, self.alpha, self.beta):
            return None
        return Reward(self.target_ms, self.alpha, self.beta)

    def to_attr(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) not in (None, {})}

    @classmethod
    def from_attr(cls, attr: dict | None) -> StudySettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (attr or {}).items() if k in known})

    @classmethod
    def of(cls, study) -> StudySettings:
        return cls.from_attr(study.user_attrs.get(SETTINGS_ATTR))

    def save(self, study) -> None:
        """Record these settings on `study`; keys a newer version recorded there stay as they are."""
        study.set_user_attr(SETTINGS_ATTR, {**(study.user_attrs.get(SETTINGS_ATTR) or {}), **self.to_attr()})


#: the settings that must stay fixed for a study's trials to be comparable (the reward's too in reward mode)
IDENTITY = ("mode", "space", "width", "stem_stride", "dataset", "train_images", "val_images", "epochs", "batch_size",
            "latency_threads", "device", "latency_precision")  # fmt: skip


@dataclass(frozen=True)
class Timings:
    """Where a trial's seconds went, as the worker measured them (stored under these names)."""

    build_seconds: float | None = None
    convert_seconds: float | None = None
    measure_seconds: float | None = None
    train_seconds: float | None = None
    first_epoch_seconds: float | None = None
    first_step_seconds: float | None = None
    curve_seconds: float | None = None
    eval_seconds: float | None = None
    train_images_per_second: float | None = None
    train_steps: int | None = None

    def merged(self, measured: dict) -> Timings:
        """These timings with a worker's `measured` ones (floats to 0.1 ms); a name not here is a bug."""
        unknown = set(measured) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown timings {sorted(unknown)}")
        return dataclasses.replace(self, **{k: round(v, 4) if isinstance(v, float) else v for k, v in measured.items()})


@dataclass(frozen=True)
class TrialRecord:
    # the architecture
    arch: str = ""  # canonical string (block grammar, or NAS-Bench-201's notation)
    arch_id: str = ""
    params_count: int | None = None
    multiply_adds: int | None = None
    # objectives
    accuracy: float | None = None  # held-out fraction in [0, 1]
    reward: float | None = None  # MnasNet reward under the settings of the run that stored it
    latency: LatencyResult | None = None  # stored as latency_median_ms, latency_p90_ms, ...
    latency_cached: bool | None = None  # taken from the latency cache, not measured for this trial
    latency_predicted_ms: float | None = None  # the latency model's prediction, where one was made
    # how the trial was chosen and what happened to it
    candidates_measured: int | None = None  # latencies the selection looked up to choose this trial
    predicted_accuracy: float | None = None  # the selection's surrogate mean for the chosen candidate
    seeded_from: str = ""  # a reference architecture's name
    retry_of: int | None = None  # the interrupted trial this one repeats
    reused_from: int | None = None  # an identical finished trial whose figures were copied
    fail_reason: str = ""
    curve: tuple[tuple[float, float], ...] = ()  # (fraction of training done, held-out accuracy)
    train_loss_mean: float | None = None  # proxy training's mean loss (an estimator of final accuracy to check)
    train_loss_late_mean: float | None = None  # the same over the second half of its steps
    # seconds
    trial_seconds: float | None = None  # this trial's own, from its start to its end
    timings: Timings = Timings()  # stored under their own names

    @property
    def latency_ms(self) -> float | None:
        return None if self.latency is None else self.latency.median_ms

    def to_user_attrs(self) -> dict:
        """The fields that hold something, as JSON-able user attributes (latency and timings flat)."""
        attrs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "latency":
                attrs |= {k: v for k, v in value.as_attrs().items() if v is not None} if value is not None else {}
            elif f.name == "timings":
                attrs |= {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
            elif value != f.default:
                attrs[f.name] = [list(point) for point in value] if f.name == "curve" else value
        return attrs

    @classmethod
    def from_user_attrs(cls, attrs: dict) -> TrialRecord:
        known = {f.name for f in fields(cls)} - {"latency", "timings"}
        values = {k: v for k, v in attrs.items() if k in known}
        if "curve" in values:
            values["curve"] = tuple(tuple(point) for point in values["curve"])
        timed = {k: attrs[k] for k in Timings.__dataclass_fields__ if k in attrs}
        return cls(**values, latency=LatencyResult.from_attrs(attrs), timings=Timings(**timed))

    @classmethod
    def from_trial(cls, trial) -> TrialRecord:
        return cls.from_user_attrs(trial.user_attrs)

    def replace(self, **changes) -> TrialRecord:
        return dataclasses.replace(self, **changes)


#: fields copied from an identical finished trial when a strategy proposes it again (not how this
#: trial came about, nor its own time)
REUSABLE_FIELDS = tuple(
    f.name
    for f in fields(TrialRecord)
    if f.name not in ("seeded_from", "retry_of", "reused_from", "trial_seconds", "candidates_measured", "predicted_accuracy")
)


def store(trial, record: TrialRecord, *, previous: TrialRecord | None = None) -> None:
    """Write the fields of `record` that differ from `previous` (what is already stored)."""
    before = previous.to_user_attrs() if previous else {}
    for name, value in record.to_user_attrs().items():
        if before.get(name) != value:
            trial.set_user_attr(name, value)
