"""Kill a real search at random moments and check that nothing is lost.

A search with a tiny budget (real CIFAR-10, real workers, SQLite, the latency cache, trials.csv)
is started, killed after a random delay (so the kill lands in training, conversion, measurement,
SQLite, CSV or cache writes alike), and restarted, `--kills` times; then it runs to the end. The
same again with SIGINT (Ctrl-C) instead of SIGKILL. Afterwards it checks and prints:

- finished trials lost: a trial that was COMPLETE before a kill and is not, with the same values, after
- duplicated: an architecture completed twice by training (reuses of a finished trial are not training)
- trial numbers 0..n-1 without gaps, and trials.csv holding exactly one row per trial
- trials.csv, the latency cache and the study all parse
- the final count of completed trials is the one asked for

    python bench/chaos.py --data-dir data [--kills 20] [--trials 12]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TINY = ["--train-images", "256", "--val-images", "200", "--batch-size", "64", "--latency-runs", "20", "--latency-warmup", "5"]


def completed(storage: str, study: str) -> dict[int, tuple]:
    """Every complete trial by number: its values, and whether it was reused (reuses do not count
    towards --trials)."""
    import optuna

    from results.record import TrialRecord

    if not os.path.exists(storage[len("sqlite:///") :]):
        return {}
    try:
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return {}
    return {
        t.number: (tuple(t.values), TrialRecord.from_trial(t).reused_from is not None)
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
    }


def new_architectures(storage: str, study: str) -> int:
    return sum(not reused for _, reused in completed(storage, study).values())


def run(signum: int, *, kills: int, trials: int, data_dir: str, seed: int) -> dict:
    import optuna

    from results.record import TrialRecord

    rng = random.Random(seed)
    name = f"chaos-{signal.Signals(signum).name.lower()}"
    with tempfile.TemporaryDirectory() as workdir:
        runs = os.path.join(workdir, "runs")
        storage = f"sqlite:///{runs}/{name}/study.db"
        base = [sys.executable, "-m", "nas.cli", "search", "--study-name", name, "--runs-dir", runs, "--data-dir", data_dir]
        lost, delays, exits = 0, [], []
        for _ in range(kills):
            before = completed(storage, name)
            remaining = trials - new_architectures(storage, name)
            if remaining <= 0:
                break
            process = subprocess.Popen(
                [*base, *TINY, "--trials", str(remaining)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            delay = rng.uniform(2.0, 25.0)  # start-up takes ~6 s; a tiny trial ~5-10 s
            time.sleep(delay)
            process.send_signal(signum)
            process.wait(timeout=120)
            delays.append(round(delay, 1))
            exits.append(process.returncode)
            after = completed(storage, name)
            lost += sum(1 for number, values in before.items() if after.get(number) != values)
        final = subprocess.run(
            [*base, *TINY, "--trials", str(max(0, trials - new_architectures(storage, name)))],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        study = optuna.load_study(study_name=name, storage=storage)
        all_trials = study.get_trials(deepcopy=False)
        records = [(t, TrialRecord.from_trial(t)) for t in all_trials]
        trained = [r.arch_id for t, r in records if t.state.name == "COMPLETE" and r.reused_from is None]
        with open(os.path.join(runs, name, "trials.csv")) as f:
            rows = list(csv.DictReader(f))
        with open(os.path.join(runs, "latency_cache.json")) as f:
            cache = json.load(f)
        return {
            "signal": signal.Signals(signum).name,
            "kills": len(delays),
            "delays_s": delays,
            "exit_codes": sorted(set(exits)),
            "final_exit": final.returncode,
            "lost": lost,
            "duplicated": len(trained) - len(set(trained)),
            "numbers_consecutive": [t.number for t in all_trials] == list(range(len(all_trials))),
            "csv_rows_match": [int(r["number"]) for r in rows] == [t.number for t in all_trials],
            "cache_entries": len(cache),
            "completed": len(trained),
            "asked": trials,
            "failed_interrupted": sum(r.fail_reason.startswith("interrupted") for t, r in records if t.state.name == "FAIL"),
            "retried": sum(r.retry_of is not None for _, r in records),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    results = [
        run(signum, kills=args.kills, trials=args.trials, data_dir=os.path.abspath(args.data_dir), seed=args.seed)
        for signum in (signal.SIGKILL, signal.SIGINT)
    ]
    for r in results:
        ok = r["lost"] == 0 and r["duplicated"] == 0 and r["numbers_consecutive"] and r["csv_rows_match"]
        ok = ok and r["completed"] == r["asked"] and r["final_exit"] == 0
        print(
            f"{r['signal']}: {r['kills']} kills (after {min(r['delays_s']):.0f}-{max(r['delays_s']):.0f} s; exit codes "
            f"{r['exit_codes']}), then a final run (exit {r['final_exit']})\n"
            f"  finished trials lost {r['lost']}, duplicated {r['duplicated']}; trial numbers consecutive "
            f"{r['numbers_consecutive']}; trials.csv rows match {r['csv_rows_match']}; latency cache parses "
            f"({r['cache_entries']} entries)\n"
            f"  completed {r['completed']} of {r['asked']} asked; {r['failed_interrupted']} trials failed as interrupted, "
            f"{r['retried']} retries  -> {'OK' if ok else 'FAILED'}"
        )
    print(f"\n{(time.perf_counter() - started) / 60:.1f} min")
    out = os.path.join(ROOT, "bench", "data", "chaos.json")
    from search_spaces.files import write_text_atomic

    write_text_atomic(out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
