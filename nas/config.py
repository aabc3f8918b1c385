"""`SearchConfig`: every setting of a search, from an optional TOML file overlaid by CLI flags.

Frozen: change with `dataclasses.replace`. Validation errors are `ConfigError`s whose one-line
message names the bad value and what is allowed; the CLI turns them into exit code 2.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tomllib
from dataclasses import dataclass, field

from latency.devices import DEFAULT_PATTERN, make_device
from latency.measure import MAX_ROUND_GAP_S, LatencyProtocol
from results.record import IDENTITY, StudySettings
from results.reward import CONSTRAINTS
from search_spaces import SPACES, TABULAR_SPACES
from search_spaces.files import LATENCY_CACHE, STUDY_DB
from trainers.proxy import DEFAULT_BUDGETS, ProxyBudget, default_budget

MODES = ("pareto", "reward")
STRATEGIES = ("tpe", "nsga2", "random", "latency-aware")
DATASETS = ("cifar10", "cifar100", "imagenet16")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16": 120}
#: TOML keys (and old flags) accepted under another name
ALIASES = {"sampler": "strategy"}
LATENCY_PRECISIONS = ("fp32", "int8")
LATENCY_ROUNDS = 5


class ConfigError(ValueError):
    """A bad setting; the message is one line naming the value and what is allowed."""


_PER_DATASET = {
    "images": "per data set: " + ", ".join(f"{name} {images}" for name, (images, _) in DEFAULT_BUDGETS.items()),
    "epochs": "per data set: " + ", ".join(f"{name} {epochs}" for name, (_, epochs) in DEFAULT_BUDGETS.items()),
}


def _setting(default, help: str, **flag):
    """A field with its command-line flag (see nas.flags)."""
    return field(default=default, metadata={"help": help, **flag})


def is_table(device: str) -> bool:
    """`device` is a table of published latencies (table:FILE:COLUMN)."""
    return device.startswith("table:")


@dataclass(frozen=True)
class DeviceConfig:
    """Where and how latency is measured (see latency.devices): the settings of every command that
    times models. `open()` makes the device once and checks that it answers."""

    device: str = _setting(
        "host", "host (LiteRT here), adb[:SERIAL] (benchmark_model on a phone), cmd:'COMMAND {model}' or table:FILE:COLUMN"
    )
    latency_threads: int = _setting(1, "interpreter threads")
    latency_precision: str = _setting("fp32", "fp32, or int8 (the full-integer model, as shipped)")
    latency_warmup: int = _setting(30, "untimed runs first")
    latency_runs: int = _setting(200, "timed runs, in 5 rounds")
    latency_max_cv: float = _setting(0.05, "measure more rounds (up to 3 sets) when the rounds' spread exceeds this")
    latency_round_gap: float = _setting(
        0.5, "host: seconds between rounds, so they sample the machine's slow spells and fast state apart"
    )
    latency_pin_core: int | None = _setting(None, "host: pin the measurement to this CPU core")
    device_timeout_s: float = _setting(120.0, "seconds per device command", flag="--device-timeout")
    adb_path: str = _setting("adb", "adb binary", flag="--adb")
    benchmark_binary: str = _setting("/data/local/tmp/benchmark_model", "benchmark_model on the phone")
    delegate: str = _setting("xnnpack", "adb: xnnpack, none, gpu or nnapi")
    latency_regex: str = _setting(
        DEFAULT_PATTERN, "cmd: regex whose group 1 is a latency in ms", default_text="a number before 'ms'"
    )

    def __post_init__(self) -> None:
        _choice("latency_precision", self.latency_precision, LATENCY_PRECISIONS)
        _positive("latency_max_cv", self.latency_max_cv)
        gap = self.latency_round_gap
        if isinstance(gap, bool) or not isinstance(gap, int | float) or not 0 <= gap <= MAX_ROUND_GAP_S:
            raise ConfigError(f"latency-round-gap={gap!r} must be a number of seconds in [0, {MAX_ROUND_GAP_S:g}]")
        _positive("device_timeout_s", self.device_timeout_s)
        if not isinstance(self.latency_warmup, int) or isinstance(self.latency_warmup, bool) or self.latency_warmup < 0:
            raise ConfigError(f"latency-warmup={self.latency_warmup!r} must be an integer >= 0")
        if not isinstance(self.latency_runs, int) or self.latency_runs < LATENCY_ROUNDS:
            raise ConfigError(f"latency-runs={self.latency_runs!r} must be an integer >= {LATENCY_ROUNDS} (5 rounds)")
        _count("latency_threads", self.latency_threads)
        if not self.is_tabular:
            self.make()  # validates device, pinning, delegate and regex

    @property
    def is_tabular(self) -> bool:
        """Latencies come from a published table: nothing is measured."""
        return is_table(self.device)

    def protocol(self) -> LatencyProtocol:
        return LatencyProtocol(
            threads=self.latency_threads,
            warmup_runs=self.latency_warmup,
            rounds=LATENCY_ROUNDS,
            runs_per_round=self.latency_runs // LATENCY_ROUNDS,
            max_cv=self.latency_max_cv,
            round_gap_s=float(self.latency_round_gap),
        )

    def make(self):
        """The measuring device (a plain-value dataclass that can cross into the worker)."""
        try:
            return make_device(
                self.device,
                protocol=self.protocol(),
                precision=self.latency_precision,
                pin_core=self.latency_pin_core,
                adb=self.adb_path,
                binary=self.benchmark_binary,
                delegate=self.delegate,
                pattern=self.latency_regex,
                timeout_s=self.device_timeout_s,
            )
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def open(self):
        """(device, fingerprint): the device made and asked what it is; one that cannot answer is a
        ConfigError naming it."""
        from latency.devices import DeviceError

        device = self.make()
        try:
            return device, device.fingerprint()
        except DeviceError as error:
            raise ConfigError(f"device {self.device!r} cannot be used: {error}") from None


def _as_in_device_config(name: str):
    """A SearchConfig field that is DeviceConfig's `name`: the same default and help."""
    original = DeviceConfig.__dataclass_fields__[name]
    return field(default=original.default, metadata=original.metadata)


