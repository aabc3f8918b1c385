import dataclasses
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
        "latency_spell_rounds",
    }
    assert result.busy_cores is None  # known only where a device took it (HostDevice.measure)


def test_rounds_are_spread_in_time_and_those_in_a_slow_spell_set_aside(monkeypatch):
    import latency.measure as measure

    # A scripted clock: each timed invoke() "takes" the next duration; 3 rounds of 3 runs, the second in a
    # spell (its median 2.6 is over 1.1x the fastest round's 2.0)
    durations_ms = [1.0, 2.0, 9.0, 2.5, 2.6, 2.7, 2.1, 2.2, 1.9]
    ticks = iter([t for d in durations_ms for t in (0, int(d * 1e6))])
    monkeypatch.setattr(measure.time, "perf_counter_ns", lambda: next(ticks))
    pauses = []
    monkeypatch.setattr(measure.time, "sleep", pauses.append)

    class Interpreter:
        untimed = 0

        def invoke(self):
            self.untimed += 1  # counts every run; the timed ones are the clock's

    interpreter = Interpreter()
    protocol = LatencyProtocol(warmup_runs=4, rounds=3, runs_per_round=3, round_gap_s=0.25)
    rounds = measure._timed_rounds(interpreter, protocol)
    assert pauses == [0.25, 0.25]  # between rounds, not before the first
    assert interpreter.untimed == 4 + 9 + 2 * 4  # the warm-up, the timed runs, and a re-warm after each pause
    result = measure.summarize_rounds(rounds, attempts=1)
    kept = [1.0, 2.0, 9.0, 2.1, 2.2, 1.9]
    assert result.spell_rounds == 1 and result.runs == 9  # every run counted, the spell's set aside
    assert result.median_ms == pytest.approx(float(np.median(kept)))  # 2.05, not 2.15 with the spell's round
    assert result.p90_ms == pytest.approx(float(np.percentile(kept, 90)))
    assert result.cv == pytest.approx(float(np.std([2.0, 2.1]) / np.mean([2.0, 2.1])))  # of the kept rounds' medians
    assert result.run_cv == pytest.approx(float(np.std(kept) / np.mean(kept)))
    assert measure.summarize_rounds([np.array([3.0, 5.0])]).cv == 0.0  # one round: nothing to spread


def test_repeated_calls_give_the_latency_outside_the_slow_spells():
    # five calls, three of them in a spell 1.2x slower: their plain median would be a spell's figure
    calls = [0.200, 0.240, 0.201, 0.243, 0.245]
    assert float(np.median(calls)) == 0.240
    assert fast_state_ms(calls) == pytest.approx(0.2005)
    assert fast_state_ms([0.200, 0.215, 0.205]) == pytest.approx(0.205)  # within 10 %: one state, no spell
    assert fast_state_ms([0.3]) == 0.3
    with pytest.raises(ValueError, match="no calls"):
        fast_state_ms([])


def test_a_noisy_or_spelled_measurement_measures_more_rounds(monkeypatch):
    import latency.measure as measure

    def measuring(sets):  # each attempt's rounds, as round medians (one run per round)
        sets = iter(sets)
        monkeypatch.setattr(measure, "_timed_rounds", lambda interpreter, protocol: [np.array([m]) for m in next(sets)])

    protocol = LatencyProtocol(rounds=3, runs_per_round=1, max_cv=0.05, max_attempts=3)
    measuring([[2.0, 2.4, 2.5], [2.0, 2.05, 1.98], [9.0, 9.0, 9.0]])  # most of the first set in a spell
    result = measure.measure_interpreter(None, protocol)
    assert (result.attempts, result.runs, result.spell_rounds) == (2, 6, 2)
    assert result.median_ms == 2.0  # the fast rounds of both sets
    measuring([[2.0, 2.1, 2.0]])  # steady and clear of spells: one set
    assert measure.measure_interpreter(None, protocol).attempts == 1
    measuring([[1.0, 1.08, 1.0], [1.05, 1.0, 1.08], [1.0, 1.08, 1.02]])  # spread over the limit every time
    result = measure.measure_interpreter(None, dataclasses.replace(protocol, max_cv=0.02))
    assert (result.attempts, result.runs, result.spell_rounds) == (3, 9, 0) and result.cv > 0.02


def test_protocol_rejects_nonsense():
    with pytest.raises(ValueError, match="round_gap_s=-1"):
        LatencyProtocol(round_gap_s=-1)
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
