"""The reference architectures through the exact trial path of `nas search` (same worker, default
proxy budget, LiteRT protocol): a baseline table of proxy accuracy, latency and trial cost.

    python bench/reference_trials.py --data-dir data [--only mobilevit-xxs] [--epochs 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nas.config import SearchConfig
from nas.evaluators import RealEvaluator
from nas.worker import Status, TrialRunner
from search_spaces import REFERENCES, ArchSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--only", nargs="*", default=None, help="reference names (default: all)")
    parser.add_argument("--epochs", type=int, default=SearchConfig.epochs)
    args = parser.parse_args()
    config = SearchConfig(epochs=args.epochs, data_dir=args.data_dir)
    names = args.only or list(REFERENCES)
    print(
        f"proxy budget: {config.train_images} images x {config.epochs} epoch(s), batch {config.batch_size}, "
        f"{config.val_images} held-out training images; LiteRT fp32, batch 1, 1 thread\n"
    )
    print(f"{'reference':16} {'params':>10} {'acc':>6} {'lat ms':>7} {'p90 ms':>7} {'cv':>6} {'trial s':>8} {'img/s':>6}")
    with tempfile.TemporaryDirectory() as workdir, TrialRunner(trials_per_worker=100) as runner:
        config = dataclasses.replace(config, runs_dir=workdir)
        evaluator = RealEvaluator(config, runner, *config.device_config.open())  # the search's own path
        for name in names:
            spec = ArchSpec.from_string(REFERENCES[name])
            start = time.perf_counter()
            latency = evaluator.latency(spec)
            outcome = evaluator.accuracy(spec, latency_ms=latency.median_ms)
            seconds = time.perf_counter() - start
            if outcome.status is not Status.OK:
                print(f"{name:16} failed: {outcome.reason}")
                continue
            lat = latency.result
            print(
                f"{name:16} {outcome.params_count:>10,} {outcome.accuracy:6.3f} {lat.median_ms:7.3f} "
                f"{lat.p90_ms:7.3f} {100 * lat.cv:5.1f}% {seconds:8.1f} "
                f"{outcome.timings['train_images_per_second']:6.0f}",
                flush=True,
            )
    print("\n(the first row also pays the worker's start: process spawn, TensorFlow import, data loading)")


if __name__ == "__main__":
    main()
