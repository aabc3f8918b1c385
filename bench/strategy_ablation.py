"""What each part of the latency-aware strategy buys, where the true front is known.

The strategy's own selection (`nas.selection.LatencyAwareSampler.select`) runs on NAS-Bench-201
cells with table latencies, variant by variant, each with one part removed; its picks are scored
from the tables as the search would score them, and the hypervolume regret 1 - HV/HV* is read at 25,
50, 100 and 200 evaluations (reference: accuracy 85 % and the slowest latency among the cells above
it, as in bench/sampler_efficiency.py). It skips the study storage, which makes it fast enough to
try every variant; the strategy table of bench/sampler_efficiency.py runs through the whole search.

    oracle       the true accuracies as the surrogate (no uncertainty): what the acquisition can reach
    full         the default
    no-warm      a random start instead of the training-free spread over latency bands
    greedy       the surrogate's mean only (no uncertainty)
    pool-64      64 random candidates scored per trial instead of every cell
    no-features  the surrogate without the cells' training-free description (choices and latency only)

    python bench/strategy_ablation.py [--devices pixel3 raspi4 gold_6226 fpga] [--seeds 5] [--budget 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from latency.measure import LatencyResult  # noqa: E402
from nas.config import SearchConfig  # noqa: E402
from nas.evaluators import TableEvaluator  # noqa: E402
from nas.selection import LatencyAwareSampler  # noqa: E402
from results.pareto import hypervolume_of  # noqa: E402
from results.record import TrialRecord  # noqa: E402
from search_spaces import Nb201Space  # noqa: E402
from search_spaces.files import code_version, read_json, write_text_atomic  # noqa: E402

TABLE = os.path.join(os.path.dirname(ROOT), "shared", "nb201-hw", "latency_ms.csv.gz")
CHECKPOINTS = (25, 50, 100, 200)
VARIANTS = {
    "oracle": {},
    "full": {},
    "no-warm": {"warm_start": False},
    "greedy": {"exploration": 0.0},
    "pool-64": {"score_all": False, "pool": 64},
    "no-features": {},
}


class _Study:
    """What the selection reads of a study: its trials (and a storage that takes its bookkeeping)."""

    def __init__(self):
        self.trials: list = []

    def get_trials(self, deepcopy=False, states=None):
        return self.trials


def _oracle(accuracy_of_codes: dict):
    class Oracle:
        """The table's accuracy of every candidate, certain: the acquisition alone decides."""

        hyper = None

        def __init__(self, features, codes, y, *, hyper=None):
            pass

        def predict(self, features, codes):
            return np.array([accuracy_of_codes[tuple(c)] for c in codes]), np.zeros(len(codes))

    return Oracle


def run(device: str, variant: str, seed: int, *, budget: int) -> list[tuple[float, float]]:
    space = Nb201Space()
    config = SearchConfig(space="nb201", device=f"table:{TABLE}:{device}")
    evaluator = TableEvaluator.from_config(config)
    describe = space.describe if variant != "no-features" else (lambda cell: replace(space.describe(cell), features=()))
    sampler = LatencyAwareSampler(
        space=space, evaluator=evaluator, describe=describe, reference_latency_ms=evaluator.max_latency_ms,
        reference_accuracy=1.0 / config.num_classes, seed=seed, **VARIANTS[variant],
    )  # fmt: skip
    if variant == "oracle":
        codes = {n: {v: k for k, v in enumerate(c)} for n, c in space.choices().items()}
        table = {}
        for cell_string in evaluator.table.latencies_ms:
            cell = space.parse(cell_string)
            params = space.params_of(cell)
            table[tuple(codes[n][params[n]] for n in codes)] = evaluator.accuracies[cell.key]
        sampler.surrogate = _oracle(table)
    study = _Study()
    distributions = {n: optuna.distributions.CategoricalDistribution(list(c)) for n, c in space.choices().items()}
    points = []
    for number in range(budget):
        params = sampler.select(study).params
        cell = space.from_params(params)
        latency = evaluator.latency(cell).median_ms
        accuracy = evaluator.accuracy(cell, latency_ms=latency).accuracy
        record = TrialRecord(arch=cell.to_string(), arch_id=cell.arch_id, accuracy=accuracy, latency=LatencyResult.exact(latency))
        trial = optuna.trial.create_trial(
            params=params, distributions=distributions, values=[accuracy, latency], user_attrs=record.to_user_attrs()
        )
        trial.number = number
        study.trials.append(trial)
        points.append((latency, accuracy))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["pixel3", "raspi4", "gold_6226", "fpga"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "data", "strategy_ablation.json"))
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args()
    document = read_json(args.out, {"runs": []})
    code = code_version()  # what this process imported (the tree may change while it runs)
    if not args.show:
        done = {(r["device"], r["variant"], r["seed"], r["budget"]) for r in document["runs"]}
        for device in args.devices:
            evaluator = TableEvaluator.from_config(SearchConfig(space="nb201", device=f"table:{TABLE}:{device}"))
            everything = [(ms, evaluator.accuracies[Nb201Space().parse(a).key]) for a, ms in evaluator.table.latencies_ms.items()]
            reference = (0.85, max(ms for ms, acc in everything if acc > 0.85))
            hv_star = hypervolume_of(everything, reference=reference)
            for variant in args.variants:
                for seed in range(args.seeds):
                    if (device, variant, seed, args.budget) in done:
                        continue
                    started = time.perf_counter()
                    points = run(device, variant, seed, budget=args.budget)
                    regret = {
                        n: 1 - hypervolume_of(points[:n], reference=reference) / hv_star for n in CHECKPOINTS if n <= len(points)
                    }
                    document["runs"].append(
                        {"device": device, "variant": variant, "seed": seed, "budget": args.budget, "regret": regret,
                         "seconds": time.perf_counter() - started, "code": code}
                    )  # fmt: skip
                    write_text_atomic(args.out, json.dumps(document, indent=1) + "\n")
                    print(
                        f"{device:<10} {variant:<12} seed {seed}: " + " ".join(f"@{n} {v:.3f}" for n, v in regret.items()),
                        flush=True,
                    )
    print(format_table(document))


def format_table(document: dict) -> str:
    cells: dict = {}
    for run in document["runs"]:
        for n, value in run["regret"].items():
            cells.setdefault((run["device"], run["variant"]), {}).setdefault(int(n), []).append(value)
    header = f"{'device':<10} {'variant':<12} " + " ".join(f"{'@' + str(n):>14}" for n in CHECKPOINTS)
    lines = [header, "-" * len(header)]
    for (device, variant), by_n in cells.items():
        figures = [f"{np.mean(by_n[n]):.3f} +- {np.std(by_n[n]):.3f}" if n in by_n else "-" for n in CHECKPOINTS]
        lines.append(f"{device:<10} {variant:<12} " + " ".join(f"{f:>14}" for f in figures))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
