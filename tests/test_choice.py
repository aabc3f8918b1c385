"""Which models `nas retrain`, `nas export` and `nas compare` take from a study, and the data they train on;
what the front and trials.csv list."""

from pathlib import Path

import pytest
from helpers import run_nas, study_with

from latency.measure import LatencyResult
from results.pareto import pareto_info, write_trials_csv
from results.record import SETTINGS_ATTR, TrialRecord

REPO = Path(__file__).resolve().parents[1]


def test_retraining_takes_the_studys_dataset_and_refuses_another(tmp_path):
    from search_spaces import reference

    spec = reference("mnasnet-small")
    record = TrialRecord(arch=spec.to_string(), arch_id=spec.arch_id, accuracy=0.3, latency=LatencyResult.exact(0.2))
    runs, _ = study_with(tmp_path, trials=[record])
    refused = run_nas("retrain", "--study", "s", "--runs-dir", str(runs), "--front", "--dataset", "cifar100", cwd=tmp_path)
    assert refused.returncode == 2 and "study 's' searched on cifar10, not dataset='cifar100'" in refused.stderr
    runs_nb, _ = study_with(tmp_path / "nb", space="nb201", trials=[record])
    table = run_nas("retrain", "--study", "s", "--runs-dir", str(runs_nb), "--front", cwd=tmp_path)
    assert table.returncode == 2 and "NAS-Bench-201 cells from tables: there is nothing to retrain" in table.stderr


def test_the_studys_models_come_before_the_references(tmp_path):
    """A comparison trains the found models first: they are what a user waits for, and a run cut
    short still has them."""
    from nas.choice import choose
    from search_spaces import reference
    from trainers.full import Recipe

    spec = reference("mnasnet-small")
    record = TrialRecord(arch=spec.to_string(), arch_id=spec.arch_id, accuracy=0.3, latency=LatencyResult.exact(0.2))
    runs, study = study_with(tmp_path, trials=[record])
    chosen = choose(
        study=study, trials=(0,), archs=("mobilenetv2-0.5", "mnasnet-small"), runs_dir=str(runs),
        dataset="cifar10", recipe=Recipe(),
    )  # fmt: skip
    assert [c.name for c in chosen] == ["trial 0", "mobilenetv2-0.5"]  # mnasnet-small is trial 0's architecture


def test_the_front_lists_an_architecture_once_and_trials_csv_follows_the_current_reward(tmp_path):
    same = TrialRecord(
        arch="conv_r1_k3_s2_c8-head_c16", arch_id="aaa", accuracy=0.5, latency=LatencyResult.exact(0.5), reward=0.1
    )
    _, study = study_with(tmp_path, trials=[same, same.replace(reused_from=0), same.replace(arch_id="bbb", arch="other")])
    info = pareto_info(study)
    assert [r.arch_id for r in info.front] == ["aaa", "bbb"]  # two architectures tie; the reuse of aaa is not listed
    assert info.counts == {"COMPLETE": 2} and info.reused == 1  # a copy (as older studies stored them) is no trial
    study.set_user_attr(SETTINGS_ATTR, {**study.user_attrs[SETTINGS_ATTR], "target_ms": 0.25})
    write_trials_csv(study, str(tmp_path / "t.csv"))
    rewards = [float(line.split(",")[9]) for line in (tmp_path / "t.csv").read_text().splitlines()[1:]]
    assert rewards == pytest.approx([0.5 * (0.5 / 0.25) ** -0.07] * 3)  # T = 0.25 now, not the stored 0.1
