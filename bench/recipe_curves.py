"""Learning curves behind the retraining recipe: each experiment retrains one architecture with
one recipe on full CIFAR-10 and records, epoch by epoch, the training loss, the validation
accuracy (raw weights and, when averaging, the weight average) and the seconds per epoch.

    python bench/recipe_curves.py --data-dir data                      # every experiment, in order
    python bench/recipe_curves.py --data-dir data --only mv2-0.5-e30   # one of them
    python bench/recipe_curves.py --show                                # the table of what is recorded

Hours of CPU: run it in the background. Each epoch is checkpointed (run the same command again to
resume) and each experiment's curve is written to bench/data/recipe_curves.json as it grows, with
the commit that produced it. Choices are made on validation accuracy; the test accuracy is read
once, at the end of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from search_spaces.files import code_version, read_json, write_text_atomic  # noqa: E402

DATA_FILE = os.environ.get("NAS_RECIPE_CURVES", os.path.join(ROOT, "bench", "data", "recipe_curves.json"))

#: name -> (architecture: a reference name or string, recipe fields that differ from the default)
MV2_05_STEM1_LATE = (  # MobileNetV2-0.5 with a stride-1 stem; the first body block with 16 channels strides instead
    "conv_r1_k3_s1_c16-dsconv_r1_k3_s1_c8-mbconv_r2_k3_s2_e6_c16-mbconv_r3_k3_s2_e6_c16"
    "-mbconv_r4_k3_s2_e6_c32-mbconv_r3_k3_s1_e6_c48-mbconv_r3_k3_s1_e6_c80-mbconv_r1_k3_s1_e6_c160-head_c1280"
)
MV2_05_CIFAR28M = (  # the usual CIFAR MobileNetV2 layout (stride-1 stem, strides in blocks 3, 4, 6): 28 M multiply-adds
    "conv_r1_k3_s1_c16-dsconv_r1_k3_s1_c8-mbconv_r2_k3_s1_e6_c16-mbconv_r3_k3_s2_e6_c16"
    "-mbconv_r4_k3_s2_e6_c32-mbconv_r3_k3_s1_e6_c48-mbconv_r3_k3_s2_e6_c80-mbconv_r1_k3_s1_e6_c160-head_c1280"
)
EXPERIMENTS: dict[str, tuple[str, dict]] = {
    "mv2-0.5-e30": ("mobilenetv2-0.5", {"epochs": 30, "ema_decay": 0.999}),
    "mv2-0.5-stem1late-e30": (MV2_05_STEM1_LATE, {"epochs": 30, "ema_decay": 0.999}),
    "mv2-0.5-cifar28m-e30": (MV2_05_CIFAR28M, {"epochs": 30, "ema_decay": 0.999}),
    "mv2-0.5-default": ("mobilenetv2-0.5", {}),  # the default recipe (100 epochs): reused by nas compare
    "mv2-0.5-stem1late-default": (MV2_05_STEM1_LATE, {}),
}


def load() -> dict:
    return read_json(DATA_FILE, {})


def save(document: dict) -> None:
    write_text_atomic(DATA_FILE, json.dumps(document, indent=1) + "\n")


def _keep_recorded(name: str, *, recipe_id: str, resumable: bool) -> bool:
    """Whether to train `name`: not when its curve under this recipe is finished. A curve cut short
    whose checkpoint is not on this machine (a new machine) would be truncated by a fresh run from
    epoch 1: it is kept under its own key first, and that is said."""
    document = load()
    entry = document.get(name)
    if entry is None or entry.get("recipe_id") != recipe_id:
        return True
    if "result" in entry:
        print(f"{name}: finished under recipe {recipe_id} ({len(entry['history'])} epochs recorded); not run again", flush=True)
        return False
    if not resumable and entry.get("history"):
        kept = f"{name}@partial-{len(entry['history'])}-epochs"
        document[kept] = document.pop(name)
        save(document)
        print(f"{name}: its checkpoint is not here; the {len(entry['history'])} recorded epochs are kept as {kept!r}", flush=True)
    return True


def run(name: str, *, data_dir: str, runs_dir: str) -> None:
    from nas.choice import retrain_dir
    from search_spaces import REFERENCES, ArchSpec
    from trainers.cifar import load_cifar
    from trainers.full import CHECKPOINT, Recipe, retrain

    arch, overrides = EXPERIMENTS[name]
    spec = ArchSpec.from_string(REFERENCES.get(arch, arch))
    recipe = Recipe(**overrides)
    dataset = load_cifar("cifar10", data_dir=data_dir)
    # the canonical folder of this (dataset, recipe, architecture): nas retrain / compare reuse it
    workdir = retrain_dir(runs_dir, dataset="cifar10", recipe=recipe, arch_id=spec.arch_id)
    if not _keep_recorded(name, recipe_id=recipe.recipe_id, resumable=os.path.exists(os.path.join(workdir, CHECKPOINT))):
        return

    def on_epoch(epoch: int, epochs: int, record: dict) -> None:
        document = load()
        if name in document and document[name].get("recipe_id") != recipe.recipe_id:
            # a curve of another recipe (or of code that changed the recipe's meaning) is kept under its own key
            kept = f"{name}@{document[name].get('recipe_id')}"
            document[kept] = document.pop(name)
            print(f"{name}: the earlier curve (recipe {document[kept].get('recipe_id')}) is kept as {kept!r}", flush=True)
        entry = document.setdefault(name, {"arch": spec.to_string(), "arch_id": spec.arch_id, "recipe": overrides})
        entry["recipe_id"] = recipe.recipe_id
        entry["reference"] = arch if arch in REFERENCES else None
        entry.setdefault("commits", [])
        if code_version() not in entry["commits"]:
            entry["commits"].append(code_version())
        entry["history"] = [*[h for h in entry.get("history", []) if h["epoch"] < record["epoch"]], record]
        save(document)
        ema = f" ema {record['val_accuracy_ema']:.4f}" if "val_accuracy_ema" in record else ""
        print(
            f"{name} epoch {epoch + 1}/{epochs}: loss {record['loss']:.3f} val raw {record['val_accuracy_raw']:.4f}{ema}  "
            f"{record['seconds']:.0f} s ({record['images_per_second']:.0f} img/s)",
            flush=True,
        )

    result = retrain(spec, dataset, recipe=recipe, workdir=workdir, on_epoch=on_epoch)
    document = load()
    document[name]["result"] = {
        key: getattr(result, key)
        for key in ("epochs_run", "best_epoch", "val_accuracy", "val_accuracy_flip", "test_accuracy", "train_seconds")
    }
    save(document)


def show() -> None:
    document = load()
    # "avg-raw >=3": the weight average's validation accuracy minus the raw weights', worst epoch from 3 on
    print(
        f"{'experiment':<34} {'epochs':>6} {'best val':>8} {'val+flip':>8} {'test':>7} {'avg-raw >=3':>11} "
        f"{'s/epoch':>8} {'hours':>6}  recipe"
    )
    for name, entry in document.items():
        history, result = entry.get("history", []), entry.get("result", {})
        best = max((h["val_accuracy"] for h in history), default=float("nan"))
        seconds = sorted(h["seconds"] for h in history)
        median = seconds[len(seconds) // 2] if seconds else float("nan")
        total = sum(seconds) / 3600
        flip = result.get("val_accuracy_flip")
        test = result.get("test_accuracy")
        gaps = [h["val_accuracy_ema"] - h["val_accuracy_raw"] for h in history if h["epoch"] >= 3 and "val_accuracy_ema" in h]
        gap = f"{min(gaps):+.4f}" if gaps else "-"
        print(
            f"{name:<34} {len(history):>6} {best:>8.4f} {'-' if flip is None else f'{flip:.4f}':>8} "
            f"{'-' if test is None else f'{test:.4f}':>7} {gap:>11} {median:>8.0f} {total:>6.2f}  {json.dumps(entry['recipe'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--runs-dir", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS), help="run only these experiments")
    parser.add_argument("--show", action="store_true", help="print what is recorded and exit")
    args = parser.parse_args()
    if args.show:
        show()
        return
    for name in args.only or EXPERIMENTS:
        started = time.perf_counter()
        run(name, data_dir=args.data_dir, runs_dir=args.runs_dir)
        print(f"{name}: done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    show()


if __name__ == "__main__":
    main()
