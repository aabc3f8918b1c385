"""Device hooks driven end to end by a fake `adb` and a fake measuring command (tests/fakes/):
success, timeout, garbage output, non-zero exit, an unknown serial; and the host's re-measure
path. The model file is a real TFLite model only where the host interpreter needs one."""

import os
import sys

import numpy as np
import pytest

from latency.devices import (
    AdbDevice,
    CommandDevice,
    DeviceError,
    HostDevice,
    make_device,
    parse_benchmark_model,
)
from latency.measure import LatencyProtocol

FAKES = os.path.join(os.path.dirname(__file__), "fakes")
FAST = LatencyProtocol(warmup_runs=1, rounds=3, runs_per_round=5)


@pytest.fixture
def phone(tmp_path, monkeypatch):
    directory = tmp_path / "phone"
    directory.mkdir()
    monkeypatch.setenv("FAKE_ADB_DIR", str(directory))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not really a model; the fake phone only copies it")
    return {"model": str(model), "log": tmp_path / "adb.log", "dir": directory}


def adb_device(**kw) -> AdbDevice:
    return AdbDevice(protocol=FAST, adb=os.path.join(FAKES, "adb"), **kw)


def test_adb_success_reports_the_timed_runs_and_cleans_up(phone):
    device = adb_device(serial="PHONE1", delegate="gpu")
    result = device.measure(phone["model"])
    # the second count= line is the timed one: median 75200 us, std 800 us, 3 rounds of 50 runs
    assert result.median_ms == pytest.approx(75.2)
    assert result.p90_ms == pytest.approx(75.2 + 1.2816 * 0.8)
    assert result.runs == 150 and result.cv == 0.0
    calls = phone["log"].read_text().splitlines()
    assert calls[0].startswith("-s PHONE1 push ")
    benchmark = [c for c in calls if "benchmark_model" in c]
    assert len(benchmark) == 3 and "--use_gpu=true" in benchmark[0] and "--num_threads=1" in benchmark[0]
    assert "--warmup_runs=1" in benchmark[0] and "--num_runs=5" in benchmark[0]
    pushed = calls[0].split()[-1]
    assert pushed.startswith("/data/local/tmp/nas_") and pushed.endswith("_m.tflite")
    assert calls[-1] == f"-s PHONE1 shell rm -f {pushed}"  # the file it pushed, no other


def test_every_measurement_pushes_a_file_of_its_own_name(phone):
    device = adb_device(serial="PHONE1")
    device.measure(phone["model"])
    device.measure(phone["model"])
    pushes = [c.split()[-1] for c in phone["log"].read_text().splitlines() if " push " in c]
    assert len(pushes) == 2 and pushes[0] != pushes[1]


