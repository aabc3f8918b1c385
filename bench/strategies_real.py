"""Search strategies on the real space, side by side: the same wall-clock budget for each, real
proxy training on CIFAR-10 and real LiteRT latency on this machine.

Each (strategy, seed) runs `nas search --timeout` in a runs folder of its own (no latency cache
shared between runs, so no run profits from another's measurements). The strategies of one seed run
at the same time (`--together`, the default: whatever else loads the machine loads each of them alike,
and so do they each other, latency measurements included) or one after the other (`--one-by-one`). The
hypervolume of the (proxy accuracy, latency) front is read at 25, 50, 75 and 100 % of the
budget, with one reference point for all runs: accuracy 0 and 1.1 x the slowest latency any run
measured.

    python bench/strategies_real.py --data-dir data --minutes 30 --seeds 0 1
    python bench/strategies_real.py --show      # the table of what is recorded

Results go to bench/data/strategies_real.json after every run; a finished (strategy, seed) is not
run again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from search_spaces.files import read_json, write_text_atomic  # noqa: E402

DATA_FILE = os.path.join(ROOT, "bench", "data", "strategies_real.json")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def load(path: str) -> dict:
    return read_json(path, {"runs": {}})


def start(strategy: str, seed: int, *, minutes: float, data_dir: str, runs_root: str):
    """(the running search, its runs folder, its start time); a folder an unrecorded run left is removed
    first, so that no run resumes another's study."""
    runs = os.path.join(runs_root, f"{strategy}-{seed}")
    shutil.rmtree(runs, ignore_errors=True)
    command = [sys.executable, "-m", "nas.cli", "search", "--strategy", strategy, "--seed", str(seed)]
    command += ["--trials", "100000", "--timeout", str(minutes * 60), "--data-dir", data_dir, "--runs-dir", runs]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL), runs, time.time()


def result(runs: str, started: float, *, minutes: float, code: str) -> dict:
    """The run's front over time; `code` is the version it was started with (the tree may change while it runs)."""
    import optuna

    from latency.fingerprint import host_fingerprint
    from results.record import TrialRecord

    study = optuna.load_study(study_name="mnasnet-cifar10", storage=f"sqlite:///{runs}/mnasnet-cifar10/study.db")
    points = []
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.from_trial(trial)
        if trial.state.name == "COMPLETE" and record.accuracy is not None and trial.datetime_complete:
            points.append((trial.datetime_complete.timestamp() - started, record.latency_ms, record.accuracy))
    machine = f"{os.uname().nodename}, {host_fingerprint(threads=1)['cpu']}"
    return {"minutes": minutes, "points": points, "trials": len(study.trials), "code": code, "machine": machine}


def table(document: dict) -> str:
    from results.pareto import hypervolume_of

    runs = document["runs"]
    slowest = max((lat for r in runs.values() for _, lat, _ in r["points"]), default=1.0)
    reference = (0.0, 1.1 * slowest)
    lines = [
        f"hypervolume of the (proxy accuracy, latency) front at 25/50/75/100 % of the time; reference point: accuracy 0, "
        f"{reference[1]:.3f} ms",
        f"{'strategy':<14} {'seed':>4} {'trials':>6} " + " ".join(f"{int(100 * f):>7}%" for f in FRACTIONS),
    ]
    by_strategy: dict = {}
    for key, r in sorted(runs.items()):
        strategy, seed = key.rsplit("-", 1)
        budget = 60 * r["minutes"]
        volumes = [
            hypervolume_of([(lat, acc) for t, lat, acc in r["points"] if t <= f * budget], reference=reference) for f in FRACTIONS
        ]
        by_strategy.setdefault(strategy, []).append(volumes)
        lines.append(f"{strategy:<14} {seed:>4} {r['trials']:>6} " + " ".join(f"{v:8.4f}" for v in volumes))
    for strategy, rows in by_strategy.items():
        means = [statistics.mean(col) for col in zip(*rows, strict=True)]
        lines.append(f"{strategy:<14} {'mean':>4} {'':>6} " + " ".join(f"{v:8.4f}" for v in means))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--runs-dir", default=os.path.join(ROOT, "runs", "strategies"))
    parser.add_argument("--strategies", nargs="+", default=["latency-aware", "tpe", "random"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--one-by-one", dest="together", action="store_false", help="one strategy at a time")
    parser.add_argument("--out", default=DATA_FILE)
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args()
    from search_spaces.files import code_version

    code = code_version()  # what the searches start with
    document = load(args.out)
    options = {"minutes": args.minutes, "data_dir": os.path.abspath(args.data_dir), "runs_root": args.runs_dir}
    for seed in [] if args.show else args.seeds:
        todo = [s for s in args.strategies if f"{s}-{seed}" not in document["runs"]]
        # interleaved (one by one) or at once: a drift of the machine's speed touches every strategy
        for group in [todo] if args.together else [[s] for s in todo]:
            running = {strategy: start(strategy, seed, **options) for strategy in group}
            for strategy, (process, runs, started) in running.items():
                if process.wait() != 0:
                    raise SystemExit(f"{strategy}-{seed}: nas search failed (exit {process.returncode}); see {runs}")
                document["runs"][f"{strategy}-{seed}"] = result(runs, started, minutes=args.minutes, code=code)
                write_text_atomic(args.out, json.dumps(document, indent=1) + "\n")
                print(f"{strategy}-{seed}: {document['runs'][f'{strategy}-{seed}']['trials']} trials", flush=True)
    print(table(document))


if __name__ == "__main__":
    main()
