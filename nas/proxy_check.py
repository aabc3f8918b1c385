"""`nas proxy-check`: does the proxy budget rank architectures the way a longer budget does?

K architectures, plus the reference architectures, are each short-trained at the proxy budget and
at a longer one with the same data split and seed; the two rankings of held-out accuracy are
compared with Kendall's tau and Spearman's rho and their bootstrap intervals. The longer budget
is either another proxy (default 10x the image-passes) or, with `--final-epochs N`, the
retraining recipe itself on the full training split: then the comparison is with the *final*
validation accuracy (the test split stays out), and the retrained models are the same ones
`nas retrain` and `nas compare` reuse. The K architectures are random points of the space, or
with `--study`, the given trials (`--trial`) and K more of the study's trials spread evenly over
the latency range of everything it measured: the proxy must rank the candidates a search actually
compares, not only the front. Every result is appended to a JSON file as it arrives, so an
interrupted check resumes, a finished one can be re-read, and checks of other proxy budgets
against the same long budget reuse its results.

Besides the proxy's held-out accuracy, the summary ranks by other signals the proxy run records
for free (its accuracy half-way, its mean training loss; Ru et al., arXiv:2006.04492), and says
whether the proxy's ranking error trends with the architecture's size or latency.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from nas.config import ConfigError, SearchConfig
from search_spaces import REFERENCES, reference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    train_images: int
    epochs: int

    @property
    def label(self) -> str:
        return f"{self.train_images}x{self.epochs}"

    @property
    def image_passes(self) -> int:
        return self.train_images * self.epochs


@dataclass(frozen=True)
class FinalBudget:
    """The retraining recipe as the long budget (full training split)."""

    recipe: object  # trainers.full.Recipe

    @property
    def label(self) -> str:
        return f"final-e{self.recipe.epochs}-{self.recipe.recipe_id}"


@dataclass(frozen=True)
class CheckSettings:
    """What `nas proxy-check` compares (its own flags; the proxy budget, space and data are the
    search's settings, or the study's with --study)."""

    archs: int = field(default=12, metadata={"help": "architectures: random ones, or with --study more of its trials"})
    references: str | None = field(
        default=None, metadata={"help": "comma-separated reference names ('' for none)", "default_text": "all the space holds"}
    )
    trials: tuple[int, ...] = field(
        default=(), metadata={"help": "with --study: check this trial (repeat for several)", "flag": "--trial", "append": True}
    )
    long_images: int | None = field(
        default=None, metadata={"help": "long budget: training images", "default_text": "10x the proxy's, at most 45000"}
    )
    long_epochs: int | None = field(
        default=None, metadata={"help": "long budget: epochs", "default_text": "enough for 10x the proxy's image-passes"}
    )
    final_epochs: int | None = field(
        default=None, metadata={"help": "long budget: the retraining recipe with this many epochs on the full split (>= 15)"}
    )
    out: str | None = field(default=None, metadata={"help": "result file", "default_text": "runs/proxy-check/<settings>.json"})
    proxies_only: bool = field(
        default=False,
        metadata={
            "help": "train only the proxy runs; compare with the long results already finished (by another check, "
            "nas retrain or nas compare); run again without it to fill in the rest"
        },
    )
    show: bool = field(default=False, metadata={"help": "print the saved result of this check without training"})


@dataclass(frozen=True)
class CheckPlan:
    config: SearchConfig  # the search's settings (the study's, with --study)
    study: object  # optuna.Study or None
    proxy: Budget
    long: Budget | FinalBudget
    references: tuple[str, ...]
    trials: tuple[int, ...]
    count: int
    path: str
    proxies_only: bool = False

    def describe(self) -> str:
        if isinstance(self.long, FinalBudget):
            against = f"the retraining recipe ({self.long.recipe.describe()}; final validation accuracy)"
        else:
            against = (
                f"{self.long.label} images x epochs ({self.long.image_passes / self.proxy.image_passes:.1f}x the image-passes)"
            )
        if self.study is not None:
            given = f"trials {', '.join(map(str, self.trials))} and " if self.trials else ""
            which = f"{given}{self.count} more of study {self.study.study_name!r} spread over its latency range"
        else:
            which = f"{self.count} random {self.config.space} architectures"
        return f"proxy {self.proxy.label} vs {against}; {which}" + (f" + {', '.join(self.references)}" if self.references else "")


def plan(config: SearchConfig, settings: CheckSettings, *, study=None, given: set[str] = frozenset()) -> CheckPlan:
    """The check `settings` ask for. With `study`, its space, data and proxy budget apply, except the
    settings named in `given` (flags the user set)."""
    import dataclasses
    import math

    from results.record import StudySettings

    if settings.archs < 0 or (settings.archs == 0 and settings.references == ""):
        raise ConfigError(f"archs={settings.archs}: nothing to check")
    if settings.trials and study is None:
        raise ConfigError("--trial needs --study")
    if study is not None:
        stored = StudySettings.of(study).to_attr()
        inherited = {k: stored[k] for k in config.study_identity() if k in stored and k not in given and k != "mode"}
        config = dataclasses.replace(config, **inherited)
    proxy = Budget(config.train_images, config.epochs)
    long_images = (
        settings.long_images if settings.long_images is not None else min(10 * proxy.train_images, 50_000 - config.val_images)
    )
    long_epochs = settings.long_epochs
    if long_epochs is None:
        long_epochs = math.ceil(10 * proxy.image_passes / max(1, long_images))
    for name, value in (("long-images", long_images), ("long-epochs", long_epochs)):
        if value < 1:
            raise ConfigError(f"{name}={value} must be at least 1")
    long: Budget | FinalBudget = Budget(long_images, long_epochs)
    if settings.final_epochs is not None:
        from trainers.full import Recipe

        if settings.final_epochs < 1:
            raise ConfigError(f"final-epochs={settings.final_epochs} must be at least 1")
        long = FinalBudget(Recipe(epochs=settings.final_epochs))
    if settings.references is None:
        references = default_references(config)
    else:
        references = tuple(n.strip() for n in settings.references.split(",") if n.strip())
        unknown = [n for n in references if n not in REFERENCES]
        if unknown:
            raise ConfigError(f"reference {unknown[0]!r} is unknown; known: {', '.join(REFERENCES)}")
    path = settings.out or result_path(config)
    return CheckPlan(config, study, proxy, long, references, settings.trials, settings.archs, path, settings.proxies_only)


def saved_report(plan: CheckPlan) -> str:
    """The check's file and table, from what it saved (no training)."""
    records = load_records(plan.path)
    if not any(plan.proxy.label in r.results for r in records.values()):
        raise ConfigError(f"no saved proxy check at {plan.path}")
    return f"{plan.path}\n\n{format_check(records, plan.proxy, plan.long)}"


