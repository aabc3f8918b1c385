"""The proof, run to the end (and across sessions): the found models against the references at equal
latency, and the proxy against final accuracy, from one committed study.

    python bench/proof.py --data-dir data              # every step not done yet, in order
    python bench/proof.py --data-dir data --only compare
    python bench/proof.py --show                        # what bench/data/proof/ holds

Beside another long run (bench/cifar100.py) on 2 cores, give each one training thread:
`TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1` (1.33x the throughput of one run after the other,
`bench/onednn_speed.py --settings sharing`); step `full` runs alone.

Its inputs and results live in bench/data/proof/, which survives a change of machine:

    study.db, trials.csv   the default search (`nas search --trials 60`, 2026-12-01: the 8,000 x 1 proxy) every
                           step but the shipped ones draws from
    plan.json              which trials and references each step takes (chosen once, after the search)
    compare_30.json        `nas compare` at 30 epochs: one record per model, merged run after run
    compare_100.json       the same at the recipe's full length (step 4)
    proxy_vs_final.json    `nas proxy-check --final-epochs 30`: proxy and final accuracy per architecture
    models/<recipe>/<arch>/  each finished training's records (result, and where exported its model card): a
                           later machine reuses its final accuracy instead of retraining, and re-times the
                           compared models through twins (bench/retime.py); no trained model files are kept
    checkpoints/<recipe>/<arch>/  unfinished trainings (files of up to 2 MB), kept at most every 2 hours within a
                           size budget, and at a session's end by `--keep-checkpoints --commit` (bench/landing.py)
    timing.json            every quiet side-by-side timing of the compared models (bench/retime.py)
    shipped/               step 3b: the default search again with the proxy the product now ships (study.db,
                           trials.csv), and its front against the references at 30 epochs (compare_30.json)
    mobilevit/             step 5: the same for the space with MobileViT blocks

Steps, each resumable per epoch and skipped when its results are there:

    curve     MobileNetV2-0.5 at 30 epochs with the learning curve (bench/recipe_curves.py); also the
              comparison's MobileNetV2-0.5
    compare   `nas compare` one model at a time, so compare_30.json is committed after each
    proxy     `nas proxy-check --study ... --final-epochs 30` (reuses the compared models)
    alternatives  the same check with each other proxy budget of the plan, and the default budget with
              other training seeds (to average), into proxy_vs_final_<images>x<epochs>.json and
              proxy_vs_final_seed<S>.json; the finals are reused, only the proxies train
    shipped-search   step 3b: `nas search --study-trials 60` with the shipped defaults, into its own study
    shipped-compare  `nas compare` at 30 epochs of the references (their trained models are reused) and the
              best-reward front member of each third of the shipped front's latency range (the rule that
              chose trials 73, 64 and 57 from the first study), chosen into plan.json once its search is done
    int8-search, int8-compare  step 4's "larger found model": the default search timed in int8, no slower than
              MobileNetV2-0.5's int8 file on the machine that searches (plan.json's "int8" "target_of": measured
              once with `nas calibrate`'s code, kept in plan.json as T and the limit), its front at 30 epochs;
              the study's fingerprint ties it to one machine: run the search within one session
    int8-s2-search, int8-s2-compare  the same on MobileNetV2's stride-2 stem (`--stem-stride 2`): on the Intel
              Xeon MobileNetV2-0.5's int8 latency lies below nearly all of the stride-1 space (1 of 60 under it)
    mobilevit-search, mobilevit-compare  step 5: the same for `--space mnasnet-mobilevit` with the shipped
              defaults (early stopping on), its front beside MobileViT-XXS (mobilevit/); the conv-only winners
              join them in one table through `bench/retime.py --compare` with every comparison file
    full      step 4: `nas compare` at the recipe's full length for the pair plan.json's "full" names (the
              best found model under MobileNetV2-0.5's int8 latency here, and MobileNetV2-0.5), into
              compare_<epochs>.json; on 2 cores this is meant to run alone, inside its 2-hour budget
    full-timed  the pair of plan.json's "full_timed" with as many epochs as fit in its "minutes" here
              (`nas compare --minutes`), into compare_<minutes>min.json: what the whole budget buys
    full-all  the same with every training image and no validation (plan.json's "full_all", whose "recipe"
              sets `val_images` 0), into compare_<minutes>min_val_images0.json: what 5,000 more images buy

With `--commit`, every result file is committed the moment it lands (only those paths).

`--only alternatives --proxies-only --runs-dir OTHER` runs the alternatives' proxies beside a proof run that is
still training finals (in a runs folder of its own, keeping no checkpoints): each file compares with the finals
finished so far; the later `alternatives` step of the main run fills in the rest without running a proxy again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from landing import (  # noqa: E402
    CheckpointKeeper,
    commit,
    compare_each,
    keep_models,
    landing_on_write,
    restore_results,
    reuse_finals,
    run_watched,
    search_kept,
)

if TYPE_CHECKING:
    from trainers.full import Recipe

EPOCHS = 30
STUDY = "mnasnet-cifar10"
#: the searches run again besides the first (plan.json names each one's study, trials, flags, references)
SEARCHES = ("shipped", "mobilevit", "int8", "int8-s2")
STEPS = (
    "curve",
    "compare",
    "proxy",
    "alternatives",
    *(f"{n}-{step}" for n in SEARCHES for step in ("search", "compare")),
    "full",
    "full-timed",
    "full-all",
)
#: step 4's steps and their plan.json blocks: {"epochs": E} or {"minutes": M}, optional "recipe" (more Recipe
#: fields), "models"
FULL_STEPS = {"full": "full", "full-timed": "full_timed", "full-all": "full_all"}
DATASET = "cifar10"


def nas(*args: str, runs_dir: str) -> None:
    """Run a `nas` command, its output on this terminal; stop on failure."""
    command = [sys.executable, "-m", "nas.cli", *args, "--runs-dir", runs_dir]
    print("$ nas " + " ".join(args), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--runs-dir", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "data", "proof"), help="where inputs and results live")
    parser.add_argument("--only", nargs="+", choices=STEPS)
    parser.add_argument("--commit", action="store_true", help="commit each result as it lands (in --out's repository)")
    parser.add_argument("--show", action="store_true")
    parser.add_argument(
        "--proxies-only", action="store_true", help="alternatives: train no final (another run does), keep no checkpoints"
    )
    parser.add_argument(
        "--checkpoint-minutes", type=float, default=120.0, help="commit unfinished checkpoints at most this often (with --commit)"
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep every unfinished checkpoint now (--commit: commit it), then stop",
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
        for name in sorted(os.listdir(out)):  # step 4's longer recipes, each in a file of its own
            if name.startswith("compare_") and name.endswith(".json") and name != os.path.basename(compare_file):
                print(f"\n{name}:\n{format_table(load(os.path.join(out, name)))}")
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
            nas(
                "proxy-check",
                "--show",
                "--out",
                proxy_file,
                *_study_flags(STUDY, out),
                "--final-epochs",
                str(EPOCHS),
                runs_dir=runs,
            )
        return
    with open(os.path.join(out, "plan.json")) as f:
        plan = json.load(f)
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=out, capture_output=True, text=True).stdout.strip()
    recipe = Recipe(epochs=EPOCHS)
    steps = args.only or STEPS
    if args.proxies_only and tuple(steps) != ("alternatives",):
        parser.error("--proxies-only goes with --only alternatives (the other steps train finals)")

    def landed(paths: list[str], message: str) -> None:
        if args.commit and repo:
            commit(paths, message, repo=repo)

    keeper = CheckpointKeeper(runs, out, dataset=DATASET, landed=landed, every=args.checkpoint_minutes * 60)
    if args.keep_checkpoints:
        keeper.poll(force=True)
        return
    if not args.proxies_only:  # with it, the checkpoints are the other run's, which trains them
        keeper.restore()

    if "curve" in steps:
        env = {**os.environ, "NAS_RECIPE_CURVES": os.path.join(os.path.dirname(out), "recipe_curves.json")}
        command = [sys.executable, os.path.join(ROOT, "bench", "recipe_curves.py"), "--only", "mv2-0.5-e30"]
        subprocess.run([*command, "--data-dir", args.data_dir, "--runs-dir", runs], cwd=ROOT, env=env, check=True)
        landed([env["NAS_RECIPE_CURVES"]], "bench data: MobileNetV2-0.5 30-epoch curve with the re-estimated weight average")

    def compare_models(models: list[dict], recipe_of: Recipe, path: str, *, study: str = STUDY, study_out: str = out) -> None:
        """bench/landing.py's compare_each of trials of `study` (kept in `study_out`) and references."""
        storage = f"sqlite:///{os.path.join(study_out, 'study.db')}"
        compare_each(
            models, recipe_of, path, study=study, storage=storage, dataset=DATASET, runs_dir=runs, out=out,
            data_dir=args.data_dir, poll=keeper.poll, landed=landed,
        )  # fmt: skip

    if "compare" in steps:
        compare_models(plan["compare"], recipe, compare_file)

    def proxy_command(path: str) -> list[str]:
        """`nas proxy-check` of the plan's architectures against their final accuracy, into `path`."""
        proxy = plan["proxy"]
        trials = [word for number in proxy["trials"] for word in ("--trial", str(number))]
        images, epochs = proxy["budget"]  # the study's own proxy, named: the shipped default has moved on since
        return [
            sys.executable, "-m", "nas.cli", "proxy-check", *_study_flags(STUDY, out), *trials, "--archs", str(proxy["more"]),
            "--train-images", str(images), "--epochs", str(epochs),
            "--references", ",".join(proxy["references"]), "--final-epochs", str(EPOCHS),
            "--data-dir", args.data_dir, "--out", path, "--runs-dir", runs,
        ]  # fmt: skip

    if "proxy" in steps or "alternatives" in steps:
        restore_results(runs, out, recipe, dataset=DATASET)
    if "proxy" in steps:

        def land_partial() -> None:
            kept = keep_models(runs, out, recipe, dataset=DATASET)
            landed([proxy_file, *kept], f"bench data: proxy against final accuracy at {EPOCHS} epochs (partial)")

        run_watched(proxy_command(proxy_file), poll=landing_on_write(proxy_file, land_partial, keeper))
        landed(
            [proxy_file, *keep_models(runs, out, recipe, dataset=DATASET)],
            f"bench data: proxy against final accuracy at {EPOCHS} epochs",
        )

    if "alternatives" in steps:  # other proxies on the same architectures: the finals are reused
        runs_of = [
            (f"{images}x{epochs}", ["--train-images", str(images), "--epochs", str(epochs)])
            for images, epochs in plan["proxy"].get("alternatives", ())
        ] + [(f"seed{seed}", ["--seed", str(seed)]) for seed in plan["proxy"].get("seeds", ())]  # averaged later
        for name, flags in runs_of:
            path = os.path.join(out, f"proxy_vs_final_{name}.json")
            reuse_finals(proxy_file, path, recipe)
            if args.proxies_only:  # finals the other run finished since
                restore_results(runs, out, recipe, dataset=DATASET)
            only = ["--proxies-only"] if args.proxies_only else []
            run_watched([*proxy_command(path), *flags, *only], poll=(lambda: None) if args.proxies_only else keeper.poll)
            landed([path], f"bench data: the {name} proxy against final accuracy at {EPOCHS} epochs")

    for name in SEARCHES:  # a search of its own, then its front at 30 epochs beside the references
        block, folder = plan.get(name, {}), os.path.join(out, name)
        if f"{name}-search" in steps:
            if block.get("target_of") and "target_ms" not in block:  # measured once, on the machine that searches
                block |= _reference_latency(block["target_of"], block.get("flags", []), runs_dir=runs)
                _write_plan(plan, out)
                landed([os.path.join(out, "plan.json")], f"bench data: the {name} search's target, measured")
            run_db = os.path.join(runs, block["study"], "study.db")
            command = [sys.executable, "-m", "nas.cli", "search", "--study", block["study"], "--storage", f"sqlite:///{run_db}"]
            command += ["--study-trials", str(block["trials"]), *block.get("flags", []), "--data-dir", args.data_dir]
            if "target_ms" in block:  # no slower than the reference: its latency is both T and the limit
                command += ["--target-ms", str(block["target_ms"]), "--max-latency-ms", str(block["target_ms"])]
            kept_db = os.path.join(folder, "study.db")
            search_kept(
                [*command, "--runs-dir", runs], run_db=run_db, kept_db=kept_db, landed=landed, what=f"the {name} search's study"
            )
        if f"{name}-compare" in steps:
            if not block.get("compare"):  # chosen once, by the rule the first comparison used
                references = block.get("references", plan["proxy"]["references"])
                block["compare"] = _choose_members(block, os.path.join(folder, "study.db"), references)
                if block["compare"]:
                    _write_plan(plan, out)
                    landed([os.path.join(out, "plan.json")], f"bench data: the {name} search's members to compare, chosen")
            if not block.get("compare"):
                print(f"step {name}-compare: its search is not finished (plan.json {name!r})", flush=True)
            else:
                compare_models(
                    block["compare"], recipe, os.path.join(folder, "compare_30.json"), study=block["study"], study_out=folder
                )

    # step 4: the recipe's full length for the pair the plan names (chosen once the timings exist); then, where
    # the plan says so, the same pair with as many epochs as fit in a time budget (`nas compare --minutes`), and
    # with more of the recipe changed
    for step, key in FULL_STEPS.items():
        block = plan.get(key)
        if step not in steps:
            continue
        if block is None:
            print(f"step {step}: the plan names no pair yet (plan.json {key!r})", flush=True)
            continue
        recipe_of, name = full_recipe(block)
        compare_models(block["models"], recipe_of, os.path.join(out, f"compare_{name}.json"))


