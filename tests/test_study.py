"""A study's identity: a process that would measure latency on another fingerprint is refused."""

from pathlib import Path

import optuna
import pytest

from nas.config import ConfigError, SearchConfig
from nas.storage import check_identity

REPO = Path(__file__).resolve().parents[1]


def _fingerprint(**changes):
    from latency.fingerprint import fingerprint_id

    info = {"device": "host", "cpu": "cpu A", "runtime": "ai-edge-litert 2.3.0", "converter": "tensorflow 2.21.0"}
    info |= {"threads": 1, "delegate": "xnnpack", "precision": "fp32", "pinned": False} | changes
    info["id"] = fingerprint_id(info)
    return info


def test_a_study_refuses_a_process_that_measures_on_another_fingerprint():
    study = optuna.create_study(directions=["maximize", "minimize"])
    config = SearchConfig()
    check_identity(config, _fingerprint(), study)
    check_identity(config, _fingerprint(), study)  # the same machine resumes
    for change in ({"cpu": "cpu B"}, {"runtime": "ai-edge-litert 2.4.0"}, {"threads": 2}, {"precision": "int8"}):
        with pytest.raises(ConfigError) as error:
            check_identity(config, _fingerprint(**change), study)
        message = str(error.value)
        stored, current = _fingerprint()["id"], _fingerprint(**change)["id"]
        assert stored in message and current in message and "latencies would mix" in message
        name = next(iter(change))
        assert f"{name}: {_fingerprint()[name]!r} -> {change[name]!r}" in message