def test_workers_sharing_one_device_command_take_turns(tmp_path):
    """Two processes measure on one board at once: its runs never overlap."""
    import subprocess

    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    log = tmp_path / "board.log"
    code = (
        "import sys; from latency.devices import CommandDevice; from latency.measure import LatencyProtocol; "
        "CommandDevice(template=sys.argv[1] + ' busy {model}', protocol=LatencyProtocol(warmup_runs=1, rounds=3, "
        "runs_per_round=1)).measure(sys.argv[2])"
    )
    env = {**os.environ, "FAKE_BOARD_LOG": str(log), "NAS_LOCK_DIR": str(tmp_path)}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [sys.executable, "-c", code, os.path.join(FAKES, "latency_cmd"), str(model)]
    workers = [subprocess.Popen(argv, env=env, cwd=root) for _ in range(2)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 12 and len({pid for _, _, pid in events}) == 2
    times = sorted((float(t), kind) for kind, t, _ in events)
    assert [kind for _, kind in times] == ["start", "end"] * 6  # never two runs at once
    # the lock is per measurement: one worker's three rounds run together
    order = [pid for kind, _, pid in sorted(events, key=lambda e: float(e[1])) if kind == "start"]
    assert order[:3] == [order[0]] * 3


def test_adb_fingerprint_names_the_phone(phone):
    info = adb_device(serial="PHONE1").fingerprint()
    assert info["model"] == "Pixel 1" and info["cpu"] == "msm8996" and info["device"] == "adb:PHONE1"
    assert info["id"] != adb_device(serial="PHONE1", delegate="none").fingerprint()["id"]


@pytest.mark.parametrize(
    ("mode", "serial", "message"),
    [
        ("garbage", None, "benchmark_model printed no timing line"),
        ("fail", None, "exit code 1: ERROR: Failed to apply GPU delegate."),
        ("offline", None, "no devices/emulators found"),
        ("ok", "OTHER", "device 'OTHER' not found"),
    ],
)
def test_adb_failures_carry_the_devices_message(phone, monkeypatch, mode, serial, message):
    monkeypatch.setenv("FAKE_ADB_MODE", mode)
    with pytest.raises(DeviceError, match=message):
        adb_device(serial=serial).measure(phone["model"])


def test_adb_timeout(phone, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_MODE", "hang")
    with pytest.raises(DeviceError, match="timed out after 1 s"):
        adb_device(timeout_s=1).measure(phone["model"])


def test_adb_missing_binary(phone):
    with pytest.raises(DeviceError, match="not found"):
        AdbDevice(adb="/nonexistent/adb", protocol=FAST).measure(phone["model"])


def test_parse_benchmark_model_without_percentiles():
    out = "count=50 first=1 curr=1 min=1 max=1 avg=2.95034e+06 std=109798\nInference timings in us: ..."
    parsed = parse_benchmark_model(out)
    assert parsed == {
        "count": 50,
        "mean_ms": pytest.approx(2950.34),
        "std_ms": pytest.approx(109.798),
        "median_ms": pytest.approx(2950.34),
    }


def command(mode: str, **kw) -> CommandDevice:
    return CommandDevice(template=f"{sys.executable} {os.path.join(FAKES, 'latency_cmd')} {mode} {{model}}", protocol=FAST, **kw)


def test_command_success(phone):
    result = command("ok").measure(phone["model"])
    samples = [2.10, 2.05, 2.20, 2.12] * 3
    assert result.median_ms == pytest.approx(float(np.median(samples)))
    assert result.p90_ms == pytest.approx(float(np.percentile(samples, 90)))
    assert result.runs == 12 and result.cv == 0.0 and result.run_cv > 0


def test_command_custom_regex(phone):
    result = command("ok", pattern=r"latency: ([0-9.]+)").measure(phone["model"])
    assert result.median_ms == pytest.approx(2.11)


@pytest.mark.parametrize(
    ("mode", "message"),
    [("garbage", "printed no latency matching"), ("fail", "exit code 3: board not responding")],
)
def test_command_failures(phone, mode, message):
    with pytest.raises(DeviceError, match=message):
        command(mode).measure(phone["model"])


def test_command_timeout(phone):
    with pytest.raises(DeviceError, match="timed out after 1 s"):
        command("hang", timeout_s=1).measure(phone["model"])


@pytest.mark.parametrize(
    ("text", "kw", "message"),
    [
        ("phone", {}, "device='phone' is not one of host, adb"),
        ("cmd:measure.sh", {}, "has no {model} placeholder"),
        ("cmd:x {model}", {"pattern": "(unclosed"}, "not a valid regular expression"),
        ("cmd:x {model}", {"pattern": "ms"}, "needs a group"),
        ("adb", {"delegate": "tpu"}, "delegate='tpu' is not one of"),
        ("host", {"pin_core": 999}, "latency-pin-core=999 is not one of"),
        ("adb", {"pin_core": 0}, "pins the host's measurement"),
    ],
)
def test_make_device_rejects_bad_settings(text, kw, message):
    with pytest.raises(ValueError, match=message):
        make_device(text, **kw)


def test_make_device_parses_each_kind():
    assert isinstance(make_device("host"), HostDevice)
    assert make_device("adb").serial is None and make_device("adb:PHONE1").serial == "PHONE1"
    assert make_device("cmd:run {model} --fast").template == "run {model} --fast"


def test_host_fingerprint_changes_with_every_setting():
    plain = HostDevice().fingerprint()
    assert (plain["precision"], plain["pinned"], plain["threads"]) == ("fp32", False, 1)
    assert HostDevice(precision="int8").fingerprint()["id"] != plain["id"]
    assert HostDevice(protocol=LatencyProtocol(threads=2)).fingerprint()["id"] != plain["id"]
    assert HostDevice(pin_core=0).fingerprint()["id"] != plain["id"]


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    import keras

    from latency.convert import to_tflite

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inputs))))
    return to_tflite(model, str(tmp_path_factory.mktemp("m") / "tiny.tflite"), input_shape=(8, 8, 3))


