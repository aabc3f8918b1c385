"""`nas proxy-check`: does the proxy budget rank architectures the way a longer budget does?

K architectures drawn at random from the space, plus the reference architectures, are each
short-trained at the proxy budget and at a longer one (default 10x the image-passes) with the
same data, split and seed; the two rankings of held-out accuracy are compared with Kendall's tau
and Spearman's rho and their bootstrap intervals. Every result is appended to a JSON file as
it arrives, so an interrupted check resumes, a finished one can be re-read, and checks of other
proxy budgets against the same long budget reuse its results.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from nas.config import ConfigError, SearchConfig
from search_spaces import REFERENCES, get_space, reference


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


@dataclass
class CheckRecord:
    name: str  # a reference name or "sample-K"
    arch: str
    results: dict = field(default_factory=dict)  # budget label -> {"accuracy", "seconds", ...}


def candidates(config: SearchConfig, count: int, *, with_references: bool) -> list[tuple[str, str]]:
    """(name, arch string): `count` random architectures of the space, then the references."""
    from nas.latency_fit import random_architectures

    chosen = [(f"sample-{k}", spec.to_string()) for k, spec in enumerate(random_architectures(config, count, seed=config.seed))]
    if with_references:
        space = get_space(config.space, width=config.width)
        chosen += [(name, reference(name).to_string()) for name in REFERENCES if space.mobilevit or "mobilevit" not in name]
    return chosen


def result_path(config: SearchConfig) -> str:
    """One file per space, data split, batch and seed, holding every budget's results per
    architecture: checks of several proxies against one long budget train the long one once."""
    name = f"{config.space}-w{config.width:g}-{config.dataset}-val{config.val_images}-b{config.batch_size}-seed{config.seed}.json"
    return os.path.join(config.runs_dir, "proxy-check", name)


def load_records(path: str) -> dict[str, CheckRecord]:
    try:
        with open(path) as f:
            document = json.load(f)
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not a proxy-check result ({error}); move it away to start again") from None
    return {r["arch"]: CheckRecord(**r) for r in document.get("records", [])}


def save_records(path: str, records: dict[str, CheckRecord], settings: dict) -> None:
    from results.pareto import write_text_atomic

    document = {"settings": settings, "records": [asdict(r) for r in records.values()]}
    write_text_atomic(path, json.dumps(document, indent=1))


def run_check(
    config: SearchConfig,
    *,
    count: int,
    proxy: Budget,
    long: Budget,
    with_references: bool = True,
    on_result: Callable[[CheckRecord, Budget, dict], None] | None = None,
) -> tuple[str, dict[str, CheckRecord]]:
    """Train every candidate at both budgets (skipping what the result file already holds)."""
    from nas.worker import WORKER_LOG, TrialJob, TrialRunner

    path = result_path(config)
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
        for name, arch in candidates(config, count, with_references=with_references):
            record = records.setdefault(arch, CheckRecord(name=name, arch=arch))
            for budget in (proxy, long):
                if budget.label in record.results:
                    continue
                start = time.perf_counter()
                job = TrialJob.from_config(
                    config,
                    arch=arch,
                    tflite_path="",
                    train_images=budget.train_images,
                    epochs=budget.epochs,
                    measure_latency=False,
                )
                outcome = runner.run(job)
                result = {"seconds": round(time.perf_counter() - start, 2)}
                if outcome.status == "ok":
                    result |= {"accuracy": outcome.accuracy, "train_seconds": round(outcome.timings["train_seconds"], 2)}
                else:
                    result["error"] = outcome.reason
                record.results[budget.label] = result
                save_records(path, records, settings)
                if on_result:
                    on_result(record, budget, result)
    return path, records


def summarize(records: dict[str, CheckRecord], proxy: Budget, long: Budget) -> dict:
    """Rank agreement over the candidates that finished at both budgets, and the time spent."""
    from results.ranking import agreement

    done = [
        r
        for r in records.values()
        if "accuracy" in r.results.get(proxy.label, {}) and "accuracy" in r.results.get(long.label, {})
    ]
    seconds = {b.label: sum(r.results.get(b.label, {}).get("seconds", 0.0) for r in records.values()) for b in (proxy, long)}
    summary = {"n": len(done), "seconds": seconds, "agreement": None}
    if len(done) >= 3:
        summary["agreement"] = agreement(
            [r.results[proxy.label]["accuracy"] for r in done], [r.results[long.label]["accuracy"] for r in done]
        )
    return summary


def format_check(records: dict[str, CheckRecord], proxy: Budget, long: Budget) -> str:
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
