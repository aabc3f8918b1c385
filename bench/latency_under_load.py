"""Does a training on the other core disturb the search's latency measurement? On a 2-core machine two
trainings of one thread each train 1.33x faster together than one on both cores (`bench/onednn_speed.py
--settings sharing`), so two long runs are best run side by side; but a search among them times its models
(1 thread, LiteRT) while the other run trains. This times the given .tflite files with the search's
protocol, alternating rounds on a quiet machine and beside a one-thread training (the retraining's fused
step), and prints each file's loaded/quiet ratio.

    python bench/latency_under_load.py FILE.tflite [FILE ...] [--rounds 5] [--pause PID ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from retime import paused  # noqa: E402

ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _training(data_dir: str) -> subprocess.Popen:
    """A one-thread training, started once it has traced its step (it runs far longer than a round)."""
    command = [sys.executable, os.path.join(ROOT, "bench", "onednn_speed.py"), "--child", "--data-dir", data_dir]
    env = {**os.environ, **ONE_THREAD}
    child = subprocess.Popen([*command, "--steps", "100000"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if child.stdout.readline().strip() != "ready":
        raise SystemExit("the training did not start")
    child.stdin.write("go\n")
    child.stdin.flush()
    return child


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pause", type=int, nargs="+", metavar="PID", help="SIGSTOP these and their children meanwhile")
    args = parser.parse_args()

    from latency.measure import measure_tflite

    times: dict[str, dict[str, list[float]]] = {f: {"quiet": [], "loaded": []} for f in args.files}
    with paused(args.pause):
        for _ in range(args.rounds):
            for f in args.files:
                times[f]["quiet"].append(measure_tflite(f).median_ms)
            load = _training(args.data_dir)
            try:
                for f in args.files:
                    times[f]["loaded"].append(measure_tflite(f).median_ms)
            finally:
                load.kill()
                load.wait()
    print(f"{args.rounds} alternating rounds, 1 thread, the search's protocol; loaded = beside a one-thread training\n")
    print(f"{'file':<60} {'quiet ms':>9} {'loaded ms':>10} {'ratio':>6}  per round")
    for f, rows in times.items():
        quiet, loaded = statistics.median(rows["quiet"]), statistics.median(rows["loaded"])
        per_round = " ".join(f"{b / a:.2f}" for a, b in zip(rows["quiet"], rows["loaded"], strict=True))
        print(f"{os.path.relpath(f, ROOT)[-60:]:<60} {quiet:>9.3f} {loaded:>10.3f} {loaded / quiet:>6.2f}  {per_round}")


if __name__ == "__main__":
    main()
