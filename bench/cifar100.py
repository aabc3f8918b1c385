"""CIFAR-100 for real (issue 20): a search on 100 classes, whether its proxy ranks like final accuracy, and its
best member against MobileNetV2-0.5. Hours of CPU, run across sessions like bench/proof.py:

    python bench/cifar100.py --data-dir data --commit      # every step not done yet, in order
    python bench/cifar100.py --only check alternatives

Steps, each resumable (trials, epochs, architectures) and skipped when its results are there:

    search        `nas search --dataset cifar100 --study-trials 60` (20,000 images x 2 epochs, the default when it
                  ran, which the study keeps); its study and trials.csv are copied to bench/data/cifar100/ as it goes
    check         `nas proxy-check` of 8 of the study's trials spread over its latency range and MobileNetV2-0.5
                  against the retraining recipe at 15 epochs (final validation accuracy)
    finals        the check's finals alone, from the far end of its list: a second process beside `check`
                  (one process trains in a model's folder at a time; each takes what the other is not training)
    alternatives  the same check with other proxy budgets (the finals are reused: only the proxies train)
    compare       `nas compare` at 30 epochs: the study's best-reward front member, then MobileNetV2-0.5 (one
                  at a time, each record kept as it lands), into compare_30.json; `--compare-epochs 100` trains
                  the pair to the recipe's full length (compare_100.json), `--seed 1` again with another seed
                  (compare_30_seed1.json): whether the lead at 30 epochs holds

Results go to bench/data/cifar100/; unfinished checkpoints are kept there too (bench/landing.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

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
    restore_study,
    reuse_finals,
    run_watched,
    search_kept,
)

DATASET = "cifar100"
STUDY = "mnasnet-cifar100"
TRIALS = 60
CHECK_EPOCHS, COMPARE_EPOCHS = 15, 30
MORE, REFERENCE = 8, "mobilenetv2-0.5"
#: (images, epochs) beside the study's 20,000 x 2 (the default when it ran): fewer passes, and more images
ALTERNATIVES = ((20_000, 1), (45_000, 1), (45_000, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    parser.add_argument("--runs-dir", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "data", "cifar100"))
    parser.add_argument("--only", nargs="+", choices=("search", "check", "finals", "alternatives", "compare"))
    parser.add_argument("--commit", action="store_true", help="commit each result as it lands (in --out's repository)")
    parser.add_argument("--proxies-only", action="store_true", help="check, alternatives: train no final, take the finished ones")
    parser.add_argument("--checkpoint-minutes", type=float, default=120.0)
    parser.add_argument("--compare-epochs", type=int, default=COMPARE_EPOCHS, help="compare: the recipe's length")
    parser.add_argument("--seed", type=int, default=0, help="compare: the recipe's seed")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep every unfinished checkpoint now, then stop")
    args = parser.parse_args()

    from trainers.full import Recipe

    out, runs = os.path.abspath(args.out), os.path.abspath(args.runs_dir)
    os.makedirs(out, exist_ok=True)
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=out, capture_output=True, text=True).stdout.strip()
    steps = args.only or ("search", "check", "alternatives", "compare")

    def landed(paths: list[str], message: str) -> None:
        if args.commit and repo:
            commit(paths, message, repo=repo)

    keeper = CheckpointKeeper(runs, out, dataset=DATASET, landed=landed, every=args.checkpoint_minutes * 60)
    if args.keep_checkpoints:
        keeper.poll(force=True)
        return
    keeper.restore()
    run_db, kept_db = os.path.join(runs, STUDY, "study.db"), os.path.join(out, "study.db")
    restore_study(kept_db, run_db)
    study = ["--study", STUDY, "--storage", f"sqlite:///{run_db}"]
    nas = [sys.executable, "-m", "nas.cli"]
    places = ["--data-dir", args.data_dir, "--runs-dir", runs]
    main_check = os.path.join(out, "proxy_vs_final.json")  # the default proxy's; the alternatives reuse its finals

    if "search" in steps:
        # every trial trained to the end, as its first 55 were (early stopping became the default at 55)
        command = [*nas, "search", "--dataset", DATASET, *study, "--study-trials", str(TRIALS), "--early-stop", "off", *places]
        search_kept(command, run_db=run_db, kept_db=kept_db, landed=landed, what="the CIFAR-100 search's study")

    def check(path: str, budget: list[str]) -> None:
        restore_results(runs, out, Recipe(epochs=CHECK_EPOCHS), dataset=DATASET)
        if path != main_check:
            reuse_finals(main_check, path, Recipe(epochs=CHECK_EPOCHS))
        command = [
            *nas, "proxy-check", *study, "--archs", str(MORE), "--references", REFERENCE,
            "--final-epochs", str(CHECK_EPOCHS), *budget, "--out", path, *places,
        ] + (["--proxies-only"] if args.proxies_only else [])  # fmt: skip

        def land(partial: str = "") -> None:
            kept = keep_models(runs, out, Recipe(epochs=CHECK_EPOCHS), dataset=DATASET)
            what = f"{os.path.basename(path)}{partial}"
            landed([path, *kept], f"bench data: CIFAR-100 proxy against final accuracy at {CHECK_EPOCHS} epochs ({what})")

        run_watched(command, poll=landing_on_write(path, lambda: land(", partial"), keeper))
        land()

    if "check" in steps:
        check(main_check, [])
    if "finals" in steps and "check" not in steps:
        from nas.proxy_check import FinalBudget, load_records

        recipe = Recipe(epochs=CHECK_EPOCHS)
        restore_results(runs, out, recipe, dataset=DATASET)
        # a final the check recorded on an earlier machine (its folder gone with it) is not trained again
        final = FinalBudget(recipe).label
        recorded = {arch for arch, record in load_records(main_check).items() if final in record.results}
        for arch in reversed(check_archs(run_db)):
            if arch in recorded:
                continue
            command = [*nas, "retrain", "--arch", arch, "--dataset", DATASET, "--epochs", str(CHECK_EPOCHS), *places]
            if run_watched(command, poll=keeper.poll, allowed=(0, 2)) == 2:  # another process trains it (or bad input: said)
                continue
            kept = keep_models(runs, out, recipe, dataset=DATASET)
            if kept:
                landed(kept, f"bench data: a CIFAR-100 final at {CHECK_EPOCHS} epochs for the proxy check")
            keeper.poll()
    if "alternatives" in steps:
        for images, epochs in ALTERNATIVES:
            check(
                os.path.join(out, f"proxy_vs_final_{images}x{epochs}.json"),
                ["--train-images", str(images), "--epochs", str(epochs)],
            )

    if "compare" in steps:  # one model at a time, each record committed as it lands and never trained again
        recipe = Recipe(epochs=args.compare_epochs, seed=args.seed)
        name = f"compare_{recipe.epochs}" + (f"_seed{recipe.seed}" if recipe.seed else "")
        compare_each(
            [{"trial": best_reward_member(run_db)}, {"reference": REFERENCE}], recipe,
            os.path.join(out, f"{name}.json"), study=STUDY, storage=f"sqlite:///{run_db}",
            dataset=DATASET, runs_dir=runs, out=out, data_dir=args.data_dir, poll=keeper.poll, landed=landed,
        )  # fmt: skip


def best_reward_member(run_db: str) -> int:
    """The study's front member of best MnasNet reward (what `nas compare --front --top 1` takes)."""
    import optuna

    from results.pareto import pareto_info

    front = pareto_info(optuna.load_study(study_name=STUDY, storage=f"sqlite:///{run_db}")).front
    return max(front, key=lambda r: r.reward or 0.0).number


def check_archs(run_db: str) -> list[str]:
    """The architectures `check` compares, in its order: the study's candidates, then the reference."""
    import optuna

    from nas.config import SearchConfig
    from nas.proxy_check import candidates

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{run_db}")
    chosen = candidates(SearchConfig(dataset=DATASET), MORE, references=(REFERENCE,), study=study)
    return [arch for _, arch, _ in chosen]


if __name__ == "__main__":
    main()