@dataclass(frozen=True)
class SearchConfig:
    # what is searched and how it is scored
    study_name: str | None = _setting(
        None, "study name", flag="--study-name", aliases=("--study",), default_text="<space>-<dataset>, e.g. mnasnet-cifar10"
    )
    mode: str = _setting("pareto", "pareto (accuracy up, latency down) or reward (MnasNet's scalar)")
    space: str = _setting(
        "mnasnet",
        "mnasnet, mnasnet-mobilevit (MobileViT blocks where the map is 8x8 or smaller) or nb201 (NAS-Bench-201's cells "
        "from published tables, with --device table:FILE:COLUMN)",
    )
    width: float = _setting(0.5, "width multiplier of the skeleton")
    stem_stride: int = _setting(1, "1: the stem sees 32x32 and block 2 downsamples; 2: MobileNetV2's stride-2 stem (cheaper)")
    target_ms: float = _setting(1.0, "target latency T in ms (host CPU, 1 thread: CIFAR models take well under 1 ms)")
    constraint: str = _setting("soft", "soft (alpha = beta = -0.07) or hard (alpha 0, beta -1; models over 2 T not trained)")
    alpha: float | None = _setting(None, "reward exponent when LAT <= T", default_text="from --constraint")
    beta: float | None = _setting(None, "reward exponent when LAT > T", default_text="from --constraint")
    max_latency_ms: float | None = _setting(
        None, "time but do not train models slower than this", default_text="none; hard constraint: 2 x T"
    )
    # how it runs
    strategy: str = _setting("tpe", "tpe, nsga2, random or latency-aware (docs/strategies.md)", aliases=("--sampler",))
    trials: int = _setting(20, "new architectures to evaluate (re-proposals answered from the study do not count)")
    study_trials: int | None = _setting(
        None,
        "many workers: stop when the study holds this many new architectures, every worker's together (instead of --trials)",
        default_text="none: --trials counts this process's",
    )
    timeout_s: float | None = _setting(None, "start no trial after this many seconds", flag="--timeout")
    seed: int = _setting(0, "sampler and training seed")
    seed_references: bool = _setting(False, "first evaluate the reference architectures' projections onto the space")
    storage: str | None = _setting(None, "Optuna storage URL", default_text="sqlite:///runs/<study>/study.db")
    runs_dir: str = _setting("runs", "directory holding one folder per study")
    trials_per_worker: int = _setting(8, "replace the worker process after this many trainings (TensorFlow keeps memory)")
    trial_timeout_s: float = _setting(
        1800.0, "stop a measurement or training that takes longer than this many seconds", flag="--trial-timeout"
    )
    # data and the proxy budget (its defaults live in trainers.proxy)
    dataset: str = _setting("cifar10", "cifar10, cifar100, or imagenet16 (nb201 only)")
    data_dir: str | None = _setting(
        None, "folder holding the official CIFAR folders", default_text="$NAS_DATA_DIR, ./data, ~/.keras/datasets"
    )
    train_images: int | None = _setting(None, "proxy: training images per epoch", default_text=_PER_DATASET["images"])
    val_images: int = _setting(ProxyBudget.val_images, "held-out images carved from the training set")
    epochs: int | None = _setting(None, "proxy: epochs", default_text=_PER_DATASET["epochs"])
    batch_size: int = _setting(ProxyBudget.batch_size, "proxy: batch size")
    early_stop: str = _setting(
        "on", "stop a trial dominated part-way by a faster finished one (nas.early_stop); off: train every trial to the end"
    )
    # latency measurement: DeviceConfig's fields (its defaults and help), flat for the flags and TOML keys
    device: str = _as_in_device_config("device")
    latency_threads: int = _as_in_device_config("latency_threads")
    latency_precision: str = _as_in_device_config("latency_precision")
    latency_warmup: int = _as_in_device_config("latency_warmup")
    latency_runs: int = _as_in_device_config("latency_runs")
    latency_max_cv: float = _as_in_device_config("latency_max_cv")
    latency_round_gap: float = _as_in_device_config("latency_round_gap")
    latency_pin_core: int | None = _as_in_device_config("latency_pin_core")
    device_timeout_s: float = _as_in_device_config("device_timeout_s")
    adb_path: str = _as_in_device_config("adb_path")
    benchmark_binary: str = _as_in_device_config("benchmark_binary")
    delegate: str = _as_in_device_config("delegate")
    latency_regex: str = _as_in_device_config("latency_regex")
    latency_screen: bool = _setting(True, "with a hard limit: do not skip candidates the latency model is sure exceed it")

    def __post_init__(self) -> None:
        _choice("mode", self.mode, MODES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("space", self.space, SPACES)
        _choice("dataset", self.dataset, DATASETS)
        images, epochs = default_budget(self.dataset)  # what was not given follows the data set
        if self.train_images is None:
            object.__setattr__(self, "train_images", images)
        if self.epochs is None:
            object.__setattr__(self, "epochs", epochs)
        _choice("constraint", self.constraint, tuple(CONSTRAINTS))
        _positive("target_ms", self.target_ms)
        if self.stem_stride not in (1, 2):
            raise ConfigError(f"stem-stride={self.stem_stride!r} must be 1 or 2")
        _positive("width", self.width)
        if not 0.1 <= self.width <= 2.0:
            raise ConfigError(f"width={self.width:g} must lie in [0.1, 2.0] (a multiplier of the skeleton's channels)")
        if self.max_latency_ms is not None:
            _positive("max_latency_ms", self.max_latency_ms)
        if self.timeout_s is not None:
            _positive("timeout_s", self.timeout_s)
        _choice("early_stop", self.early_stop, ("off", "on"))
        _positive("trial_timeout_s", self.trial_timeout_s)
        if self.space in TABULAR_SPACES and not self.is_tabular:
            raise ConfigError(
                f"space={self.space!r} takes its latencies from a table: --device table:FILE:COLUMN, not {self.device!r}"
            )
        if self.is_tabular and self.space not in TABULAR_SPACES:
            raise ConfigError(f"device={self.device!r} is a table of NAS-Bench-201 cells: use it with --space nb201")
        if self.dataset == "imagenet16" and self.space not in TABULAR_SPACES:
            raise ConfigError("dataset='imagenet16' exists only as NAS-Bench-201's table (--space nb201)")
        for name in ("trials", "trials_per_worker", "train_images", "val_images", "epochs", "batch_size"):
            _count(name, getattr(self, name))
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value > 0):
                raise ConfigError(f"{name}={value!r} must be <= 0 (MnasNet's soft constraint uses -0.07)")
        if self.batch_size > self.train_images:
            raise ConfigError(f"batch-size={self.batch_size} exceeds train-images={self.train_images}")
        if self.study_trials is not None and (not isinstance(self.study_trials, int) or self.study_trials < 1):
            raise ConfigError(f"study-trials={self.study_trials!r} must be an integer >= 1")
        _ = self.device_config  # built once here: it validates the latency settings
        if self.study_name is None:
            object.__setattr__(self, "study_name", f"{self.space}-{self.dataset}")
        if not self.study_name or any(c in self.study_name for c in "/\\") or self.study_name.startswith("."):
            raise ConfigError(f"study-name={self.study_name!r} must be a plain name (no slashes, not starting with a dot)")

    @property
    def reward_alpha(self) -> float:
        return CONSTRAINTS[self.constraint]["alpha"] if self.alpha is None else self.alpha

    @property
    def reward_beta(self) -> float:
        return CONSTRAINTS[self.constraint]["beta"] if self.beta is None else self.beta

    @property
    def latency_limit_ms(self) -> float | None:
        """Models measured above this are recorded but not trained."""
        if self.max_latency_ms is not None:
            return self.max_latency_ms
        return 2.0 * self.target_ms if self.constraint == "hard" else None

    @property
    def is_tabular(self) -> bool:
        """Accuracy and latency come from published tables: nothing is trained or measured."""
        return is_table(self.device)

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.dataset]

    @property
    def latency_cache_path(self) -> str:
        return os.path.join(self.runs_dir, LATENCY_CACHE)

    @property
    def run_dir(self) -> str:
        return os.path.join(self.runs_dir, self.study_name)

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{os.path.join(self.run_dir, STUDY_DB)}"

    def make_space(self):
        from search_spaces import get_space

        return get_space(self.space, width=self.width, stem_stride=self.stem_stride)

    @functools.cached_property
    def device_config(self) -> DeviceConfig:
        """The latency settings as one value, built (and validated) once per config: every cache key
        reads its protocol."""
        return DeviceConfig(**{name: getattr(self, name) for name in LATENCY_FIELDS})

    def reward_settings(self) -> dict:
        return {"target_ms": self.target_ms, "alpha": self.reward_alpha, "beta": self.reward_beta}

    def study_identity(self) -> dict:
        """Settings that must stay fixed for a study's trials to be comparable. The reward's
        settings are among them only in reward mode, where they define the objective; in Pareto
        mode the reward is a derived column, recomputed with the study's latest settings."""
        identity = {name: getattr(self, name) for name in IDENTITY}
        return identity | (self.reward_settings() if self.mode == "reward" else {})

    def study_settings(self, fingerprint: dict) -> StudySettings:
        """What a search with this configuration records on its study."""
        return StudySettings(**self.study_identity(), **self.reward_settings(), strategy=self.strategy, fingerprint=fingerprint)


