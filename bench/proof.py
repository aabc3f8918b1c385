"""The proof, run to the end (and across sessions): the found models against the references at equal
latency, and the proxy against final accuracy, from one committed study.

    python bench/proof.py --data-dir data              # every step not done yet, in order
    python bench/proof.py --data-dir data --only compare
    python bench/proof.py --show                        # what bench/data/proof/ holds

Its inputs and results live in bench/data/proof/, which survives a change of machine:

    study.db, trials.csv   the default search (`nas search --trials 60`) every step draws from
    plan.json              which trials and references each step takes (chosen once, after the search)
    compare_30.json        `nas compare` at 30 epochs: one record per model, merged run after run
    proxy_vs_final.json    `nas proxy-check --final-epochs 30`: proxy and final accuracy per architecture
    models/<arch_id>/      each finished model's result, model card and TFLite files (not its weights'
                           checkpoint): a later session re-times them on its machine instead of retraining

Steps, each resumable per epoch (its checkpoint is in runs/) and skipped when its results are there:

    curve     MobileNetV2-0.5 at 30 epochs with the learning curve (bench/recipe_curves.py); also the
              comparison's MobileNetV2-0.5
    compare   `nas compare` one model at a time, so compare_30.json is committed after each
    proxy     `nas proxy-check --study ... --final-epochs 30` (reuses the compared models)
    alternatives  the same check with each other proxy budget of the plan (the finals are reused: only
              the proxies train), into proxy_vs_final_<images>x<epochs>.json: what else could rank better

With `--commit`, every result file is committed the moment it lands (only those paths).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

EPOCHS = 30
STUDY = "mnasnet-cifar10"
KEPT_FILES = ("result.json", "model_card.json", "model_card.md", "provenance.json", "model_fp32.tflite", "model_int8.tflite")
#: all of them are committed: the .tflite files (1-3 MB each) let any later machine re-time and re-score the
#: models without retraining them (three models of 2026-12-01 were lost with their machine for want of them)
COMMITTED_FILES = KEPT_FILES


def nas(*args: str, runs_dir: str) -> None:
    """Run a `nas` command, its output on this terminal; stop on failure."""
    command = [sys.executable, "-m", "nas.cli", *args, "--runs-dir", runs_dir]
    print("$ nas " + " ".join(args), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def commit(paths: list[str], message: str, *, repo: str) -> None:
    """Commit exactly these paths in `repo` (other work in progress there stays out)."""

    def tracked(path: str) -> bool:
        return subprocess.run(["git", "ls-files", "--error-unmatch", "--", path], cwd=repo, capture_output=True).returncode == 0

    # a removed file is committed as removed if git knew it, and left out if it never did
    relative = [p for p in (os.path.relpath(p, repo) for p in paths) if os.path.exists(os.path.join(repo, p)) or tracked(p)]
    if not relative:
        return
    for attempt in range(10):
        added = subprocess.run(["git", "add", "-A", "--", *relative], cwd=repo, capture_output=True, text=True)
        done = subprocess.run(
            ["git", "commit", "-q", "-m", message, "--only", "--", *relative], cwd=repo, capture_output=True, text=True
        )
        if added.returncode == 0 and (done.returncode == 0 or "nothing" in done.stdout + done.stderr):
            return
        time.sleep(2 + attempt)  # another git command holds the index lock
    print(f"warning: could not commit {relative}: {done.stderr.strip()[:300]}", flush=True)


def keep_models(runs_dir: str, out: str, recipe) -> list[str]:
    """Copy every finished model of `recipe` into out/models/ (what a later session on this machine needs to
    re-time it); the copied files to commit (the records, not the .tflite files)."""
    from nas.choice import retrain_dir

    written = []
    base = os.path.dirname(retrain_dir(runs_dir, dataset="cifar10", recipe=recipe, arch_id="x"))
    for arch_id in sorted(os.listdir(base)) if os.path.isdir(base) else ():
        source = os.path.join(base, arch_id)
        if not os.path.exists(os.path.join(source, "model_card.json")):
            continue
        target = os.path.join(out, "models", arch_id)
        os.makedirs(target, exist_ok=True)
        for name in KEPT_FILES:
            if os.path.exists(os.path.join(source, name)) and not os.path.exists(os.path.join(target, name)):
                shutil.copy2(os.path.join(source, name), os.path.join(target, name))
                if name in COMMITTED_FILES:
                    written.append(os.path.join(target, name))
    return written


def restore_models(runs_dir: str, out: str, recipe) -> None:
    """Put the kept models back where `nas compare` looks for them (a fresh runs/ folder). Only a model
    whose .tflite files are here too: from the records alone (a new machine: the files are not committed)
    compare would take it for finished and have nothing to time, so it is retrained instead."""
    from nas.choice import retrain_dir

    for arch_id in sorted(os.listdir(os.path.join(out, "models"))) if os.path.isdir(os.path.join(out, "models")) else ():
        if not all(os.path.exists(os.path.join(out, "models", arch_id, name)) for name in KEPT_FILES):
            continue
        target = retrain_dir(runs_dir, dataset="cifar10", recipe=recipe, arch_id=arch_id)
        os.makedirs(target, exist_ok=True)
        for name in KEPT_FILES:
            source = os.path.join(out, "models", arch_id, name)
            if os.path.exists(source) and not os.path.exists(os.path.join(target, name)):
                shutil.copy2(source, os.path.join(target, name))


class CheckpointKeeper:
    """Keeps every unfinished retraining's checkpoint under out/checkpoints/<recipe>/<arch>/ (committed at
    most every `every` seconds), puts kept ones back into a fresh runs/ folder, and drops each once its model
    is finished. A session ends after a few hours and its machine with it: trial 57's first 16 epochs (about
    two hours) were lost that way, and a model longer than a session would otherwise never finish."""

    def __init__(self, runs_dir: str, out: str, *, landed, every: float):
        self.runs = os.path.join(runs_dir, "retrained", "cifar10")
        self.kept = os.path.join(out, "checkpoints")
        self.landed, self.every = landed, every
        self.last = time.monotonic()

    def _pairs(self, root: str) -> list[tuple[str, str]]:
        return [
            (recipe_id, arch_id)
            for recipe_id in (sorted(os.listdir(root)) if os.path.isdir(root) else ())
            for arch_id in sorted(os.listdir(os.path.join(root, recipe_id)))
        ]

    def restore(self) -> None:
        from trainers.full import CHECKPOINT

        for recipe_id, arch_id in self._pairs(self.kept):
            target = os.path.join(self.runs, recipe_id, arch_id, CHECKPOINT)
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(os.path.join(self.kept, recipe_id, arch_id, CHECKPOINT), target)
                print(f"checkpoint of {arch_id} (recipe {recipe_id}) restored from {self.kept}", flush=True)

    def poll(self, *, force: bool = False) -> None:
        from trainers.full import CHECKPOINT, RESULT, load_checkpoint

        if not force and time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        changed, epochs = [], []
        for recipe_id, arch_id in self._pairs(self.runs):
            source = os.path.join(self.runs, recipe_id, arch_id)
            target = os.path.join(self.kept, recipe_id, arch_id, CHECKPOINT)
            if os.path.exists(os.path.join(source, RESULT)):
                if os.path.exists(target):  # finished: its record is what survives now
                    os.remove(target)
                    changed.append(target)
                continue
            if not os.path.exists(os.path.join(source, CHECKPOINT)):
                continue
            if os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(os.path.join(source, CHECKPOINT)):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(source, CHECKPOINT), target + ".tmp")
            os.replace(target + ".tmp", target)
            loaded = load_checkpoint(target)
            epochs.append(f"{arch_id} after epoch {loaded[0].get('epochs_done', '?') if loaded else '?'}")
            changed.append(target)
        if changed:
            what = ", ".join(epochs) or "finished ones dropped"
            self.landed(changed, f"bench data: the proof's unfinished checkpoints ({what})")


def run_watched(command: list[str], *, poll) -> None:
    """Run `command` (its output on this terminal), calling `poll` every 30 s; stop on failure."""
    print("$ " + " ".join(command[2:] if command[1:2] == ["-m"] else command), flush=True)
    process = subprocess.Popen(command, cwd=ROOT)
    while process.poll() is None:
        time.sleep(30)
        poll()
    if process.returncode != 0:
        raise SystemExit(f"{command[3] if len(command) > 3 else command[0]} failed (exit {process.returncode})")


def restore_results(runs_dir: str, out: str, recipe) -> None:
    """Put back the result (final validation accuracy) of every kept model whose files are gone, so that the
    proxy check reads it instead of retraining; compare never sees these (its records hold other folders)."""
    from nas.choice import retrain_dir

    for arch_id in sorted(os.listdir(os.path.join(out, "models"))) if os.path.isdir(os.path.join(out, "models")) else ():
        source = os.path.join(out, "models", arch_id, "result.json")
        target = retrain_dir(runs_dir, dataset="cifar10", recipe=recipe, arch_id=arch_id)
        if os.path.exists(source) and not os.path.exists(os.path.join(target, "result.json")):
            os.makedirs(target, exist_ok=True)
            shutil.copy2(source, os.path.join(target, "result.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--runs-dir", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "data", "proof"), help="where inputs and results live")
    parser.add_argument("--only", nargs="+", choices=("curve", "compare", "proxy", "alternatives"))
    parser.add_argument("--commit", action="store_true", help="commit each result as it lands (in --out's repository)")
    parser.add_argument("--show", action="store_true")
    parser.add_argument(
        "--checkpoint-minutes", type=float, default=45.0, help="commit unfinished checkpoints at most this often (with --commit)"
    )
    args = parser.parse_args()

    from results.compare import format_table, load
    from search_spaces.files import read_json
    from trainers.full import Recipe

    out, runs = os.path.abspath(args.out), os.path.abspath(args.runs_dir)
    compare_file = os.path.join(out, "compare_30.json")
    proxy_file = os.path.join(out, "proxy_vs_final.json")
    if args.show:
        print(format_table(load(compare_file)) if os.path.exists(compare_file) else "no comparison yet")
        timing = os.path.join(out, "timing.json")
        if os.path.exists(timing):  # the latest quiet side-by-side timing of every model (bench/retime.py)
            last = read_json(timing, None)["runs"][-1]
            print(f"\nlatest quiet timing, {last['timed']} ({last['fingerprint']['cpu']}), medians of {last['rounds']} rounds:")
            for row in sorted(last["rows"], key=lambda r: r["latency_fp32_ms"]):
                print(
                    f"  {row['model']:<20} {row['kind']:<9} fp32 {row['latency_fp32_ms']:.3f} ms  int8 "
                    f"{row['latency_int8_ms']:.3f} ms  ({row['source_fp32']} files)"
                )
            print("  " + ("\n  ".join(last["dominance"]) or "no found model dominates a reference"))
        if os.path.exists(proxy_file):
            nas("proxy-check", "--show", "--out", proxy_file, *_study_flags(out), "--final-epochs", str(EPOCHS), runs_dir=runs)
        return
    with open(os.path.join(out, "plan.json")) as f:
        plan = json.load(f)
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=out, capture_output=True, text=True).stdout.strip()
    recipe = Recipe(epochs=EPOCHS)
    steps = args.only or ("curve", "compare", "proxy", "alternatives")
    restore_models(runs, out, recipe)

    def landed(paths: list[str], message: str) -> None:
        if args.commit and repo:
            commit(paths, message, repo=repo)

    keeper = CheckpointKeeper(runs, out, landed=landed, every=args.checkpoint_minutes * 60)
    keeper.restore()
    run_compare = os.path.join(runs, STUDY, "compare.json")
    if os.path.exists(compare_file) and not os.path.exists(run_compare):  # earlier sessions' records are kept
        os.makedirs(os.path.dirname(run_compare), exist_ok=True)
        shutil.copy2(compare_file, run_compare)

    if "curve" in steps:
        env = {**os.environ, "NAS_RECIPE_CURVES": os.path.join(os.path.dirname(out), "recipe_curves.json")}
        command = [sys.executable, os.path.join(ROOT, "bench", "recipe_curves.py"), "--only", "mv2-0.5-e30"]
        subprocess.run([*command, "--data-dir", args.data_dir, "--runs-dir", runs], cwd=ROOT, env=env, check=True)
        landed([env["NAS_RECIPE_CURVES"]], "bench data: MobileNetV2-0.5 30-epoch curve with the re-estimated weight average")

    if "compare" in steps:
        done = {r.model for r in (load(compare_file) if os.path.exists(compare_file) else []) if r.recipe_id == recipe.recipe_id}
        for model in plan["compare"]:
            if model.get("reference", f"trial {model.get('trial')}") in done:
                continue  # its record is kept: a machine without its files would retrain it for nothing
            what = ["--trial", str(model["trial"]), "--references", ""] if "trial" in model else []
            if "reference" in model:  # alone: a found model named beside it would be retrained where its files are gone
                what = ["--references", model["reference"]]
            command = [sys.executable, "-m", "nas.cli", "compare", *_study_flags(out), *what, "--epochs", str(EPOCHS)]
            run_watched([*command, "--data-dir", args.data_dir, "--runs-dir", runs], poll=keeper.poll)
            shutil.copy2(run_compare, compare_file)
            kept = keep_models(runs, out, recipe)
            landed([compare_file, *kept], f"bench data: nas compare at {EPOCHS} epochs, {json.dumps(model)}")
            keeper.poll(force=True)  # its checkpoint is dropped

    def proxy_command(path: str) -> list[str]:
        """`nas proxy-check` of the plan's architectures against their final accuracy, into `path`."""
        proxy = plan["proxy"]
        trials = [word for number in proxy["trials"] for word in ("--trial", str(number))]
        return [
            sys.executable, "-m", "nas.cli", "proxy-check", *_study_flags(out), *trials, "--archs", str(proxy["more"]),
            "--references", ",".join(proxy["references"]), "--final-epochs", str(EPOCHS),
            "--data-dir", args.data_dir, "--out", path, "--runs-dir", runs,
        ]  # fmt: skip

    if "proxy" in steps or "alternatives" in steps:
        restore_results(runs, out, recipe)
    if "proxy" in steps:
        command = proxy_command(proxy_file)
        seen = _mtime(proxy_file)

        def poll() -> None:  # the check writes each result as it lands: commit it then
            nonlocal seen
            keeper.poll()
            if _mtime(proxy_file) != seen:
                seen = _mtime(proxy_file)
                landed([proxy_file], f"bench data: proxy against final accuracy at {EPOCHS} epochs (partial)")

        run_watched(command, poll=poll)
        landed([proxy_file, *keep_models(runs, out, recipe)], f"bench data: proxy against final accuracy at {EPOCHS} epochs")

    if "alternatives" in steps:  # other proxy budgets on the same architectures: only the proxies train
        for images, epochs in plan["proxy"].get("alternatives", ()):
            path = os.path.join(out, f"proxy_vs_final_{images}x{epochs}.json")
            budget = ["--train-images", str(images), "--epochs", str(epochs)]
            run_watched([*proxy_command(path), *budget], poll=keeper.poll)
            landed([path], f"bench data: the {images}x{epochs} proxy against final accuracy at {EPOCHS} epochs")


def _mtime(path: str) -> float | None:
    return os.path.getmtime(path) if os.path.exists(path) else None


def _study_flags(out: str) -> list[str]:
    return ["--study", STUDY, "--storage", f"sqlite:///{os.path.join(out, 'study.db')}"]


if __name__ == "__main__":
    main()
