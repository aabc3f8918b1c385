"""What multi-objective early stopping buys: two searches with the same settings, seed and
wall-clock budget, `--early-stop off` and `on`, run at the same time (each gets one of the two
cores, so both see the same machine), side by side: trials per hour, how many were stopped early,
and the hypervolume of the front reached (one reference point for both: accuracy 0, 1.1 x the
slowest latency either measured) at the end and at fractions of the budget.

    python bench/early_stop.py --data-dir data [--minutes 12] [--train-images 8000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import optuna

from results.pareto import hypervolume, trial_row
from results.record import TrialRecord


def start(mode: str, args, runs: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "nas.cli", "search", "--early-stop", mode, "--timeout", str(60 * args.minutes),
        "--trials", "10000", "--data-dir", args.data_dir, "--runs-dir", runs, "--seed", str(args.seed),
        "--train-images", str(args.train_images), "--strategy", args.strategy,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--minutes", type=float, default=12)
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--strategy", default="tpe")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies = {}
    with tempfile.TemporaryDirectory() as off_runs, tempfile.TemporaryDirectory() as on_runs:
        print(f"two {args.minutes:g} min searches side by side, early stopping off and on ...", flush=True)
        searches = {mode: (start(mode, args, runs), runs) for mode, runs in (("off", off_runs), ("on", on_runs))}
        for mode, (process, runs) in searches.items():
            if process.wait() != 0:
                sys.exit(f"the search with early stopping {mode} failed")
            storage = f"sqlite:///{runs}/mnasnet-cifar10/study.db"
            study = optuna.load_study(study_name="mnasnet-cifar10", storage=storage)
            studies[mode] = study.get_trials()  # read now: the folders go when the block ends
    rows = {mode: [trial_row(t) for t in trials] for mode, trials in studies.items()}
    latencies = [r.latency_ms for rs in rows.values() for r in rs if r.measured]
    reference = (0.0, 1.1 * max(latencies))
    print(f"\n{args.minutes:g} min each, {args.train_images} images x 1 epoch, strategy {args.strategy}, seed {args.seed}")
    print(f"hypervolume reference: accuracy 0, latency {reference[1]:.3f} ms\n")
    fractions = (0.25, 0.5, 0.75, 1.0)
    header = " ".join(f"{'HV@' + format(f, '.0%'):>8}" for f in fractions)
    print(f"{'early stop':<11} {'trials':>6} {'per hour':>8} {'complete':>8} {'stopped':>7} {header}")
    print("(trials, complete and stopped count everything finished; per hour and HV only what finished in the budget)")
    for mode, all_trials in studies.items():
        trials = [t for t in all_trials if t.datetime_complete]
        began = min(t.datetime_start for t in trials)
        by_time = sorted(trials, key=lambda t: t.datetime_complete)
        stopped = sum("early-stopped" in TrialRecord.from_trial(t).fail_reason for t in trials)
        complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        volumes = []
        for fraction in fractions:
            cutoff = fraction * 60 * args.minutes
            done = [trial_row(t) for t in by_time if (t.datetime_complete - began).total_seconds() <= cutoff]
            volumes.append(hypervolume(done, reference=reference))
        in_budget = sum((t.datetime_complete - began).total_seconds() <= 60 * args.minutes for t in trials)
        per_hour = in_budget / (args.minutes / 60)
        print(
            f"{mode:<11} {len(trials):>6} {per_hour:>8.0f} {complete:>8} {stopped:>7} " + " ".join(f"{v:>8.4f}" for v in volumes)
        )


if __name__ == "__main__":
    main()
