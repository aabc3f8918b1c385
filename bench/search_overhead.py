"""What a search costs besides its evaluations: TPE with and without `constant_liar`, side by side.

On NAS-Bench-201's tables an evaluation is a lookup, so a search's time is the loop's own: the sampler,
the storage (SQLite, as a user's default), the CSV. `constant_liar` (on with many workers) turns off
TPE's per-trial cache of the study's trials, so every parameter of every proposal re-reads them.

    python bench/search_overhead.py [--trials 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TABLE = os.path.join(os.path.dirname(ROOT), "shared", "nb201-hw", "latency_ms.csv.gz")


def timed_search(*, trials: int, seed: int, constant_liar: bool) -> float:
    import optuna

    from nas import strategies
    from nas.config import SearchConfig
    from nas.searching import run_search

    real = strategies._strategy_sampler

    def forced(*args, **kwargs):  # the same sampler, with constant_liar as asked
        return real(*args, **(kwargs | {"shared": constant_liar}))

    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=scratch) as workdir, mock.patch.object(strategies, "_strategy_sampler", forced):
        config = SearchConfig(
            space="nb201", device=f"table:{TABLE}:pixel3", strategy="tpe", seed=seed, trials=trials, runs_dir=workdir
        )
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        started = time.perf_counter()
        run_search(config)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    seconds = {True: [], False: []}
    for seed in range(args.repeats):  # alternating, so that a change of machine load hits both alike
        for liar in (False, True):
            seconds[liar].append(timed_search(trials=args.trials, seed=seed, constant_liar=liar))
            print(f"seed {seed}, constant_liar {liar}: {seconds[liar][-1]:.1f} s", flush=True)
    off, on = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"\n{args.trials}-trial TPE search on nb201: constant_liar off {off:.1f} s, on {on:.1f} s: {on / off:.2f}x")


if __name__ == "__main__":
    main()
