"""Resident memory over a long search: 40 trials of a tiny budget in one `nas search`, printing
the RSS of the search process and of its worker after every 10 trials.

    python bench/memory.py --data-dir data [--trials 40] [--trials-per-worker 8]

TensorFlow keeps ~80 MB per trained model alive in a process (measured); the search therefore
trains in a worker process that is replaced every `--trials-per-worker` trials. Run with
`--trials-per-worker 1000` to see the growth that recycling prevents.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil

from nas.config import SearchConfig
from nas.searching import run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--trials-per-worker", type=int, default=8)
    args = parser.parse_args()
    me = psutil.Process()
    start = time.perf_counter()
    peak_worker = 0.0

    def megabytes(process) -> float:
        try:
            return process.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            return 0.0

    def on_trial(trial, done, total) -> None:
        nonlocal peak_worker
        workers = me.children(recursive=True)
        worker_mb = sum(megabytes(p) for p in workers)
        peak_worker = max(peak_worker, worker_mb)
        if done % 10 == 0 or done == 1:
            elapsed = time.perf_counter() - start
            print(
                f"after {done:>3} trials: search process {megabytes(me):7.0f} MB, worker {worker_mb:7.0f} MB, "
                f"total {megabytes(me) + worker_mb:7.0f} MB   ({elapsed:5.0f} s)",
                flush=True,
            )

    with tempfile.TemporaryDirectory() as runs:
        config = SearchConfig(
            runs_dir=runs,
            data_dir=args.data_dir,
            trials=args.trials,
            trials_per_worker=args.trials_per_worker,
            train_images=512,
            val_images=256,
            epochs=1,
            batch_size=64,
            strategy="random",
            seed=0,
        )
        print(f"{args.trials} trials, 512 images x 1 epoch each, worker replaced every {args.trials_per_worker} trials")
        summary = run_search(config, on_trial=on_trial)
    print(f"\ndone: {summary.new_trials} trials in {summary.wall_seconds / 60:.1f} min; peak worker RSS {peak_worker:.0f} MB")


if __name__ == "__main__":
    main()
