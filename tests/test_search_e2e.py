"""`nas search` end to end on real CIFAR-10 (a small subset), through the real CLI and SQLite."""

import csv
import subprocess
import sys

import optuna
import pytest
from helpers import run_nas as nas

pytestmark = pytest.mark.slow  # every test here runs real searches or trainings

TINY = ["--train-images", "1024", "--val-images", "500", "--epochs", "1", "--batch-size", "64"]


def search(runs, cifar_dir, *, trials):
    return nas(
        "search",
        "--trials",
        str(trials),
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


@pytest.fixture(scope="module")
def first_search(cifar_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = search(runs, cifar_dir, trials=3)
    return runs, result


def _study(runs, name="mnasnet-cifar10"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs}/{name}/study.db")


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
        # the learning curve at 25 % and 50 % of training (16 steps: steps 4 and 8)
        assert [f for f, _ in attrs["curve"]] == [0.25, 0.5] and all(0 <= a <= 1 for _, a in attrs["curve"])
    with open(runs / "mnasnet-cifar10" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert all(r["arch"] and float(r["latency_ms"]) > 0 for r in rows)
    assert (runs / "latency_cache.json").is_file()
    # the workers' TensorFlow/LiteRT chatter went to the run's worker log, not over the progress lines
    assert "XNNPACK" not in result.stderr and "XNNPACK" in (runs / "mnasnet-cifar10" / "worker.log").read_text()


def test_second_run_resumes_and_adds_trials(first_search, cifar_dir):
    runs, first = first_search
    assert first.returncode == 0
    before = {t.number: (t.user_attrs["arch"], tuple(t.values)) for t in _study(runs).trials}
    result = search(runs, cifar_dir, trials=1)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 earlier trials; adding 1" in result.stdout
    trials = _study(runs).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]  # nothing lost, nothing duplicated
    for number, (arch, values) in before.items():
        assert (trials[number].user_attrs["arch"], tuple(trials[number].values)) == (arch, values)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 4
    # the resumed sampler proposes new architectures rather than replaying the first run's
    assert not any("reused_from" in t.user_attrs for t in trials[3:])
    front = nas("front", "--study", "mnasnet-cifar10", "--runs-dir", str(runs), cwd=runs)
    assert front.returncode == 0, front.stderr
    from results.pareto import pareto_info

    rows = [line for line in front.stdout.splitlines()[2:] if not line.startswith("* =")]  # below the header, above the key
    listed = [int(line.replace("*", " ").split()[0]) for line in rows if line.strip()]
    assert sorted(listed) == sorted(r.number for r in pareto_info(_study(runs)).front)  # the study's front, every member


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
    assert "resume it with --epochs 1," in result.stderr  # e.g. after a default changed


def test_a_study_resumes_with_its_own_budget_after_the_default_moved(cifar_dir, tmp_path):
    """A study begun with a budget that is no longer the default (as CIFAR-100's 2 epochs became 1) resumes as
    it ran when no flag or config file names a budget; one that names another is refused with the way back."""
    first = search(tmp_path, cifar_dir, trials=1)  # 1024 images x 1 epoch: the "old default" here
    assert first.returncode == 0, first.stderr[-2000:]
    common = ["--trials", "1", "--data-dir", str(cifar_dir), "--runs-dir", str(tmp_path), "--target-ms", "0.5"]
    common += ["--seed", "1", "--train-images", "1024", "--val-images", "500", "--batch-size", "64"]  # no --epochs
    resumed = nas("search", *common, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "proxy: 1024 images x 1 epochs, as the study ran (a new cifar10 study trains 24000 x 2 by default)" in resumed.stdout
    assert len(_study(tmp_path).get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2

    (tmp_path / "search.toml").write_text("epochs = 2\n")  # a budget the user names is theirs, and refused
    refused = nas("search", *common, "--config", str(tmp_path / "search.toml"), cwd=tmp_path)
    assert refused.returncode == 2 and "was run with epochs=1, not 2" in refused.stderr
    assert "resume it with --epochs 1," in refused.stderr and "Traceback" not in refused.stderr


# -- looking at the study: HTML report in a real browser, optuna-dashboard over HTTP -----------

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium():
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("these tests need Debian's chromium (apt-get install chromium); README's test command installs it")
    return path


def test_report_renders_in_headless_chromium(first_search, tmp_path):
    runs, search = first_search
    assert search.returncode == 0
    result = nas("report", "--study", "mnasnet-cifar10", "--runs-dir", str(runs), cwd=runs)
    assert result.returncode == 0, result.stderr
    page = runs / "mnasnet-cifar10" / "report.html"
    assert (
        page.is_file()
        and (runs / "mnasnet-cifar10" / "front.csv").is_file()
        and (runs / "mnasnet-cifar10" / "front.json").is_file()
    )
    browser = [_chromium(), *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000"]
    dom = subprocess.run(
        [*browser, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    # every figure was drawn by plotly.js: front, hypervolume, two histograms, six choice charts
    assert dom.stdout.count('class="plot-container plotly"') == 10
    assert dom.stdout.count('class="main-svg"') >= 20
    assert "Pareto front" in dom.stdout and "<td data-sort" in dom.stdout
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    assert console_errors == []
    shot = tmp_path / "report.png"
    subprocess.run([*browser, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180)
    assert shot.is_file() and shot.stat().st_size > 50_000  # a blank page compresses to a few kB


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request_until_refused(url: str) -> None:
    import urllib.request

    for _ in range(10_000):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
        except OSError:
            return


def test_dashboard_serves_the_study_and_stops_on_ctrl_c(first_search):
    import json
    import signal
    import threading
    import time
    import urllib.request

    runs, search = first_search
    assert search.returncode == 0
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nas.cli",
            "dashboard",
            "--study",
            "mnasnet-cifar10",
            "--runs-dir",
            str(runs),
            "--port",
            str(port),
        ],
        cwd=runs,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background inherits an ignored SIGINT; Ctrl-C must reach the server
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline, studies = time.monotonic() + 60, None
        while time.monotonic() < deadline and studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "the dashboard did not answer within 60 s"
        (study,) = [s for s in studies if s["study_name"] == "mnasnet-cifar10"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=10) as response:
            detail = json.load(response)
        assert detail["objective_names"] == ["accuracy", "latency_ms"]
        trials = detail["trials"]
        assert len(trials) >= 3
        assert all(any(a["key"] == "arch" for a in t["user_attrs"]) for t in trials)
        # Ctrl-C while requests are being answered must still stop the server
        hammer = threading.Thread(target=_request_until_refused, args=(f"http://127.0.0.1:{port}/api/studies",), daemon=True)
        hammer.start()
        time.sleep(1.0)
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err[-2000:]
    assert f"http://127.0.0.1:{port}/" in out and "dashboard stopped" in out


def test_a_cifar100_search_learns_well_above_chance(cifar100_dir, tmp_path):
    """One trial on real CIFAR-100 (8,000 training images of the 10,000 materialized, 2 epochs): the
    proxy learns something of 100 classes. 0.051 here on 2026-12-01; chance is 0.010, and a model
    that learned nothing stays under 0.017 on 2,000 images with 99.9 % probability."""
    from trainers.proxy import chance_ceiling

    args = ["--dataset", "cifar100", "--trials", "1", "--train-images", "8000", "--epochs", "2", "--val-images", "2000"]
    result = nas("search", *args, "--data-dir", str(cifar100_dir), "--runs-dir", "runs", "--seed", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "proxy 8000 images x 2 epochs" in result.stdout  # the budget it uses, said up front
    (trial,) = _study(tmp_path / "runs", "mnasnet-cifar100").trials
    assert trial.values[0] > 2 * chance_ceiling(num_classes=100, val_images=2000)
    assert "within noise of chance" not in result.stdout
