"""From a real search to deployable models: retrain the best front member of a study with the full
recipe for `--epochs`, export every format, and print each format's test accuracy and latency side by
side (all through the real `nas` CLI, as a user runs it).

    python bench/retrain_front.py --data-dir data [--runs-dir runs] [--study mnasnet-cifar10] [--epochs 5]

If the study does not exist yet, a search of `--trials` trials with the default budget creates it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

NAS = [sys.executable, "-m", "nas.cli"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nas(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([*NAS, *args], check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--study", default="mnasnet-cifar10")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    runs = os.path.abspath(args.runs_dir)
    data = os.path.abspath(args.data_dir)
    common = ["--study", args.study, "--runs-dir", runs]
    search_s = 0.0
    if not os.path.exists(os.path.join(runs, args.study, "study.db")):
        search_s = nas("search", *common, "--data-dir", data, "--trials", str(args.trials))
    retrain_s = nas("retrain", *common, "--front", "--top", "1", "--epochs", str(args.epochs), "--data-dir", data)
    export_s = nas("export", *common, "--front", "--top", "1", "--epochs", str(args.epochs), "--data-dir", data)
    cards = [
        os.path.join(root, "model_card.json")
        for root, _, files in os.walk(os.path.join(runs, "retrained"))
        if "model_card.json" in files
    ]
    card_path = max(cards, key=os.path.getmtime)  # the one just written
    with open(card_path) as f:
        card = json.load(f)
    search = card.get("search", {})
    training = card["training"]
    print(f"\nstudy {args.study}: best-reward front member, trial {search.get('trial')} ({card['arch_id']})")
    print(f"  {card['arch']}")
    print(
        f"  proxy: accuracy {search.get('proxy_accuracy')}, latency {search.get('latency_ms')} ms; "
        f"{card['params_count']:,} params, {card['multiply_adds']:,} multiply-adds"
    )
    print(
        f"retrained {training['epochs_run']} epochs ({training['recipe']['optimizer']}, lr {training['recipe']['lr']}, "
        f"batch {training['recipe']['batch_size']}) in {training['retrain_seconds'] / 60:.1f} min; "
        f"best validation accuracy {training['val_accuracy']:.4f} (epoch {training['best_epoch']})\n"
    )
    print(f"{'format':<7} {'test accuracy':>13} {'p50 ms':>8} {'p90 ms':>8} {'spread':>7} {'size KB':>9}")
    for name, entry in card["formats"].items():
        if "error" in entry:
            print(f"{name:<7} failed: {entry['error']}")
            continue
        latency = (
            f"{entry['latency_median_ms']:>8.3f} {entry['latency_p90_ms']:>8.3f} {100 * entry['latency_cv']:>6.1f}%"
            if "latency_median_ms" in entry
            else f"{'-':>8} {'-':>8} {'-':>7}"
        )
        print(f"{name:<7} {entry['test_accuracy']:>13.4f} {latency} {entry['size_bytes'] / 1024:>9.0f}")
    print(f"\ntime: search {search_s / 60:.1f} min, retrain {retrain_s / 60:.1f} min, export {export_s / 60:.1f} min")
    print(f"model card: {card_path[:-5]}.md")


if __name__ == "__main__":
    main()
