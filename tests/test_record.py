"""One typed trial record: it round-trips, writes only what changed, and is the only reader of trial attributes."""

import json
import re
from pathlib import Path

from latency.measure import LatencyResult
from results.record import Timings, TrialRecord, store

REPO = Path(__file__).resolve().parents[1]


def test_the_trial_record_round_trips_and_is_the_only_reader_of_attributes():
    latency = LatencyResult(median_ms=0.2, p90_ms=0.25, cv=0.01, run_cv=0.05, runs=200, attempts=1)
    record = TrialRecord(
        arch="x", arch_id="y", accuracy=0.4, curve=((0.25, 0.1), (0.5, 0.2)), retry_of=3, latency=latency,
        timings=Timings(build_seconds=1.5, train_steps=125),
    )  # fmt: skip
    attrs = record.to_user_attrs()
    assert TrialRecord.from_user_attrs(json.loads(json.dumps(attrs))) == record
    # stored flat, under the names every earlier version wrote and the dashboards show
    assert attrs["latency_median_ms"] == 0.2 and attrs["latency_runs"] == 200 and attrs["build_seconds"] == 1.5
    assert "train_seconds" not in attrs and "latency" not in attrs and "timings" not in attrs
    older = TrialRecord.from_user_attrs({"latency_median_ms": 0.3})  # a study written before run_cv existed
    assert older.latency_ms == 0.3 and older.latency.run_cv is None and TrialRecord().latency_ms is None
    assert TrialRecord.from_user_attrs({"accuracy": 0.1, "from_a_newer_version": 1}).accuracy == 0.1

    class Trial:
        def __init__(self):
            self.writes = {}

        def set_user_attr(self, key, value):
            self.writes[key] = value

    trial = Trial()
    store(trial, record.replace(accuracy=0.5), previous=record)
    assert trial.writes == {"accuracy": 0.5}  # only what changed reaches the storage
    # no module reads or writes a trial attribute by a name of its own
    # (any `.user_attrs` counts: `attrs = trial.user_attrs; attrs["x"]` is the same read under another name)
    pattern = re.compile(r"\.user_attrs\b|set_user_attr\(\s*[\"']")
    offenders = [
        str(path.relative_to(REPO))
        for package in ("nas", "results", "latency", "trainers", "search_spaces")
        for path in (REPO / package).glob("*.py")
        if path.name != "record.py" and pattern.search(path.read_text())
    ]
    assert offenders == []


def test_study_settings_read_back_and_an_older_study_reads_as_not_recorded():
    from results.record import StudySettings
    from results.reward import Reward

    settings = StudySettings(space="mnasnet", dataset="cifar100", target_ms=2.0, alpha=-0.07, beta=-0.07, fingerprint={"id": "x"})
    assert StudySettings.from_attr(settings.to_attr()) == settings
    assert settings.reward == Reward(2.0, -0.07, -0.07) and settings.recorded
    assert StudySettings.from_attr({"from_a_newer_version": 1}) == StudySettings() and not StudySettings().recorded
    assert StudySettings(target_ms=2.0).reward is None  # no exponents recorded: no reward to compute


def test_timings_take_only_names_they_know():
    import pytest

    assert Timings().merged({"eval_seconds": 1.23456}).eval_seconds == 1.2346
    with pytest.raises(ValueError, match="unknown timings"):
        Timings().merged({"arch": "x"})  # once a splat into the record: it could overwrite any field
