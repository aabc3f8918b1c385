"""Multi-objective early stopping and `nas proxy-check`, on real CIFAR-10 (a small subset)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from nas.early_stop import FALSE_STOP, dominance_rule, stop_threshold

PEERS = ((0, 0.30, ((0.25, 0.40), (0.5, 0.50))), (1, 0.60, ((0.25, 0.60), (0.5, 0.70))), (2, 0.20, ((0.25, 0.20), (0.5, 0.25))))


def test_a_trial_stops_only_when_its_best_faster_peer_was_clearly_better_at_the_same_point():
    rule = dominance_rule(PEERS, latency_ms=0.5, images=500, rungs=2)
    assert rule(0.25, 0.25) and "trial 0" in rule(0.25, 0.25)  # trial 0 is faster and 0.15 better
    margin = stop_threshold(0.40, 0.33, comparisons=2 * 2, images=500)
    assert 0.06 < margin < 0.08  # z(1 - 0.05/4) = 2.24 standard errors of 0.030
    assert rule(0.25, 0.40 - margin + 0.005) is None  # better by less than the margin
    assert dominance_rule(PEERS, latency_ms=0.25, images=500, rungs=2)(0.25, 0.25) is None  # only trial 2 is faster: worse
    assert rule(0.75, 0.0) is None  # no peer has a point there
    assert dominance_rule(PEERS[:2], latency_ms=0.5, images=500, rungs=2)(0.25, 0.0) is None  # too few peers yet


def _stop_rate(trial_accuracy: float, peer_accuracy: float, *, peers: int, runs: int = 4000) -> float:
    """How often the rule stops a trial among `peers` faster peers, every accuracy a binomial draw on
    500 images at each of two rungs (the proxy's curve)."""
    rng = np.random.default_rng(0)
    stopped = 0
    for _ in range(runs):
        draws = rng.binomial(500, [peer_accuracy] * peers + [trial_accuracy], size=(2, peers + 1)) / 500
        curves = [((0.25, draws[0, k]), (0.5, draws[1, k])) for k in range(peers)]
        rule = dominance_rule(tuple((k, 0.1, curves[k]) for k in range(peers)), 0.5, images=500, rungs=2)
        stopped += any(rule(f, draws[r, peers]) for r, f in enumerate((0.25, 0.5)))
    return stopped / runs


def test_a_trial_as_good_as_ten_faster_peers_is_rarely_stopped():
    """Compared with each of ten equally good peers at one standard error, about 80 % were stopped."""
    assert _stop_rate(0.40, 0.40, peers=10) <= FALSE_STOP + 0.01
    assert _stop_rate(0.40, 0.40, peers=3) <= FALSE_STOP + 0.01


def test_a_clearly_dominated_trial_is_still_stopped():
    assert _stop_rate(0.30, 0.45, peers=10, runs=500) > 0.95


@pytest.mark.slow
def test_the_worker_stops_a_dominated_trial_at_the_first_rung(cifar_dir, tmp_path):
    from nas.worker import Status, TrialJob, train_job

    perfect = tuple((n, 0.01, ((0.25, 1.0), (0.5, 1.0))) for n in range(3))  # faster and always right
    common = dict(
        arch="conv_r1_k3_s2_c16-mbconv_r1_k3_s1_e3_c16-mbconv_r1_k3_s2_e3_c24-head_c256",
        dataset="cifar10",
        data_dir=str(cifar_dir),
        train_images=1024,
        val_images=500,
        epochs=1,
        batch_size=64,
        seed=0,
        latency_ms=0.4,
    )
    stopped = train_job(TrialJob(**common, early_stop_peers=perfect))
    assert stopped.status is Status.EARLY_STOPPED, stopped.reason
    assert "early-stopped at 25% of training" in stopped.reason
    assert len(stopped.curve) == 1 and stopped.accuracy == stopped.curve[0][1]
    full = train_job(TrialJob(**common, early_stop_peers=()))
    assert full.status is Status.OK and [f for f, _ in full.curve] == [0.25, 0.5]
    assert (stopped.timings["train_steps"], full.timings["train_steps"]) == (4, 16)  # 1024 / 64 = 16 steps


PROXY_CHECK = [
    "proxy-check", "--archs", "3", "--no-references", "--train-images", "256", "--epochs", "1", "--long-images", "1024",
    "--long-epochs", "1",
    "--val-images", "300", "--runs-dir", "runs",
    "--width", "0.25",  # quarter-width networks: the plumbing is the same, the training cheaper
]  # fmt: skip


@pytest.fixture(scope="module")
def proxy_checked(cifar_dir, tmp_path_factory):
    """`nas proxy-check` of three architectures, 256x1 against 1024x1, and its saved result."""
    root = tmp_path_factory.mktemp("proxy-check")
    args = [sys.executable, "-m", "nas.cli", *PROXY_CHECK, "--data-dir", str(cifar_dir)]
    first = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    (saved,) = (root / "runs" / "proxy-check").glob("*.json")
    return root, args, first, saved


@pytest.mark.slow
def test_proxy_check_ranks_saves_resumes_and_shows(proxy_checked):
    root, args, first, saved = proxy_checked
    assert first.stdout.count(" 256x1  accuracy ") == 3 and first.stdout.count(" 1024x1  accuracy ") == 3
    assert "proxy 256x1 vs long 1024x1 images x epochs: Kendall tau" in first.stdout
    records = json.loads(saved.read_text())["records"]
    assert len(records) == 3
    assert all(0 <= r["results"][budget]["accuracy"] <= 1 for r in records for budget in ("256x1", "1024x1"))
    again = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "accuracy 0." not in again.stdout  # everything was already there
    shown = subprocess.run([*args, "--show"], cwd=root, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "Kendall tau" in shown.stdout and str(saved.name) in shown.stdout


def test_proxy_check_show_without_a_result_is_bad_input(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nas.cli", "proxy-check", "--show", "--runs-dir", "runs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no saved proxy check at" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_proxy_check_against_the_retraining_recipe(proxy_checked, cifar_dir):
    """The long budget can be the retraining recipe: the final validation accuracy of each
    architecture, retrained where `nas retrain` keeps it, written with the summary as it arrives. The
    result file of the check above already holds the proxy's runs: only the retrainings are new."""
    from nas import proxy_check
    from nas.choice import retrain_dir
    from nas.config import SearchConfig
    from results.ranking import kendall_tau
    from search_spaces import ArchSpec
    from trainers.full import Recipe, load_result

    root, _, _, saved = proxy_checked
    config = SearchConfig(width=0.25, val_images=300, data_dir=str(cifar_dir), runs_dir=str(root / "runs"))
    recipe = Recipe(epochs=1, train_images=1024, val_images=500, batch_size=64)
    label = proxy_check.FinalBudget(recipe).label
    trained = []
    _, records = proxy_check.run_check(
        config,
        count=3,
        proxy=proxy_check.Budget(256, 1),
        long=proxy_check.FinalBudget(recipe),
        path=str(saved),
        on_result=lambda record, budget, result: trained.append(budget.label),
    )
    assert trained == [label] * 3  # the same three architectures; their proxy runs were reused
    document = json.loads(saved.read_text())
    pairs = [(r.results["256x1"]["accuracy"], r.results[label]["accuracy"]) for r in records.values()]
    assert document["summary"]["n"] == 3  # the saved summary is the ranking of what was trained
    assert document["summary"]["kendall_tau"] == pytest.approx(kendall_tau(*zip(*pairs, strict=True)), nan_ok=True)
    assert all("1024x1" in r["results"] for r in document["records"])  # the other budget's results are kept
    for record in records.values():
        final = record.results[label]
        workdir = retrain_dir(
            config.runs_dir, dataset="cifar10", recipe=recipe, arch_id=ArchSpec.from_string(record.arch).arch_id
        )
        assert final["accuracy"] == load_result(workdir).val_accuracy  # the validation split, never the test split


def test_a_failed_proxy_check_run_is_tried_once_more_when_the_check_runs_again(tmp_path, monkeypatch):
    """A timeout on a loaded machine is no measurement: the next run of the check tries it again,
    once; a second failure stays, with its reason (no training here: the runner is a stand-in)."""
    from nas import proxy_check, worker
    from nas.config import SearchConfig

    answers = iter(["timed out after 1800 s", "ok", "timed out after 1800 s", "ok"])

    def answer(job):
        reason = next(answers)
        if reason != "ok":
            return worker.Outcome(worker.Status.FAILED, reason=reason)
        return worker.Outcome(worker.Status.OK, accuracy=0.5, params_count=1, timings={"train_seconds": 1.0})

    monkeypatch.setattr(worker, "TrialRunner", _stand_in_runner(answer))
    monkeypatch.setattr(proxy_check, "candidates", lambda *a, **k: [("sample-0", "conv_r1_k3_s1_c16-head_c256", None)])
    config = SearchConfig(runs_dir=str(tmp_path))
    check = dict(config=config, count=1, proxy=proxy_check.Budget(256, 1), long=proxy_check.Budget(1024, 1))
    path = str(tmp_path / "check.json")

    def results():
        (record,) = proxy_check.run_check(**check, path=path)[1].values()
        return record.results

    first = results()  # the proxy run fails, the long one is measured
    assert "error" in first["256x1"] and "attempts" not in first["256x1"] and first["1024x1"]["accuracy"] == 0.5
    second = results()  # tried once more: fails again, and says it was the second attempt
    assert second["256x1"]["attempts"] == 2 and "timed out" in second["256x1"]["error"]
    assert results() == second  # two attempts are all it gets; nothing ran
    assert list(answers) == ["ok"]  # asked three times: the proxy twice, the long run once


def test_proxies_only_trains_no_final_and_takes_the_finished_ones(tmp_path, monkeypatch):
    """`--proxies-only` runs every proxy, reads the finals another process finished, and trains none
    (a second training of one model would share its checkpoint); run again without it, the missing
    final is trained and the proxies are not run again (the trainings here are stand-ins)."""
    from nas import proxy_check, worker
    from nas.config import SearchConfig
    from search_spaces import ArchSpec
    from trainers import full
    from trainers.full import Recipe, RetrainResult

    def _id(arch):
        return ArchSpec.from_string(arch).arch_id

    archs = ["conv_r1_k3_s1_c16-head_c256", "conv_r1_k3_s1_c32-head_c256"]
    proxies, finals = [], []

    def answer(job):
        proxies.append(job.arch)
        return worker.Outcome(worker.Status.OK, accuracy=0.4, params_count=1, timings={"train_seconds": 1.0})

    def result(arch, accuracy):
        return RetrainResult(arch, "cifar10", {}, 1, 1, accuracy, accuracy, 0.0, 9.0, 1.0, (), "")

    finished = {archs[0]: result(archs[0], 0.8)}  # the other one is still training elsewhere
    monkeypatch.setattr(worker, "TrialRunner", _stand_in_runner(answer))
    monkeypatch.setattr(proxy_check, "candidates", lambda *a, **k: [(f"sample-{k}", a, None) for k, a in enumerate(archs)])
    monkeypatch.setattr(full, "load_result", lambda workdir: next((r for a, r in finished.items() if _id(a) in workdir), None))
    monkeypatch.setattr(full, "retrain", lambda spec, data, **_: finals.append(spec.to_string()) or result(spec.to_string(), 0.9))
    monkeypatch.setitem(proxy_check._DATASETS, "cifar10", "the data")  # never read
    check = dict(config=SearchConfig(runs_dir=str(tmp_path)), count=2, proxy=proxy_check.Budget(256, 1))
    long = proxy_check.FinalBudget(Recipe(epochs=1))
    path = str(tmp_path / "check.json")

    _, records = proxy_check.run_check(**check, long=long, path=path, proxies_only=True)
    assert proxies == archs and finals == []
    assert records[archs[0]].results[long.label]["accuracy"] == 0.8 and long.label not in records[archs[1]].results
    _, records = proxy_check.run_check(**check, long=long, path=path)
    assert proxies == archs and finals == [archs[1]]  # only the missing final, and no proxy again
    assert records[archs[1]].results[long.label]["accuracy"] == 0.9


def test_a_final_another_process_trains_is_left_to_it(tmp_path, monkeypatch, caplog):
    """A check that reaches a final another process is training goes on without it (one warning) and
    takes it when run again; nothing is trained twice in one folder (the trainings are stand-ins)."""
    from nas import proxy_check, worker
    from nas.config import SearchConfig
    from search_spaces.files import Busy
    from trainers import full
    from trainers.full import Recipe, RetrainResult

    arch = "conv_r1_k3_s1_c16-head_c256"
    busy = [True]

    def retrain(spec, data, **_):
        if busy[0]:
            raise Busy("being trained by another process")
        return RetrainResult(arch, "cifar10", {}, 1, 1, 0.9, 0.9, 0.0, 9.0, 1.0, (), "")

    answer = lambda job: worker.Outcome(worker.Status.OK, accuracy=0.4, params_count=1, timings={"train_seconds": 1.0})  # noqa: E731
    monkeypatch.setattr(worker, "TrialRunner", _stand_in_runner(answer))
    monkeypatch.setattr(proxy_check, "candidates", lambda *a, **k: [("sample-0", arch, None)])
    monkeypatch.setattr(full, "load_result", lambda workdir: None)
    monkeypatch.setattr(full, "retrain", retrain)
    monkeypatch.setitem(proxy_check._DATASETS, "cifar10", "the data")  # never read
    check = dict(
        config=SearchConfig(runs_dir=str(tmp_path)), count=1, proxy=proxy_check.Budget(256, 1), path=str(tmp_path / "c.json")
    )
    long = proxy_check.FinalBudget(Recipe(epochs=1))

    _, records = proxy_check.run_check(**check, long=long)
    assert long.label not in records[arch].results and "256x1" in records[arch].results
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "being trained by another process" in caplog.text
    busy[0] = False
    _, records = proxy_check.run_check(**check, long=long)
    assert records[arch].results[long.label]["accuracy"] == 0.9


def _stand_in_runner(answer):
    """A TrialRunner that trains nothing: `answer(job)` gives each job's outcome."""

    class Runner:
        def __init__(self, **_):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

        def run(self, job, *, timeout_s=None):
            return answer(job)

    return Runner
