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

    if storage.startswith("sqlite:///") and not os.path.exists(storage[len("sqlite:///") :]):
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


def study_checks(storage: str, name: str, runs: str) -> dict:
    """What is checked after the last run: duplicates, trials left RUNNING, numbering, trials.csv
    and the latency cache parsing, interrupted and retried trials; `trained` = new complete ones."""
    import optuna

    from nas.searching import was_interrupted
    from results.record import TrialRecord

    all_trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    records = [(t, TrialRecord.from_trial(t)) for t in all_trials]
    trained = [r.arch_id for t, r in records if t.state.name == "COMPLETE" and r.reused_from is None]
    with open(os.path.join(runs, name, "trials.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(runs, "latency_cache.json")) as f:
        cache = json.load(f)
    return {
        "duplicated": len(trained) - len(set(trained)),
        "running_left": sum(t.state.name == "RUNNING" for t in all_trials),
        "numbers_consecutive": [t.number for t in all_trials] == list(range(len(all_trials))),
        "csv_rows_match": [int(r["number"]) for r in rows] == [t.number for t in all_trials],
        "cache_entries": len(cache),
        "failed_interrupted": sum(was_interrupted(r) for t, r in records if t.state.name == "FAIL"),
        "retried": sum(r.retry_of is not None for _, r in records),
        "trained": len(trained),
    }


def run(signum: int, *, kills: int, trials: int, data_dir: str, seed: int) -> dict:

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
        after_all = study_checks(storage, name, runs)
        trained = after_all.pop("trained")
        return {
            "signal": signal.Signals(signum).name,
            "kills": len(delays),
            "delays_s": delays,
            "exit_codes": sorted(set(exits)),
            "final_exit": final.returncode,
            "lost": lost,
            **after_all,
            "completed": trained,
            "asked": trials,
        }


def run_shared(*, kills: int, trials: int, data_dir: str, seed: int) -> dict:
    """Two workers on one study on a real PostgreSQL server, `--study-trials` between them; `kills`
    times, one of them (at random) SIGKILLed at a random moment and restarted. Then both run to the
    end, and once a dead worker's last trial has gone stale (its heartbeat stopped), one more run
    fails and retries it and finishes the budget."""
    import optuna

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from helpers import temporary_postgres

    from nas.searching import study_evaluations
    from nas.storage import HEARTBEAT_SECONDS

    rng = random.Random(seed)
    name = "chaos-postgres"
    with temporary_postgres() as url, tempfile.TemporaryDirectory() as workdir:
        runs = os.path.join(workdir, "runs")
        command = [
            sys.executable, "-m", "nas.cli", "search", "--study-name", name, "--storage", url, "--runs-dir", runs,
            "--data-dir", data_dir, *TINY, "--study-trials", str(trials),
        ]  # fmt: skip

        def start(k: int) -> subprocess.Popen:
            # each worker's output in a file of its own: a pipe nobody reads would block it
            with open(os.path.join(workdir, f"worker{k}.log"), "a") as log:
                return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

        workers = [start(k) for k in range(2)]
        lost, delays, killed = 0, [], []
        while len(delays) < kills:
            delay = rng.uniform(2.0, 25.0)
            time.sleep(delay)
            alive = [k for k, worker in enumerate(workers) if worker.poll() is None]
            if not alive:  # both finished the budget before every kill landed
                break
            k = rng.choice(alive)
            before = completed(url, name)
            workers[k].send_signal(signal.SIGKILL)
            workers[k].wait(timeout=60)
            delays.append(round(delay, 1))
            killed.append(k)
            after = completed(url, name)
            lost += sum(1 for number, values in before.items() if after.get(number) != values)
            workers[k] = start(k)
        exits = [w.wait(timeout=3600) for w in workers]
        time.sleep(4 * HEARTBEAT_SECONDS + 10)  # the grace period: a killed worker's trial is stale now
        final = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        study = optuna.load_study(study_name=name, storage=url)
        after_all = study_checks(url, name, runs)
        del after_all["trained"]  # with a study budget, every new evaluation counts, not only complete ones
        return {
            "scenario": "2 workers, PostgreSQL",
            "signal": "SIGKILL",
            "kills": len(delays),
            "killed_worker": killed,
            "delays_s": delays,
            "exit_codes": sorted({-9, *exits}) if delays else sorted(set(exits)),
            "final_exit": final.returncode,
            "lost": lost,
            **after_all,
            "completed": study_evaluations(study.get_trials(deepcopy=False)),
            "asked": trials,
        }


def verdict(r: dict) -> bool:
    ok = r["lost"] == 0 and r["duplicated"] == 0 and r["numbers_consecutive"] and r["csv_rows_match"]
    return ok and r.get("running_left", 0) == 0 and r["completed"] == r["asked"] and r["final_exit"] == 0


def report(r: dict) -> str:
    running = f", {r['running_left']} left RUNNING" if "running_left" in r else ""
    return (
        f"{r.get('scenario', SINGLE)}, {r['signal']}: {r['kills']} kills (after {min(r['delays_s']):.0f}-"
        f"{max(r['delays_s']):.0f} s; exit codes {r['exit_codes']}), then a final run (exit {r['final_exit']})\n"
        f"  finished trials lost {r['lost']}, duplicated {r['duplicated']}{running}; trial numbers consecutive "
        f"{r['numbers_consecutive']}; trials.csv rows match {r['csv_rows_match']}; latency cache parses "
        f"({r['cache_entries']} entries)\n"
        f"  completed {r['completed']} of {r['asked']} asked; {r['failed_interrupted']} trials failed as interrupted, "
        f"{r['retried']} retries  -> {'OK' if verdict(r) else 'FAILED'}"
    )


SINGLE = "1 worker, SQLite"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", choices=("single", "postgres", "all"), default="all")
    args = parser.parse_args()
    started = time.perf_counter()
    settings = {"kills": args.kills, "trials": args.trials, "data_dir": os.path.abspath(args.data_dir), "seed": args.seed}
    results = []
    if args.scenario in ("single", "all"):
        results += [run(signum, **settings) for signum in (signal.SIGKILL, signal.SIGINT)]
    if args.scenario in ("postgres", "all"):
        results.append(run_shared(**settings))
    for r in results:
        print(report(r))
    print(f"\n{(time.perf_counter() - started) / 60:.1f} min")
    from search_spaces.files import read_json, write_text_atomic

    out = os.path.join(ROOT, "bench", "data", "chaos.json")
    # merged by scenario and signal: a run of one scenario keeps the others' figures
    key = lambda r: (r.get("scenario", SINGLE), r["signal"])  # noqa: E731
    kept = [r for r in read_json(out, default=[]) if key(r) not in {key(n) for n in results}]
    write_text_atomic(out, json.dumps(kept + results, indent=1) + "\n")


if __name__ == "__main__":
    main()
