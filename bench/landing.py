"""What the long benchmarks share to survive a session's end: each result committed the moment it lands,
unfinished trainings' checkpoints kept in the repository, finished trainings' records kept, and all of it put
back into a fresh runs/ folder on a new machine (bench/proof.py, bench/cifar100.py).

Trained models themselves (.tflite files) are not kept: a comparison's record holds their test accuracy and the
latencies timed beside the others on the machine that trained them, and a later machine re-times them through
twins (bench/retime.py: the same architecture, untrained, converted the same way). A twin's fp32 latency is
its model's (1.002x); its int8 latency may not be (trial 19: 1.29x), so an int8 verdict is made with the real
files, on the machine that has them. A model a comparison has recorded is never trained again for want of its
files: the benchmarks skip every model whose record is kept."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: a finished training's records: its final validation accuracy, and where exported its model card (test
#: accuracy of each file, parameters, multiply-adds) and provenance
KEPT_FILES = ("result.json", "model_card.json", "model_card.md", "provenance.json")


def commit(paths: list[str], message: str, *, repo: str) -> None:
    """Commit exactly these paths in `repo` (other work in progress there stays out)."""

    def tracked(path: str) -> bool:
        return subprocess.run(["git", "ls-files", "--error-unmatch", "--", path], cwd=repo, capture_output=True).returncode == 0

    # a removed file is committed as removed if git knew it, and left out if it never did
    relative = [p for p in (os.path.relpath(p, repo) for p in paths) if os.path.exists(os.path.join(repo, p)) or tracked(p)]
    if not relative:
        return
    changed = subprocess.run(["git", "status", "--porcelain", "--", *relative], cwd=repo, capture_output=True, text=True)
    if changed.returncode == 0 and not changed.stdout.strip():
        return  # the same bytes again (a study copied while no trial finished): nothing to commit
    for attempt in range(10):
        added = subprocess.run(["git", "add", "-A", "--", *relative], cwd=repo, capture_output=True, text=True)
        done = subprocess.run(
            ["git", "commit", "-q", "-m", message, "--only", "--", *relative], cwd=repo, capture_output=True, text=True
        )
        if added.returncode == 0 and (done.returncode == 0 or "nothing" in done.stdout + done.stderr):
            return
        time.sleep(2 + attempt)  # another git command holds the index lock
    print(f"warning: could not commit {relative}: {done.stderr.strip()[:300]}", flush=True)


def models_dir(out: str, recipe) -> str:
    """Where the finished models of `recipe` are kept: one folder per recipe, since one architecture is
    often trained under several (the 30-epoch comparison, the 15-epoch check, the 100-epoch pair)."""
    return os.path.join(out, "models", recipe.recipe_id)


def keep_models(runs_dir: str, out: str, recipe, *, dataset: str) -> list[str]:
    """Copy the records of every finished training of `recipe` into models_dir (what a later machine needs to
    reuse its final accuracy, or its scores, without retraining); the copied files, to commit."""
    from nas.choice import retrain_dir

    written = []
    base = os.path.dirname(retrain_dir(runs_dir, dataset=dataset, recipe=recipe, arch_id="x"))
    for arch_id in sorted(os.listdir(base)) if os.path.isdir(base) else ():
        source = os.path.join(base, arch_id)
        if not os.path.exists(os.path.join(source, "result.json")):
            continue
        target = os.path.join(models_dir(out, recipe), arch_id)
        written += _set_aside_earlier(source, target)
        os.makedirs(target, exist_ok=True)
        for name in KEPT_FILES:
            if os.path.exists(os.path.join(source, name)) and not os.path.exists(os.path.join(target, name)):
                shutil.copy2(os.path.join(source, name), os.path.join(target, name))
                written.append(os.path.join(target, name))
    return written


def _set_aside_earlier(source: str, target: str) -> list[str]:
    """When `source` is another training of an architecture already kept in `target` (its result differs:
    it was trained again, on purpose or on a machine that lost the first), move the earlier training's
    records to target/earlier/<n>/ rather than mixing them with the new one's; both paths of each moved
    file, to commit."""
    kept_result = os.path.join(target, "result.json")
    if not os.path.exists(kept_result):
        return []
    with open(kept_result, "rb") as kept, open(os.path.join(source, "result.json"), "rb") as new:
        if kept.read() == new.read():
            return []
    n = 1
    while os.path.exists(os.path.join(target, "earlier", str(n))):
        n += 1
    aside = os.path.join(target, "earlier", str(n))
    os.makedirs(aside)
    moved = []
    for name in KEPT_FILES:
        if os.path.exists(os.path.join(target, name)):
            os.replace(os.path.join(target, name), os.path.join(aside, name))
            moved += [os.path.join(target, name), os.path.join(aside, name)]
    print(f"{os.path.basename(target)} trained again: the earlier training's record moved to {aside}", flush=True)
    return moved


#: megabytes of checkpoints one process commits at most in a session, its end's keep included. A session
#: submits at most 256 MiB of diffs, every committed copy of a 10-20 MB checkpoint counts, and a file added
#: and removed again counts twice: two runs keeping theirs every 45 minutes made a whole session's
#: submission too big to land (2026-12-05), and all its work was lost with it.
CHECKPOINT_BUDGET_MB = 60.0
#: the largest checkpoint kept: the repository takes no file over 2 MB (data and model files do not belong in
#: it), so a larger model's unfinished training does not survive its machine and must fit in one session
CHECKPOINT_FILE_LIMIT_MB = 2.0


class CheckpointKeeper:
    """Keeps every unfinished retraining's checkpoint of `dataset` under out/checkpoints/<recipe>/<arch>/ (committed at
    most every `every` seconds, and within `budget_mb` in all), puts kept ones back into a fresh runs/ folder,
    and drops each once its model is finished. A session ends after a few hours and its machine with it:
    trial 57's first 16 epochs (about two hours) were lost that way, and a model longer than a session would
    otherwise never finish. What matters is the checkpoint there at the session's end: `poll(force=True)`
    keeps it then, whatever the interval. Only checkpoints of up to CHECKPOINT_FILE_LIMIT_MB are kept."""

    def __init__(self, runs_dir: str, out: str, *, dataset: str, landed, every: float, budget_mb: float = CHECKPOINT_BUDGET_MB):
        self.runs = os.path.join(runs_dir, "retrained", dataset)
        self.kept = os.path.join(out, "checkpoints")
        self.landed, self.every = landed, every
        self.budget_mb, self.budget_left = budget_mb, budget_mb * 1e6
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
            kept = os.path.join(self.kept, recipe_id, arch_id, CHECKPOINT)
            target = os.path.join(self.runs, recipe_id, arch_id, CHECKPOINT)
            if os.path.exists(kept) and not os.path.exists(target):  # a dropped one may leave its folder behind
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(kept, target)
                print(f"checkpoint of {arch_id} (recipe {recipe_id}) restored from {self.kept}", flush=True)

    def poll(self, *, force: bool = False) -> None:
        from trainers.full import CHECKPOINT, RESULT, load_checkpoint

        # a finished model's checkpoint is dropped at every poll (cheap, and the step may end before the next
        # keep); copying unfinished ones, megabytes to commit each time, waits for `every`
        keep = force or time.monotonic() - self.last >= self.every
        if keep:
            self.last = time.monotonic()
        changed, epochs = [], []
        for recipe_id, arch_id in self._pairs(self.runs):
            source = os.path.join(self.runs, recipe_id, arch_id)
            target = os.path.join(self.kept, recipe_id, arch_id, CHECKPOINT)
            if os.path.exists(os.path.join(source, RESULT)):
                if os.path.exists(target):  # finished: its record is what survives now
                    os.remove(target)
                    os.rmdir(os.path.dirname(target))
                    changed.append(target)
                continue
            if not keep or not os.path.exists(os.path.join(source, CHECKPOINT)):
                continue
            if os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(os.path.join(source, CHECKPOINT)):
                continue
            size = os.path.getsize(os.path.join(source, CHECKPOINT))
            if size > CHECKPOINT_FILE_LIMIT_MB * 1e6:
                print(
                    f"checkpoint of {arch_id} not kept: {size / 1e6:.1f} MB, over the {CHECKPOINT_FILE_LIMIT_MB:g} MB a file may "
                    "take in the repository",
                    flush=True,
                )
                continue
            if size > self.budget_left:
                print(f"checkpoint of {arch_id} not kept: over this run's {self.budget_mb:.0f} MB budget", flush=True)
                continue
            self.budget_left -= size
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(source, CHECKPOINT), target + ".tmp")
            os.replace(target + ".tmp", target)
            loaded = load_checkpoint(target)
            epochs.append(f"{arch_id} after epoch {loaded[0].get('epochs_done', '?') if loaded else '?'}")
            changed.append(target)
        if changed:
            what = ", ".join(epochs) or "finished ones dropped"
            self.landed(changed, f"bench data: unfinished checkpoints ({what})")


def landing_on_write(path: str, land, keeper: CheckpointKeeper):
    """A poll for `run_watched`: the keeper's, and `land()` whenever `path` was written since the last look
    (a proxy check writes each result as it lands; committed then, a new machine reuses its finals)."""

    def mtime() -> float | None:
        return os.path.getmtime(path) if os.path.exists(path) else None

    seen = mtime()

    def poll() -> None:
        nonlocal seen
        keeper.poll()
        if mtime() != seen:
            seen = mtime()
            land()

    return poll


def run_watched(command: list[str], *, poll, allowed: tuple[int, ...] = (0,)) -> int:
    """Run `command` (its output on this terminal), calling `poll` every 30 s and once when it ends; stop on
    an exit code not `allowed`, else return it. SIGTERM to this process is passed on to the command, which
    stops as a `nas` command does (keeping its last epoch), rather than training on, orphaned."""
    print("$ " + " ".join(command[2:] if command[1:2] == ["-m"] else command), flush=True)
    process = subprocess.Popen(command, cwd=ROOT)

    def forward(signum, frame) -> None:
        process.send_signal(signum)
        process.wait()
        raise SystemExit(f"stopped by signal {signum}; {command[3] if len(command) > 3 else command[0]} stopped too")

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while process.poll() is None:
            time.sleep(30)
            poll()
    finally:
        signal.signal(signal.SIGTERM, previous)
    poll()
    if process.returncode not in allowed:
        raise SystemExit(f"{command[3] if len(command) > 3 else command[0]} failed (exit {process.returncode})")
    return process.returncode


def restore_results(runs_dir: str, out: str, recipe, *, dataset: str) -> None:
    """Put back the result (final validation accuracy) of every kept training of `recipe` whose folder is
    gone, so that a proxy check reads it instead of retraining. compare does not take such a folder for a
    model (it has no files to time)."""
    from nas.choice import retrain_dir

    kept = models_dir(out, recipe)
    for arch_id in sorted(os.listdir(kept)) if os.path.isdir(kept) else ():
        source = os.path.join(kept, arch_id, "result.json")
        target = retrain_dir(runs_dir, dataset=dataset, recipe=recipe, arch_id=arch_id)
        if os.path.exists(source) and not os.path.exists(os.path.join(target, "result.json")):
            os.makedirs(target, exist_ok=True)
            shutil.copy2(source, os.path.join(target, "result.json"))


def compare_each(
    models: list[dict], recipe, path: str, *, study: str, storage: str, dataset: str, runs_dir: str, out: str, data_dir: str,
    poll, landed,
) -> None:  # fmt: skip
    """`nas compare` under `recipe` (its length, epochs or minutes, and every field it sets) of `models`
    ({"trial": N} of `study` in `storage`, or {"reference": NAME}), one model at a time, `path` committed after
    each. A model whose record `path` holds is skipped: a machine without its files would retrain it for
    nothing."""
    import json
    import sys

    from results.compare import load

    # the length always named (the commit messages say it), then every other field the recipe sets
    flags = ["--minutes", f"{recipe.minutes:g}"] if recipe.minutes else ["--epochs", str(recipe.epochs)]
    flags += recipe_flags(recipe, leave_out=("epochs", "minutes"))
    run_compare = os.path.join(runs_dir, study, "compare.json")
    if os.path.exists(path) and not os.path.exists(run_compare):  # earlier sessions' records are kept
        os.makedirs(os.path.dirname(run_compare), exist_ok=True)
        shutil.copy2(path, run_compare)
    done = {r.model for r in (load(path) if os.path.exists(path) else []) if r.recipe_id == recipe.recipe_id}
    for model in models:
        if model.get("reference", f"trial {model.get('trial')}") in done:
            continue
        what = ["--trial", str(model["trial"]), "--references", ""] if "trial" in model else []
        if "reference" in model:  # alone: a found model named beside it would be retrained where its files are gone
            what = ["--references", model["reference"]]
        command = [sys.executable, "-m", "nas.cli", "compare", "--study", study, "--storage", storage, *what, *flags]
        run_watched([*command, "--data-dir", data_dir, "--runs-dir", runs_dir], poll=poll)
        land_records(run_compare, path, recipe.recipe_id)
        kept = keep_models(runs_dir, out, recipe, dataset=dataset)
        landed([path, *kept], f"bench data: nas compare {' '.join(flags)}, {json.dumps(model)}")


def recipe_flags(recipe, *, leave_out: tuple[str, ...] = ()) -> list[str]:
    """The command-line flags that give `recipe` to `nas compare`: every field that differs from its default
    (a plan's `--val-images 0` was once left out, and its run trained the default recipe instead)."""
    import dataclasses

    from nas.flags import words_of

    changed = tuple(
        f.name for f in dataclasses.fields(recipe) if f.name not in leave_out and getattr(recipe, f.name) != f.default
    )
    return words_of(recipe, type(recipe), changed)


def land_records(source: str, path: str, recipe_id: str) -> None:
    """Merge the records of `recipe_id` in a run's compare.json (which holds every recipe) into `path`
    (one file per recipe length): earlier records there are kept, a model timed again is replaced."""
    from results.compare import load_document, merge, records_of, save

    run, kept = load_document(source), load_document(path)
    new = [r for r in records_of(run) if r.recipe_id == recipe_id]
    runs = kept["runs"] + [r for r in run["runs"] if r.get("recipe_id") == recipe_id and r not in kept["runs"]]
    recipes = kept["recipes"] | {recipe_id: run["recipes"][recipe_id]}
    fingerprints = kept["fingerprints"] | {r.fingerprint: run["fingerprints"][r.fingerprint] for r in new}
    save(path, merge(records_of(kept), new), recipes=recipes, fingerprints=fingerprints, runs=runs)


def reuse_finals(source: str, target: str, recipe) -> None:
    """Copy the final accuracies under `recipe` that `nas proxy-check` recorded in `source` into `target`,
    another proxy's check of the same architectures: it then trains only its proxies. (A final trained on an
    earlier machine lives on in the check's file alone; without this, each alternative trained it again.)"""
    from nas.proxy_check import CheckRecord, FinalBudget, load_records, save_records
    from search_spaces.files import read_json

    if not os.path.exists(source):
        return
    label, records = FinalBudget(recipe).label, load_records(target)
    have = {arch for arch, record in records.items() if label in record.results}
    missing = [r for r in load_records(source).values() if label in r.results and r.arch not in have]
    for record in missing:
        into = records.setdefault(record.arch, CheckRecord(name=record.name, arch=record.arch, latency_ms=record.latency_ms))
        into.results[label] = record.results[label]
    if missing:
        settings = {k: v for k, v in read_json(source, {}).get("settings", {}).items() if k != "code"}
        save_records(target, records, settings)


def restore_study(kept_db: str, run_db: str) -> None:
    """A new machine: put the kept study back where the commands use it (a search resumes from it)."""
    if os.path.exists(kept_db) and not os.path.exists(run_db):
        os.makedirs(os.path.dirname(run_db), exist_ok=True)
        shutil.copy2(kept_db, run_db)


def search_kept(command: list[str], *, run_db: str, kept_db: str, landed, what: str, every: float = 600.0) -> None:
    """Run `nas search` `command` on the study in `run_db`, copying it (and its trials.csv) to `kept_db` at
    most every `every` seconds and at the end; a fresh runs/ folder is seeded from `kept_db` first
    (`restore_study`), so the search resumes there with every kept trial."""
    import sqlite3

    restore_study(kept_db, run_db)
    os.makedirs(os.path.dirname(kept_db), exist_ok=True)
    last = time.monotonic()
    run_csv, kept_csv = (os.path.join(os.path.dirname(db), "trials.csv") for db in (run_db, kept_db))

    def copy(*, force: bool = False) -> None:
        nonlocal last
        if not os.path.exists(run_db) or (not force and time.monotonic() - last < every):
            return
        last = time.monotonic()
        with sqlite3.connect(run_db) as source, sqlite3.connect(kept_db + ".tmp") as target:
            source.backup(target)  # a consistent copy of a database being written
        os.replace(kept_db + ".tmp", kept_db)
        if os.path.exists(run_csv):  # written once the first trial ends
            shutil.copy2(run_csv, kept_csv)
        landed([kept_db, kept_csv], f"bench data: {what} so far")

    try:
        run_watched(command, poll=copy)
    finally:  # a stopped search's last trials are kept too
        copy(force=True)
