import json
import subprocess
import sys
import time

import numpy as np
import pytest

from latency import LatencyProtocol, host_fingerprint, measure_tflite
from latency.cache import LatencyCache, cache_key
from latency.measure import busy_while, fast_state_ms


@pytest.fixture(scope="module")
def small_tflite(tmp_path_factory):
    from latency.convert import to_tflite
    from search_spaces import ArchSpec
    from search_spaces.keras_blocks import build

    path = tmp_path_factory.mktemp("lat") / "small.tflite"
    spec = ArchSpec.from_string("conv_r1_k3_s2_c16-mbconv_r2_k3_s2_e3_c24_se0.25-head_c64")
    return to_tflite(build(spec), str(path), input_shape=(32, 32, 3))


def test_measurement_follows_the_protocol(small_tflite):
    protocol = LatencyProtocol(warmup_runs=5, rounds=4, runs_per_round=25, max_attempts=1)
    result = measure_tflite(small_tflite, protocol)
    assert result.runs == 100 and result.attempts == 1
    assert 0 < result.median_ms < 1000 and result.p90_ms < 10 * result.median_ms  # sub-millisecond, no wild outliers
    assert result.median_ms <= result.p90_ms  # the 90th percentile of the same runs
    assert result.run_cv > 0  # real runs vary (how much, and how round medians compare, depends on the load)
    attrs = result.as_attrs()
    assert set(attrs) == {
        "latency_median_ms",
        "latency_p90_ms",
        "latency_cv",
        "latency_run_cv",
        "latency_runs",
        "latency_attempts",
        "latency_busy_cores",
    }
    assert result.busy_cores is None  # known only where a device took it (HostDevice.measure)


def test_spreads_are_those_of_round_medians_and_of_single_runs(monkeypatch):
    import latency.measure as measure

    # A scripted clock: each invoke() "takes" the next duration, 2 rounds of 3 runs.
    durations_ms = [1.0, 2.0, 9.0, 3.0, 4.0, 5.0]  # round medians 2.0 and 4.0
    ticks = iter([t for d in durations_ms for t in (0, int(d * 1e6))])
    monkeypatch.setattr(measure.time, "perf_counter_ns", lambda: next(ticks))

    class Interpreter:
        def invoke(self):
            pass

    protocol = LatencyProtocol(warmup_runs=0, rounds=2, runs_per_round=3)
    result = measure._one_attempt(Interpreter(), protocol, attempt=1)
    assert result.median_ms == 3.5 and result.runs == 6
    assert result.cv == pytest.approx(1.0 / 3.0)  # std(2, 4) / mean(2, 4)
    assert result.run_cv == pytest.approx(float(np.std(durations_ms) / np.mean(durations_ms)))


def test_repeated_calls_give_the_latency_outside_the_slow_spells():
    # five calls, three of them in a spell 1.2x slower: their plain median would be a spell's figure
    calls = [0.200, 0.240, 0.201, 0.243, 0.245]
    assert float(np.median(calls)) == 0.240
    assert fast_state_ms(calls) == pytest.approx(0.2005)
    assert fast_state_ms([0.200, 0.215, 0.205]) == pytest.approx(0.205)  # within 10 %: one state, no spell
    assert fast_state_ms([0.3]) == 0.3
    with pytest.raises(ValueError, match="no calls"):
        fast_state_ms([])


def test_noisy_measurement_is_repeated_and_the_steadiest_kept(small_tflite, monkeypatch):
    import dataclasses

    import latency.measure as measure

    spreads = iter([0.20, 0.08, 0.30])  # three attempts, none under the limit: the steadiest (0.08) is kept
    real = measure._one_attempt

    def attempt(interpreter, protocol, number):
        return dataclasses.replace(real(interpreter, protocol, number), cv=next(spreads))

    monkeypatch.setattr(measure, "_one_attempt", attempt)
    protocol = LatencyProtocol(warmup_runs=2, rounds=3, runs_per_round=5, max_cv=0.05, max_attempts=3)
    result = measure_tflite(small_tflite, protocol)
    assert (result.attempts, result.cv) == (3, 0.08)
    spreads = iter([0.20, 0.01, 0.30])  # the second attempt is under the limit: no third
    result = measure_tflite(small_tflite, protocol)
    assert (result.attempts, result.cv) == (2, 0.01)


def test_protocol_rejects_nonsense():
    with pytest.raises(ValueError, match="rounds=0"):
        LatencyProtocol(rounds=0)
    with pytest.raises(ValueError, match="threads=0"):
        LatencyProtocol(threads=0)


def test_fingerprint_names_what_was_measured():
    info = host_fingerprint(threads=1)
    assert info["device"] == "host" and info["threads"] == 1 and info["runtime"].startswith("ai-edge-litert ")
    assert info["cpu"] and len(info["id"]) == 10
    assert host_fingerprint(threads=2)["id"] != info["id"]


def test_cache_round_trip_and_atomic_file(tmp_path):
    cache = LatencyCache(str(tmp_path / "cache.json"))
    key = cache_key("abc123", (32, 32, 3), num_classes=10, fingerprint={"id": "fp0"})
    assert cache.get(key) is None
    cache.put(key, {"latency_median_ms": 0.5})
    cache.put(cache_key("def456", (32, 32, 3), num_classes=10, fingerprint={"id": "fp0"}), {"latency_median_ms": 0.7})
    assert LatencyCache(str(tmp_path / "cache.json")).get(key) == {"latency_median_ms": 0.5}
    assert len(json.loads((tmp_path / "cache.json").read_text())) == 2
    assert key == "abc123|32x32x3|c10|fp0|-"


def test_a_damaged_cache_is_moved_aside_with_a_warning_not_wiped(tmp_path, caplog):
    """Someone's measurements never disappear: the next write starts a new file, the damaged one
    stays beside it under a name the warning gives."""
    path = tmp_path / "cache.json"
    damaged = '{"abc|32x32x3|c10|fp|-": {"latency_median_ms": 0.5}, "trunc'
    path.write_text(damaged)
    cache = LatencyCache(str(path))
    with caplog.at_level("WARNING"):
        cache.put("new|key", {"latency_median_ms": 0.7})
    (aside,) = tmp_path.glob("cache.json.damaged-*")
    assert aside.read_text() == damaged
    assert str(aside) in caplog.text and "moved aside" in caplog.text
    assert LatencyCache(str(path)).get("new|key") == {"latency_median_ms": 0.7}


def test_a_damaged_calibration_store_is_moved_aside(tmp_path):
    from nas import calibration

    store = tmp_path / "calibration.json"
    store.write_text("{not json")
    assert calibration.load(str(tmp_path), "fp", 32) is None
    assert store.exists() is False and len(list(tmp_path.glob("calibration.json.damaged-*"))) == 1


def test_another_process_spinning_counts_as_busy_cores():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        answer, busy = busy_while(lambda: sum(range(10**6)))  # this process's own work is left out
        assert answer == sum(range(10**6)) and busy >= 0.6  # its core (other work on the machine only adds to it)
    finally:
        spinner.kill()
        spinner.wait()


def test_a_host_timing_says_how_busy_the_machine_was(small_tflite):
    from latency.devices import HostDevice

    device = HostDevice(protocol=LatencyProtocol(warmup_runs=2, rounds=2, runs_per_round=5))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert device.measure(small_tflite).busy_cores >= 0.6
    finally:
        spinner.kill()
        spinner.wait()
