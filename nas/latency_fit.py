"""`nas latency-fit`: measure random architectures of the space on the device, fit the latency
model on every measurement the latency cache holds for that device (searches' and these), and
report its error on held-out architectures.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from latency.cache import LatencyCache
from latency.model import FEATURE_LABELS, LatencyModel, fit_with_error
from nas.config import ConfigError, SearchConfig
from search_spaces import INPUT_SHAPE, ArchSpec
from search_spaces.files import write_text_atomic

INPUT_HW = INPUT_SHAPE[0]


def cache_of(config: SearchConfig) -> LatencyCache:
    return LatencyCache(config.latency_cache_path)


def model_path(config: SearchConfig, fingerprint_id: str) -> str:
    return os.path.join(config.runs_dir, f"latency_model-{fingerprint_id}.json")


def random_architectures(config: SearchConfig, count: int, *, seed: int) -> list[ArchSpec]:
    """`count` distinct architectures drawn uniformly from the search space."""
    import optuna

    space = config.make_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    specs: dict[str, ArchSpec] = {}
    for _ in range(count * 20):
        spec = space.sample(study.ask())
        specs.setdefault(spec.arch_id, spec)
        if len(specs) == count:
            break
    return list(specs.values())


def measure_samples(
    config: SearchConfig,
    device,
    fingerprint: dict,
    count: int,
    *,
    seed: int = 0,
    on_sample: Callable[[int, ArchSpec, object], None] | None = None,
) -> int:
    """Measure `count` random architectures not yet in the cache, through the search's own
    evaluator (same worker, key and cache); returns how many were new. `on_sample` receives a
    `LatencyAnswer` or the failure's message."""
    from nas.evaluators import EvaluationFailed, RealEvaluator
    from nas.worker import WORKER_LOG, TrialRunner

    new = 0
    log_path = os.path.join(config.runs_dir, WORKER_LOG)
    with TrialRunner(trials_per_worker=config.trials_per_worker, log_path=log_path) as runner:
        evaluator = RealEvaluator(config, runner, device, fingerprint, keep_models=False)  # samples are for the model only
        for k, spec in enumerate(random_architectures(config, count, seed=seed), start=1):
            if evaluator.cached_latency(spec) is not None:
                continue
            try:
                answer = evaluator.latency(spec)
                new += 1
            except EvaluationFailed as error:
                answer = str(error)
            if on_sample:
                on_sample(k, spec, answer)
    return new


@dataclass
class FitReport:
    model: LatencyModel
    specs: list[ArchSpec]
    measured_ms: np.ndarray
    held_out_ms: np.ndarray

    @property
    def relative_errors(self) -> np.ndarray:
        return self.held_out_ms / self.measured_ms - 1.0

    @property
    def within_10_percent(self) -> float:
        return float(np.mean(np.abs(self.relative_errors) <= 0.10))


def fit(config: SearchConfig, fingerprint: dict) -> FitReport:
    """Fit on everything cached for this device and protocol; the held-out predictions come from
    k-fold cross-validation. ConfigError when there is too little data."""
    from nas.evaluators import latency_cache_key

    measured = cache_of(config).measured(latency_cache_key(config, fingerprint, ""))
    specs, latencies = [ArchSpec.from_string(a) for a, _ in measured], np.array([ms for _, ms in measured])
    try:
        model, held_out = fit_with_error(
            specs, latencies, input_hw=INPUT_HW, fingerprint_id=fingerprint["id"], num_classes=config.num_classes
        )
    except ValueError as error:
        raise ConfigError(f"{error}; measure more with `nas latency-fit --samples N`") from None
    return FitReport(model, specs, latencies, held_out)


def save_model(config: SearchConfig, model: LatencyModel) -> str:
    path = model_path(config, model.fingerprint_id)
    write_text_atomic(path, model.to_json())
    return path


def summarize(report: FitReport) -> str:
    """One line: how many architectures the model was fitted on, and its held-out error."""
    errors = np.abs(report.relative_errors)
    return (
        f"fitted on {len(report.specs)} architectures; held-out: {100 * report.within_10_percent:.0f} % within +-10 %, "
        f"median |error| {100 * np.median(errors):.1f} %  (--report for details)"
    )


def format_report(report: FitReport, *, every_architecture: bool = False) -> str:
    """The model's held-out error, rank agreement and coefficients; with `every_architecture`, a
    line per measured architecture."""
    from results.ranking import agreement

    errors = report.relative_errors
    rank = agreement(report.measured_ms, report.held_out_ms)
    model = report.model
    coefficients = ", ".join(f"{name} {c:.4g}" for name, c in zip(FEATURE_LABELS, model.coefficients, strict=True))
    return "\n".join(
        [
            f"latency model on {len(report.specs)} measured architectures "
            f"({report.measured_ms.min():.3f}-{report.measured_ms.max():.3f} ms)",
            f"held-out error (k-fold): {100 * report.within_10_percent:.0f} % within +-10 %, median |error| "
            f"{100 * np.median(np.abs(errors)):.1f} %, worst {100 * errors[np.argmax(np.abs(errors))]:+.1f} %",
            f"rank agreement with measurement: {rank.describe()}",
            f"coefficients (ms per unit): {coefficients}; correction {model.correction_ms:.4f} ms per inference",
            f"screening bound: a candidate is skipped when prediction x {min(1.0, model.min_ratio):.3f} x 0.95 exceeds the "
            "hard limit",
        ]
        + (_every_architecture(report) if every_architecture else [])
    )


def _every_architecture(report: FitReport) -> list[str]:
    lines = ["", f"{'arch_id':<13} {'measured ms':>11} {'held-out ms':>11} {'error':>7}"]
    rows = sorted(zip(report.specs, report.measured_ms, report.held_out_ms, strict=True), key=lambda item: item[1])
    for spec, measured, predicted in rows:
        lines.append(f"{spec.arch_id:<13} {measured:>11.3f} {predicted:>11.3f} {100 * (predicted / measured - 1):>+6.1f}%")
    return lines
