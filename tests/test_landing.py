"""bench/landing.py: the long benchmarks' kept models survive a change of machine without mixing one
training's record with another training's files."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.landing import KEPT_FILES, keep_models, models_dir
from nas.choice import retrain_dir
from trainers.full import Recipe

RECIPE = Recipe(epochs=30)


def _accuracy(path: str) -> float:
    with open(path) as f:
        return json.load(f)["val_accuracy"]


def _train(runs: str, arch_id: str, accuracy: float, *, files=KEPT_FILES) -> str:
    folder = retrain_dir(runs, dataset="cifar10", recipe=RECIPE, arch_id=arch_id)
    os.makedirs(folder, exist_ok=True)
    for name in files:
        with open(os.path.join(folder, name), "w") as f:
            json.dump({"val_accuracy": accuracy, "file": name}, f)
    return folder


def test_a_finished_training_is_kept_as_its_records_without_model_files(tmp_path):
    out = str(tmp_path / "out")
    folder = _train(str(tmp_path / "a"), "abc", 0.85, files=(*KEPT_FILES, "model_fp32.tflite", "model_int8.tflite"))
    written = keep_models(str(tmp_path / "a"), out, RECIPE, dataset="cifar10")

    kept = os.path.join(models_dir(out, RECIPE), "abc")
    assert sorted(os.listdir(kept)) == sorted(KEPT_FILES) and sorted(written) == sorted(os.path.join(kept, n) for n in KEPT_FILES)
    assert not any(name.endswith(".tflite") for name in KEPT_FILES)
    assert os.path.exists(os.path.join(folder, "model_fp32.tflite"))  # the run's own files stay where they are


def test_a_second_training_sets_the_earlier_record_aside(tmp_path):
    out = str(tmp_path / "out")
    _train(str(tmp_path / "a"), "abc", 0.85, files=("result.json", "model_card.json"))
    keep_models(str(tmp_path / "a"), out, RECIPE, dataset="cifar10")
    kept = os.path.join(models_dir(out, RECIPE), "abc")

    second_machine = str(tmp_path / "b")  # trained again there
    _train(second_machine, "abc", 0.86)
    written = keep_models(second_machine, out, RECIPE, dataset="cifar10")

    for name in KEPT_FILES:  # the kept set is the new training's, whole
        assert _accuracy(os.path.join(kept, name)) == 0.86
    earlier = os.path.join(kept, "earlier", "1", "result.json")
    assert _accuracy(earlier) == 0.85
    assert not os.path.exists(os.path.join(kept, "earlier", "1", "provenance.json"))  # never kept: nothing to move
    assert earlier in written and os.path.join(kept, "result.json") in written

    # keeping again copies nothing and moves nothing
    assert keep_models(second_machine, out, RECIPE, dataset="cifar10") == []
    assert not os.path.exists(os.path.join(kept, "earlier", "2"))


def test_landing_a_runs_records_keeps_the_earlier_ones_and_only_this_recipes(tmp_path):
    from bench.landing import land_records
    from results.compare import CompareRecord, load, save

    def record(model: str, recipe_id: str, accuracy: float) -> CompareRecord:
        return CompareRecord(
            model=model, kind="reference", arch="conv_r1_k3_s1_c16-head_c64", arch_id=model, params_count=1000,
            multiply_adds=None, latency_fp32_ms=0.2, latency_int8_ms=0.1, test_accuracy_fp32=accuracy,
            test_accuracy_int8=accuracy, val_accuracy=accuracy, epochs=30, train_seconds=60.0, recipe_id=recipe_id,
            dataset="cifar10", fingerprint="machine",
        )  # fmt: skip

    kept, run = str(tmp_path / "compare_30.json"), str(tmp_path / "compare.json")
    fingerprints = {"machine": {"id": "machine"}}
    save(kept, [record("a", "r30", 0.80)], recipes={"r30": {}}, fingerprints=fingerprints, runs=[{"recipe_id": "r30"}])
    save(
        run,
        [record("b", "r30", 0.81), record("c", "r100", 0.90)],
        recipes={"r30": {}, "r100": {}},
        fingerprints=fingerprints,
        runs=[{"recipe_id": "r30", "code": "x"}, {"recipe_id": "r100"}],
    )
    land_records(run, kept, "r30")
    assert sorted((r.model, r.test_accuracy_int8) for r in load(kept)) == [("a", 0.80), ("b", 0.81)]


def test_committing_unchanged_files_is_quiet_and_adds_no_commit(tmp_path, capsys):
    import subprocess

    from bench.landing import commit

    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)  # noqa: E731
    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (repo / "other.txt").write_text("committed")
    git("add", "other.txt")
    git("commit", "-q", "-m", "start")
    (repo / "result.json").write_text("1")
    (repo / "other.txt").write_text("work in progress")  # someone's uncommitted edit stays out
    commit([str(repo / "result.json")], "first", repo=str(repo))
    commit([str(repo / "result.json")], "again, unchanged", repo=str(repo))
    assert git("log", "--format=%s").stdout.split("\n")[:-1] == ["first", "start"]
    assert "warning" not in capsys.readouterr().out
    assert "other.txt" in git("status", "--porcelain").stdout


def test_a_finished_models_checkpoint_is_dropped_at_once_and_an_unfinished_one_kept_only_when_due(tmp_path):
    from bench.landing import CheckpointKeeper
    from trainers.full import CHECKPOINT, RESULT

    runs, out, landed = str(tmp_path / "runs"), str(tmp_path / "out"), []
    keeper = CheckpointKeeper(runs, out, dataset="cifar10", landed=lambda paths, message: landed.append(message), every=3600)
    kept = os.path.join(out, "checkpoints", RECIPE.recipe_id, "abc", CHECKPOINT)
    os.makedirs(os.path.dirname(kept))
    with open(kept, "w") as f:
        f.write("kept in an earlier session")
    folder = _train(runs, "abc", 0.85, files=(RESULT,))  # it finished since
    unfinished = os.path.join(os.path.dirname(folder), "def", CHECKPOINT)
    os.makedirs(os.path.dirname(unfinished))
    with open(unfinished, "w") as f:
        f.write("epoch 3")

    keeper.poll()  # long before the next keep is due
    assert not os.path.exists(kept) and landed == ["bench data: unfinished checkpoints (finished ones dropped)"]
    assert not os.path.exists(os.path.join(out, "checkpoints", RECIPE.recipe_id, "def"))  # copying waits


def test_checkpoints_are_kept_within_the_runs_byte_budget_even_when_forced(tmp_path):
    """A session's submission has a size limit: a run commits at most `budget_mb` of checkpoints, so a
    checkpoint bigger than what is left stays out (and says so) rather than sinking the whole session."""
    import numpy as np

    from bench.landing import CheckpointKeeper
    from trainers.full import CHECKPOINT, save_checkpoint

    runs, out, landed = str(tmp_path / "runs"), str(tmp_path / "out"), []
    keeper = CheckpointKeeper(
        runs, out, dataset="cifar10", landed=lambda paths, message: landed.append(paths), every=0, budget_mb=1.5
    )
    base = os.path.dirname(retrain_dir(runs, dataset="cifar10", recipe=RECIPE, arch_id="x"))
    for arch_id in ("abc", "def"):
        os.makedirs(os.path.join(base, arch_id))
        save_checkpoint(
            os.path.join(base, arch_id, CHECKPOINT), state={"epochs_done": 3}, arrays={"w_0": np.zeros(250_000, np.float32)}
        )

    keeper.poll(force=True)
    kept = os.path.join(out, "checkpoints", RECIPE.recipe_id)
    assert sorted(os.listdir(kept)) == ["abc"] and len(landed) == 1  # 1 MB of 1.5: the second would exceed it
    os.utime(os.path.join(base, "abc", CHECKPOINT), (time.time() + 5, time.time() + 5))  # a later epoch
    keeper.poll(force=True)
    assert sorted(os.listdir(kept)) == ["abc"] and len(landed) == 1  # nothing left in the budget

    # a checkpoint over the repository's 2 MB a file stays out whatever the budget
    big = CheckpointKeeper(runs, str(tmp_path / "big"), dataset="cifar10", landed=lambda *_: None, every=0, budget_mb=60)
    os.makedirs(os.path.join(base, "ghi"))
    save_checkpoint(
        os.path.join(base, "ghi", CHECKPOINT), state={"epochs_done": 3}, arrays={"w_0": np.zeros(750_000, np.float32)}
    )
    big.poll(force=True)
    assert sorted(os.listdir(os.path.join(tmp_path, "big", "checkpoints", RECIPE.recipe_id))) == ["abc", "def"]


def test_a_result_file_lands_each_time_it_is_written_and_not_otherwise(tmp_path):
    from bench.landing import CheckpointKeeper, landing_on_write

    path, landed = tmp_path / "proxy_vs_final.json", []
    keeper = CheckpointKeeper(str(tmp_path / "runs"), str(tmp_path / "out"), dataset="cifar10", landed=None, every=3600)
    poll = landing_on_write(str(path), lambda: landed.append(path.read_text()), keeper)
    poll()
    assert landed == []  # nothing written yet
    path.write_text("first final")
    poll()
    poll()
    assert landed == ["first final"]
    path.write_text("second final")
    os.utime(path, (time.time() + 5, time.time() + 5))  # a filesystem's coarse clock must not hide a write
    poll()
    assert landed == ["first final", "second final"]


def test_stopping_a_benchmark_stops_the_command_it_runs(tmp_path):
    """SIGTERM to a benchmark's process (bench/cifar100.py, bench/proof.py) reaches the training it runs:
    before, `kill` of the benchmark left its `nas retrain` training on, orphaned, for half an hour."""
    import signal
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    said = tmp_path / "child.txt"
    child = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(said)!r}, 'w').write('stopped'), sys.exit(3)))\n"
        f"open({str(said)!r}, 'w').write('started')\n"
        "time.sleep(60)\n"
    )
    driver = (
        f"import sys; sys.path.insert(0, {root!r})\n"
        "from bench.landing import run_watched\n"
        f"run_watched([sys.executable, '-c', {child!r}], poll=lambda: None)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (said.exists() and said.read_text() == "started") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert said.read_text() == "started"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert said.read_text() == "stopped"  # the command got the signal and stopped
    assert process.returncode != 0 and "stopped by signal 15" in stderr


def test_an_alternative_proxy_check_reuses_the_finals_of_the_main_one(tmp_path):
    """Finals trained on an earlier machine live on only in the main check's file: an alternative proxy's
    check of the same architectures takes them from there instead of training them again."""
    from bench.landing import reuse_finals
    from nas.proxy_check import CheckRecord, FinalBudget, load_records, save_records

    recipe = Recipe(epochs=15)
    label, other = FinalBudget(recipe).label, FinalBudget(RECIPE).label  # the check's final; another recipe's
    main, alternative = str(tmp_path / "proxy_vs_final.json"), str(tmp_path / "proxy_vs_final_20000x1.json")
    final = {"accuracy": 0.506, "seconds": 1420.8, "epochs": 15}
    save_records(
        main,
        {
            "a": CheckRecord(name="trial-19", arch="a", results={"20000x2": {"accuracy": 0.17}, label: final}),
            "b": CheckRecord(name="trial-7", arch="b", results={"20000x2": {"accuracy": 0.05}, other: final}),
        },
        {"dataset": "cifar100"},
    )
    save_records(alternative, {"a": CheckRecord(name="trial-19", arch="a", results={"20000x1": {"accuracy": 0.12}})}, {})

    reuse_finals(main, alternative, recipe)
    records = load_records(alternative)
    assert records["a"].results == {"20000x1": {"accuracy": 0.12}, label: final}  # its own proxy kept
    assert "b" not in records  # no final under this recipe, and no proxy is taken from the main check

    reuse_finals(main, str(tmp_path / "new.json"), recipe)  # a check not started yet starts with the finals
    assert load_records(str(tmp_path / "new.json"))["a"].results == {label: final}


def test_a_step_4_block_names_the_recipe_its_nas_compare_trains():
    """bench/proof.py finds a comparison's records by recipe id: the plan's whole 115 minutes must give the id
    `nas compare --minutes 115` trains under (it parses a float; they once differed, and landing failed)."""
    from bench.proof import full_recipe

    recipe, name = full_recipe({"minutes": 115, "models": []})
    assert (recipe.recipe_id, name) == (Recipe(minutes=float("115")).recipe_id, "115min")
    recipe, name = full_recipe({"minutes": 115, "recipe": {"val_images": 0}, "models": []})
    assert name == "115min_val_images0" and recipe.val_images == 0 and not recipe.validated
    assert full_recipe({"epochs": 100, "models": []})[0].recipe_id == "4936f582"


def test_the_compare_command_a_benchmark_runs_trains_the_recipe_it_lands():
    """The flags bench/landing.py gives `nas compare` parse back into the very recipe whose records it then lands
    (a plan's `val_images` 0 was once left out: the run trained the default recipe and landing found no records)."""
    from bench.landing import recipe_flags
    from nas.cli import _recipe, build_parser

    for recipe in (
        Recipe(minutes=115.0, val_images=0),
        Recipe(epochs=30, lr=0.05, cutout=0, deterministic=True, train_images=2_000),
        Recipe(epochs=100),
    ):
        words = recipe_flags(recipe)
        args = build_parser().parse_args(["compare", "--study", "s", *words])
        assert _recipe(args).recipe_id == recipe.recipe_id, words
    assert recipe_flags(Recipe(minutes=115.0, val_images=0), leave_out=("minutes",)) == ["--val-images", "0"]