def _choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")


def _count(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name.replace('_', '-')}={value!r} must be an integer >= 1")


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name.replace('_', '-')}={value!r} must be a positive number")


FIELD_NAMES = {f.name for f in dataclasses.fields(SearchConfig)}
#: the flags of every command that reads a study, and of every command that measures latency
STUDY_FIELDS = ("study_name", "storage", "runs_dir")
LATENCY_FIELDS = tuple(f.name for f in dataclasses.fields(DeviceConfig))
#: the search's own flags, besides those
SEARCH_FIELDS = (
    "mode", "target_ms", "constraint", "alpha", "beta", "max_latency_ms", "strategy", "space", "width", "stem_stride",
    "trials", "study_trials", "timeout_s", "seed", "seed_references", "dataset", "data_dir", "train_images",
    "val_images", "epochs", "batch_size", "early_stop", "latency_screen", "trials_per_worker", "trial_timeout_s",
)  # fmt: skip


def load_config(*, toml_path: str | None = None, overrides: dict | None = None) -> SearchConfig:
    """Defaults, then the TOML file (keys as in the flags, with - or _), then explicit flags."""
    values = read_toml(toml_path) if toml_path else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return SearchConfig(**values)
    except TypeError as error:
        raise ConfigError(f"bad configuration: {error}") from None


def read_toml(toml_path: str) -> dict:
    """The settings a TOML file gives, by field name."""
    try:
        with open(toml_path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {toml_path!r} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {toml_path!r} is not valid TOML: {error}") from None
    values = {}
    for key, value in document.items():
        name = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in FIELD_NAMES:
            raise ConfigError(f"config file {toml_path!r} has unknown key {key!r}")
        values[name] = value
    return values