def test_host_remeasures_when_the_spread_is_too_high(tiny_tflite):
    """max_cv below any achievable spread: every set of rounds is measured, and all are reported together."""
    result = HostDevice(
        protocol=LatencyProtocol(warmup_runs=2, rounds=3, runs_per_round=10, max_cv=1e-9, max_attempts=3, round_gap_s=0.01)
    ).measure(tiny_tflite)
    assert result.attempts == 3 and result.runs == 90  # three sets of 3 rounds of 10
    assert result.cv > 1e-9 and result.spell_rounds is not None  # every set missed the limit


def test_host_pinned_measurement_restores_affinity(tiny_tflite):
    before = os.sched_getaffinity(0)
    core = sorted(before)[0]
    result = HostDevice(protocol=FAST, pin_core=core).measure(tiny_tflite)
    assert result.runs == result.attempts * FAST.rounds * FAST.runs_per_round  # as many sets as its spread asked
    assert os.sched_getaffinity(0) == before


@pytest.mark.slow
def test_a_search_measures_through_a_command_and_survives_its_failure(cifar_dir, tmp_path):
    """`nas search --device cmd:...` end to end: the fake command's latency becomes the trial's
    objective; when the command fails, the trial fails with its message and the search goes on."""
    import subprocess

    import optuna

    def search(mode: str, study: str):
        device = f"cmd:{sys.executable} {os.path.join(FAKES, 'latency_cmd')} {mode} {{model}}"
        args = ["search", "--study-name", study, "--device", device, "--trials", "1", "--data-dir", str(cifar_dir)]
        args += ["--runs-dir", "runs", "--train-images", "256", "--val-images", "200", "--latency-runs", "5"]
        return subprocess.run([sys.executable, "-m", "nas.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)

    ok = search("ok", "viacmd")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "latency on: cmd (user command)" in ok.stdout
    (trial,) = optuna.load_study(study_name="viacmd", storage=f"sqlite:///{tmp_path}/runs/viacmd/study.db").trials
    assert trial.values[1] == pytest.approx(float(np.median([2.10, 2.05, 2.20, 2.12] * 5)))
    failing = search("fail", "failingcmd")
    assert failing.returncode == 0, failing.stderr[-2000:]
    assert "device error: device command: exit code 3: board not responding" in failing.stdout
    (trial,) = optuna.load_study(study_name="failingcmd", storage=f"sqlite:///{tmp_path}/runs/failingcmd/study.db").trials
    assert trial.state == optuna.trial.TrialState.FAIL


def test_a_search_measures_with_exactly_the_device_settings_other_commands_take():
    """SearchConfig's latency flags are DeviceConfig's (one default and help), and it hands them on whole."""
    import dataclasses

    from nas.config import LATENCY_FIELDS, DeviceConfig, SearchConfig

    search_fields = {f.name: f for f in dataclasses.fields(SearchConfig)}
    for f in dataclasses.fields(DeviceConfig):
        assert (search_fields[f.name].default, search_fields[f.name].metadata) == (f.default, f.metadata), f.name
    config = SearchConfig(latency_threads=2, latency_runs=50, device="cmd:m {model}")
    assert config.device_config == DeviceConfig(latency_threads=2, latency_runs=50, device="cmd:m {model}")
    assert config.device_config.protocol().runs_per_round == 10 and set(LATENCY_FIELDS) == set(DeviceConfig.__dataclass_fields__)