def full_recipe(block: dict) -> tuple[Recipe, str]:
    """A step-4 block's recipe and the name of its comparison file: its length (`epochs` or `minutes`), then each
    other field it sets ({"epochs": 100} -> compare_100, {"minutes": 115, "recipe": {"val_images": 0}} ->
    compare_115min_val_images0)."""
    length = {"minutes": block["minutes"]} if "minutes" in block else {"epochs": block["epochs"]}
    more = block.get("recipe", {})
    name = f"{block['minutes']:g}min" if "minutes" in block else str(block["epochs"])
    name += "".join(f"_{field}{value}" for field, value in sorted(more.items()))
    from trainers.full import Recipe  # (imported late, as in main: --help answers without TensorFlow's import)

    return Recipe(**length, **more), name


def _write_plan(plan: dict, out: str) -> None:
    """plan.json again, with what a step chose or measured once."""
    with open(os.path.join(out, "plan.json"), "w") as f:
        json.dump(plan, f, indent=1)
        f.write("\n")


def _reference_latency(name: str, flags: list[str], *, runs_dir: str) -> dict:
    """The latency of reference `name` on this machine, measured as a search with `flags` measures (its precision),
    with the machine it was measured on: the search's target and limit ("no slower than MobileNetV2-0.5 here")."""
    from nas import api
    from nas.config import DeviceConfig

    precision = flags[flags.index("--latency-precision") + 1] if "--latency-precision" in flags else "fp32"
    rows, fingerprint, _ = api.calibrate(DeviceConfig(latency_precision=precision), names=[name], runs_dir=runs_dir)
    (row,) = rows
    print(f"{name}: {row.latency_median_ms:.4f} ms ({precision}) on {fingerprint['cpu']}: the search's target", flush=True)
    return {"target_ms": round(row.latency_median_ms, 4), "target_measured_on": fingerprint["cpu"]}


def _choose_members(block: dict, study_db: str, references: list[str]) -> list[dict]:
    """The best-reward front member of each third of the front's latency range (cheapest first), after the
    references (their trained models are reused: only re-timed and scored); [] until the search is done."""
    import optuna

    from nas.searching import study_evaluations
    from results.pareto import pareto_front, trial_rows

    if not os.path.exists(study_db):
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=block["study"], storage=f"sqlite:///{study_db}")
    trials = study.get_trials(deepcopy=False)
    if study_evaluations(trials) < block["trials"] or any(t.state.name == "RUNNING" for t in trials):
        return []  # the search's own count of what it has done
    rows = trial_rows(study)
    front = pareto_front(rows)
    low, high = front[0].latency_ms, front[-1].latency_ms
    thirds = [[r for r in front if min(2, int(3 * (r.latency_ms - low) / max(1e-12, high - low))) == k] for k in range(3)]
    members = [max(third, key=lambda r: r.reward) for third in thirds if third]
    return [{"reference": name} for name in references] + [{"trial": r.number} for r in members]


def _study_flags(study: str, folder: str) -> list[str]:
    return ["--study", study, "--storage", f"sqlite:///{os.path.join(folder, 'study.db')}"]


if __name__ == "__main__":
    main()