@dataclass
class CheckRecord:
    name: str  # a reference name, "sample-K" or "trial-N"
    arch: str
    results: dict = field(default_factory=dict)  # budget label -> {"accuracy", "seconds", ...}
    latency_ms: float | None = None  # as the study measured it (trials of a study only)


def candidates(
    config: SearchConfig, count: int, *, references: tuple[str, ...], study=None, trials: tuple[int, ...] = ()
) -> list[tuple[str, str, float | None]]:
    """(name, arch string, latency ms or None): the given trials of `study` and `count` more of it
    spread over its latency range, or `count` random architectures of the space; then `references`."""
    from nas.latency_fit import random_architectures

    if study is not None:
        chosen = study_candidates(study, count, trials=trials)
    else:
        specs = random_architectures(config, count, seed=config.seed)
        chosen = [(f"sample-{k}", spec.to_string(), None) for k, spec in enumerate(specs)]
    return chosen + [(name, reference(name).to_string(), None) for name in references]


def default_references(config: SearchConfig) -> tuple[str, ...]:
    """Every reference the space can hold (MobileViT-XXS only with the MobileViT extension)."""
    space = config.make_space()
    return tuple(name for name in REFERENCES if space.mobilevit or "mobilevit" not in name)


def study_candidates(study, count: int, *, trials: tuple[int, ...] = ()) -> list[tuple[str, str, float]]:
    """The given trials, then `count` finished trials whose latencies spread evenly over the range of
    all measured ones (for each of `count` evenly spaced latencies, the nearest unused trial); each
    architecture once."""
    import numpy as np

    from results.pareto import pareto_info

    info = pareto_info(study)
    measured = [r for r in info.rows if r.measured and r.reused_from is None]
    if not measured:
        raise ConfigError(f"study {study.study_name!r} has no finished trial to check")
    by_number = {r.number: r for r in measured}
    chosen, seen = [], set()
    for number in trials:
        if number not in by_number:
            raise ConfigError(f"trial {number} of study {study.study_name!r} is not a finished trial")
        if by_number[number].arch_id not in seen:
            seen.add(by_number[number].arch_id)
            chosen.append(by_number[number])
    low, high = min(r.latency_ms for r in measured), max(r.latency_ms for r in measured)
    for target in np.linspace(low, high, count) if count else ():
        pool = [r for r in measured if r.arch_id not in seen]
        if not pool:
            break
        row = min(pool, key=lambda r: (abs(r.latency_ms - target), r.number))
        seen.add(row.arch_id)
        chosen.append(row)
    return [(f"trial-{r.number}", r.arch, r.latency_ms) for r in chosen]


