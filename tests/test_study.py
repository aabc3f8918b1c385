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


def test_a_study_resumes_with_the_proxy_budget_it_ran_with_where_none_is_given(tmp_path):
    """The per-data-set budget defaults are measured and move (CIFAR-100's went from 20,000 x 2 to 20,000 x 1):
    a study begun under the old default resumes as it ran; a budget the user sets is kept, and refused."""
    import dataclasses

    from nas.storage import with_study_budget

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = SearchConfig(dataset="cifar100", study_name="c100", storage=storage)
    assert with_study_budget(config, given=set()) is config  # no study yet: today's default
    assert (config.train_images, config.epochs) == (20_000, 1)

    began = dataclasses.replace(config, epochs=2)  # the study as the old default began it
    study = optuna.create_study(study_name="c100", storage=storage, directions=["maximize", "minimize"])
    check_identity(began, _fingerprint(), study)

    resumed = with_study_budget(config, given=set())
    assert (resumed.train_images, resumed.epochs) == (20_000, 2)
    check_identity(resumed, _fingerprint(), study)  # accepted

    chosen = SearchConfig(dataset="cifar100", study_name="c100", storage=storage, epochs=1)
    assert with_study_budget(chosen, given={"epochs"}).epochs == 1  # the user's choice stands...
    with pytest.raises(ConfigError, match=r"was run with epochs=2, not 1: .* resume it with --epochs 2, or use another"):
        check_identity(chosen, _fingerprint(), study)  # ...and is refused, with the way to resume
