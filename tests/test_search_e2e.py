"""`nas search` end to end on real CIFAR-10 (a small subset), through the real CLI and SQLite."""

import csv
import subprocess
import sys

import optuna
import pytest

pytest.importorskip("tensorflow")

TINY = ["--train-images", "1024", "--val-images", "500", "--epochs", "1", "--batch-size", "64"]


def nas(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def first_search(cifar_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = nas(
        "search",
        "--trials",
        "3",
        "--data-dir",
        str(cifar_dir),
        "--runs-dir",
        str(runs),
        "--target-ms",
        "0.5",
        "--seed",
        "1",
        *TINY,
        cwd=runs,
    )
    return runs, result


def _study(runs):
    return optuna.load_study(study_name="mnasnet-cifar10", storage=f"sqlite:///{runs}/mnasnet-cifar10/study.db")


def test_search_produces_a_study_a_front_and_a_csv(first_search):
    runs, result = first_search
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.count("] trial ") == 3  # one line per trial
    assert ("Pareto front (accuracy vs latency)" in out and "* = best MnasNet reward" in out) or "best reward" in out
    study = _study(runs)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3
    for trial in complete:
        attrs = trial.user_attrs
        accuracy, latency_ms = trial.values
        assert 0.0 <= accuracy <= 1.0 and accuracy == attrs["accuracy"]
        assert latency_ms == attrs["latency_median_ms"] > 0
        assert attrs["latency_p90_ms"] >= latency_ms
        assert attrs["params_count"] > 10_000
        assert attrs["reward"] == pytest.approx(accuracy * (latency_ms / 0.5) ** -0.07)
        assert attrs["arch"].endswith("head_c1280") and len(attrs["arch_id"]) == 12
    with open(runs / "mnasnet-cifar10" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert all(r["arch"] and float(r["latency_ms"]) > 0 for r in rows)
    assert (runs / "latency_cache.json").is_file()


def test_second_run_resumes_and_adds_trials(first_search, cifar_dir):
    runs, first = first_search
    assert first.returncode == 0
    before = {t.number: (t.user_attrs["arch"], tuple(t.values)) for t in _study(runs).trials}
    result = nas(
        "search",
        "--trials",
        "2",
        "--data-dir",
        str(cifar_dir),
        "--runs-dir",
        str(runs),
        "--target-ms",
        "0.5",
        "--seed",
        "1",
        *TINY,
        cwd=runs,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 earlier trials; adding 2" in result.stdout
    trials = _study(runs).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]  # nothing lost, nothing duplicated
    for number, (arch, values) in before.items():
        assert (trials[number].user_attrs["arch"], tuple(trials[number].values)) == (arch, values)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 5
    front = nas("front", "--study", "mnasnet-cifar10", "--runs-dir", str(runs), cwd=runs)
    assert front.returncode == 0 and "trial" in front.stdout and "head_c1280" not in front.stderr


def test_changing_the_budget_of_a_study_is_refused(first_search, cifar_dir):
    runs, _ = first_search
    result = nas(
        "search",
        "--trials",
        "1",
        "--data-dir",
        str(cifar_dir),
        "--runs-dir",
        str(runs),
        "--epochs",
        "3",
        "--train-images",
        "1024",
        "--val-images",
        "500",
        "--batch-size",
        "64",
        "--target-ms",
        "0.5",
        cwd=runs,
    )
    assert result.returncode == 2
    assert "was run with epochs=1, not 3" in result.stderr and "Traceback" not in result.stderr