def result_path(config: SearchConfig) -> str:
    """One file per space, data split, batch and seed, holding every budget's results per
    architecture: checks of several proxies against one long budget train the long one once."""
    name = f"{config.space}-w{config.width:g}-{config.dataset}-val{config.val_images}-b{config.batch_size}-seed{config.seed}.json"
    return os.path.join(config.runs_dir, "proxy-check", name)


def load_records(path: str) -> dict[str, CheckRecord]:
    from search_spaces.files import DamagedFile, read_json

    try:
        document = read_json(path, {})
    except DamagedFile as error:
        raise ConfigError(str(error)) from None
    return {r["arch"]: CheckRecord(**r) for r in document.get("records", [])}


def save_records(path: str, records: dict[str, CheckRecord], settings: dict, *, summary: dict | None = None) -> None:
    from search_spaces.files import code_version, write_text_atomic

    document = {"settings": settings | {"code": code_version()}, "records": [asdict(r) for r in records.values()]}
    if summary is not None:
        agreement = summary["agreement"]
        document["summary"] = {"n": summary["n"], "seconds": summary["seconds"]}
        if agreement is not None:
            document["summary"] |= asdict(agreement)
            document["summary"]["estimators"] = {k: asdict(v) for k, v in summary["estimators"].items()}
            document["summary"]["error_trend"] = {k: asdict(v) for k, v in summary["error_trend"].items()}
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")


_DATASETS: dict = {}


def _final(config: SearchConfig, arch: str, budget: FinalBudget, *, train: bool = True, on_epoch=None) -> dict | None:
    """The final validation accuracy of `arch` under the retraining recipe (in this process,
    resumable per epoch, in the folder `nas retrain` / `nas compare` use); without `train`, only a
    finished one (else None). None too while another process trains it: it is left to that one, and
    the check run again takes its result."""
    from nas.choice import retrain_dir
    from search_spaces import ArchSpec
    from search_spaces.files import Busy
    from trainers.cifar import load_cifar
    from trainers.full import load_result, retrain

    spec = ArchSpec.from_string(arch)
    workdir = retrain_dir(config.runs_dir, dataset=config.dataset, recipe=budget.recipe, arch_id=spec.arch_id)
    result = load_result(workdir)
    if result is None and not train:
        return None
    if result is None:
        if config.dataset not in _DATASETS:
            _DATASETS[config.dataset] = load_cifar(config.dataset, data_dir=config.data_dir)
        try:
            result = retrain(spec, _DATASETS[config.dataset], recipe=budget.recipe, workdir=workdir, on_epoch=on_epoch)
        except Busy as busy:
            log.warning("%s: %s; this check goes on without it", spec.arch_id, busy)
            return None
    return {"accuracy": result.val_accuracy, "seconds": round(result.train_seconds, 2), "epochs": result.epochs_run}


