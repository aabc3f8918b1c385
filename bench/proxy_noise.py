"""How much of a proxy accuracy is the training's luck: the same architectures, the same split, several seeds.

The seed sets the initial weights, the order of the images and the augmentation; the validation images
stay the same. If two front members' proxy accuracies differ by less than the spread of one of them over
seeds, the search cannot tell them apart, whatever their final accuracies.

    python bench/proxy_noise.py [--trials-csv bench/data/proof/trials.csv] [--seeds 4] [--data-dir data]

Defaults: the proof study's front by proxy accuracy, the default proxy budget (8,000 images x 1 epoch, 2,000
validation images). Resumable: each (trial, seed) is written to bench/data/proxy_noise.json as it lands,
with the code and machine that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from retime import proxy_front  # noqa: E402

from search_spaces.files import code_version, read_json, write_text_atomic  # noqa: E402

OUT = os.path.join(ROOT, "bench", "data", "proxy_noise.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials-csv", default=os.path.join(ROOT, "bench", "data", "proof", "trials.csv"))
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()

    from nas.config import SearchConfig
    from nas.worker import TrialJob, train_job

    config = SearchConfig(data_dir=args.data_dir)
    document = read_json(args.out, {"budget": None, "runs": []})
    budget = {"train_images": config.train_images, "epochs": config.epochs, "val_images": config.val_images}
    document["budget"] = budget
    done = {(r["trial"], r["seed"]) for r in document["runs"]}
    front = proxy_front(args.trials_csv)
    for seed in range(args.seeds):  # seeds outermost: a run cut short has every trial at some seeds
        for row in front:
            if (row["number"], seed) in done:
                continue
            result = train_job(TrialJob.from_config(config, arch=row["arch"], seed=seed))
            document["runs"].append(
                {
                    "trial": row["number"],
                    "seed": seed,
                    "accuracy": result.accuracy,
                    "search_accuracy": row["accuracy"],
                    "code": code_version(),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                }
            )
            write_text_atomic(args.out, json.dumps(document, indent=1) + "\n")
            print(f"trial {row['number']:3d} seed {seed}: {result.accuracy:.4f} (search: {row['accuracy']:.4f})", flush=True)

    by_trial: dict[int, list[float]] = {}
    for run in document["runs"]:
        by_trial.setdefault(run["trial"], []).append(run["accuracy"])
    print(f"\n{'trial':>6} {'mean':>7} {'sd':>7}  seeds")
    for trial, values in sorted(by_trial.items(), key=lambda item: statistics.mean(item[1])):
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{trial:>6} {statistics.mean(values):>7.4f} {sd:>7.4f}  {len(values)}")


if __name__ == "__main__":
    main()
