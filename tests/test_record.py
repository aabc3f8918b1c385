"""One typed trial record: it round-trips, writes only what changed, and is the only reader of trial attributes."""

import json
import re
from pathlib import Path

from results.record import TrialRecord, store

REPO = Path(__file__).resolve().parents[1]


def test_the_trial_record_round_trips_and_is_the_only_reader_of_attributes():
    record = TrialRecord(arch="x", arch_id="y", accuracy=0.4, curve=((0.25, 0.1), (0.5, 0.2)), retry_of=3)
    assert TrialRecord.from_user_attrs(json.loads(json.dumps(record.to_user_attrs()))) == record
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
    pattern = re.compile(r"user_attrs\s*\[|user_attrs\.get\(|set_user_attr\(\s*[\"']")
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