def run_check(
    config: SearchConfig,
    *,
    count: int,
    proxy: Budget,
    long: Budget | FinalBudget,
    references: tuple[str, ...] = (),
    study=None,
    trials: tuple[int, ...] = (),
    path: str | None = None,
    proxies_only: bool = False,
    on_result: Callable[[CheckRecord, Budget, dict], None] | None = None,
    on_epoch: Callable | None = None,
) -> tuple[str, dict[str, CheckRecord]]:
    """Train every candidate at both budgets (skipping what the result file already holds); with
    `proxies_only`, the long budget only where it is already finished (a final another process
    trains is left to it: two trainings of one model would share its checkpoint)."""
    from nas.worker import WORKER_LOG, Status, TrialJob, TrialRunner

    path = path or result_path(config)
    records = load_records(path)
    settings = {
        "space": config.space,
        "width": config.width,
        "dataset": config.dataset,
        "val_images": config.val_images,
        "batch_size": config.batch_size,
        "seed": config.seed,
    }
    log_path = os.path.join(config.runs_dir, WORKER_LOG)
    with TrialRunner(trials_per_worker=config.trials_per_worker, log_path=log_path) as runner:
        for name, arch, latency_ms in candidates(config, count, references=references, study=study, trials=trials):
            record = records.setdefault(arch, CheckRecord(name=name, arch=arch))
            record.latency_ms = latency_ms if latency_ms is not None else record.latency_ms
            for budget in (proxy, long):
                earlier = record.results.get(budget.label)
                if earlier is not None and not _retry(earlier):
                    continue
                start = time.perf_counter()
                if isinstance(budget, FinalBudget):
                    final = _final(config, arch, budget, train=not proxies_only, on_epoch=on_epoch)
                    if final is None:
                        continue
                    record.results[budget.label] = final
                    save_records(path, records, settings, summary=summarize(records, proxy, long))
                    if on_result:
                        on_result(record, budget, record.results[budget.label])
                    continue
                if proxies_only and budget is long:
                    continue
                job = TrialJob.from_config(config, arch=arch, train_images=budget.train_images, epochs=budget.epochs)
                outcome = runner.run(job, timeout_s=config.trial_timeout_s)
                result = {"seconds": round(time.perf_counter() - start, 2)}
                if outcome.status is Status.OK:
                    result |= {
                        "accuracy": outcome.accuracy,
                        "params_count": outcome.params_count,
                        "train_seconds": round(outcome.timings["train_seconds"], 2),
                        "train_loss_mean": outcome.train_loss_mean,
                        "train_loss_late_mean": outcome.train_loss_late_mean,
                        "curve": [list(point) for point in outcome.curve],
                    }
                else:
                    result["error"] = outcome.reason
                if earlier is not None:
                    result["attempts"] = earlier.get("attempts", 1) + 1
                record.results[budget.label] = result
                save_records(path, records, settings, summary=summarize(records, proxy, long))
                if on_result:
                    on_result(record, budget, result)
    return path, records


#: a failed run (a timeout on a loaded machine, a crashed worker) is tried again when the check is run
#: again, up to this many attempts in all; then it stays failed with its reason
MAX_ATTEMPTS = 2


def _retry(result: dict) -> bool:
    return "error" in result and result.get("attempts", 1) < MAX_ATTEMPTS


#: what a proxy run can rank by, each oriented so that higher means better: name -> value of a proxy result
ESTIMATORS = {
    "proxy accuracy": lambda result: result.get("accuracy"),
    "accuracy half-way": lambda result: next((a for f, a in result.get("curve", []) if abs(f - 0.5) < 1e-6), None),
    "- mean training loss": lambda result: None if result.get("train_loss_mean") is None else -result["train_loss_mean"],
    "- late training loss": lambda result: (
        None if result.get("train_loss_late_mean") is None else -result["train_loss_late_mean"]
    ),
}


def summarize(records: dict[str, CheckRecord], proxy: Budget, long) -> dict:
    """Rank agreement over the candidates that finished at both budgets (for the proxy's accuracy,
    and for every other estimator the results hold), whether the proxy's ranking error trends with
    size or latency, and the time spent."""
    from results.ranking import agreement, error_trend

    done = [
        r
        for r in records.values()
        if "accuracy" in r.results.get(proxy.label, {}) and "accuracy" in r.results.get(long.label, {})
    ]
    seconds = {b.label: sum(r.results.get(b.label, {}).get("seconds", 0.0) for r in records.values()) for b in (proxy, long)}
    summary = {"n": len(done), "seconds": seconds, "agreement": None, "estimators": {}, "error_trend": {}}
    if len(done) < 3:
        return summary
    final = [r.results[long.label]["accuracy"] for r in done]
    summary["agreement"] = agreement([r.results[proxy.label]["accuracy"] for r in done], final)
    for name, value_of in ESTIMATORS.items():
        values = [value_of(r.results[proxy.label]) for r in done]
        if all(v is not None for v in values):
            summary["estimators"][name] = agreement(values, final)
    proxied = [r.results[proxy.label]["accuracy"] for r in done]
    for name, values in (
        ("params", [r.results[proxy.label].get("params_count") for r in done]),
        ("latency", [r.latency_ms for r in done]),
    ):
        trend = error_trend(proxied, final, values)
        if trend is not None:
            summary["error_trend"][name] = trend
    return summary


def format_check(records: dict[str, CheckRecord], proxy: Budget, long) -> str:
    records = {k: r for k, r in records.items() if proxy.label in r.results or long.label in r.results}
    from search_spaces import ArchSpec

    lines = [f"{'candidate':<16} {'arch_id':<13} {'proxy acc':>9} {'long acc':>9} {'proxy s':>8} {'long s':>8}"]

    def cell(result: dict, key: str, fmt: str) -> str:
        return format(result[key], fmt) if key in result else ("failed" if "error" in result else "-")

    for r in sorted(records.values(), key=lambda r: -r.results.get(long.label, {}).get("accuracy", -1)):
        p, q = r.results.get(proxy.label, {}), r.results.get(long.label, {})
        arch_id = ArchSpec.from_string(r.arch).arch_id
        accuracies = f"{cell(p, 'accuracy', '.4f'):>9} {cell(q, 'accuracy', '.4f'):>9}"
        lines.append(f"{r.name:<16} {arch_id:<13} {accuracies} {cell(p, 'seconds', '.0f'):>8} {cell(q, 'seconds', '.0f'):>8}")
    summary = summarize(records, proxy, long)
    lines.append("")
    if summary["agreement"] is None:
        lines.append(f"{summary['n']} candidates finished both budgets: too few to compare rankings")
    else:
        lines.append(f"proxy {proxy.label} vs long {long.label} images x epochs: {summary['agreement'].describe()}")
        for name, found in summary["estimators"].items():
            lines.append(f"  ranked by {name:<22} {found.describe()}")
        for name, found in summary["error_trend"].items():
            lines.append(f"  proxy rank minus final rank against {name}: {found.describe()} (0: no trend)")
    lines.append(
        "time: "
        + ", ".join(f"{label} {seconds / 60:.1f} min" for label, seconds in summary["seconds"].items())
        + f" (median per candidate: proxy {_median_seconds(records, proxy):.0f} s, long {_median_seconds(records, long):.0f} s)"
    )
    return "\n".join(lines)


def _median_seconds(records: dict[str, CheckRecord], budget: Budget) -> float:
    import statistics

    values = [r.results[budget.label]["seconds"] for r in records.values() if budget.label in r.results]
    return statistics.median(values) if values else 0.0
