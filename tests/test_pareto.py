import optuna
import pytest
from optuna.trial import TrialState, create_trial

from results.pareto import format_front, pareto_info, write_csv_atomic


def _study(points, settings=None):
    study = optuna.create_study(directions=["maximize", "minimize"])
    if settings:
        study.set_user_attr("nas_settings", settings)
    for k, (accuracy, latency_ms) in enumerate(points):
        state = TrialState.COMPLETE if accuracy is not None else TrialState.FAIL
        attrs = {"arch": f"arch{k}", "arch_id": f"id{k}"}
        if accuracy is not None:
            attrs |= {"accuracy": accuracy, "latency_median_ms": latency_ms, "latency_p90_ms": latency_ms * 1.1, "reward": 0.0}
        study.add_trial(
            create_trial(state=state, values=[accuracy, latency_ms] if accuracy is not None else None, user_attrs=attrs)
        )
    return study


SETTINGS = {"target_ms": 1.0, "alpha": -0.07, "beta": -0.07}


def test_front_membership_ties_and_order():
    points = [(0.30, 1.0), (0.25, 0.5), (0.30, 1.0), (0.20, 0.6), (0.35, 2.0), (0.29, 1.5), (None, None)]
    info = pareto_info(_study(points, SETTINGS))
    assert [r.number for r in info.front] == [1, 0, 2, 4]  # sorted by latency; the tie (0 and 2) both kept
    assert {3, 5, 6}.isdisjoint(r.number for r in info.front)  # 3 and 5 dominated, 6 failed
    assert info.counts == {"COMPLETE": 6, "FAIL": 1}


def test_rewards_are_recomputed_with_the_study_settings():
    info = pareto_info(_study([(0.30, 1.0), (0.25, 0.5), (0.35, 2.0)], SETTINGS))
    rewards = {r.number: r.reward for r in info.rows}
    assert rewards[0] == pytest.approx(0.30)
    assert rewards[1] == pytest.approx(0.25 * 0.5**-0.07)
    assert rewards[2] == pytest.approx(0.35 * 2.0**-0.07)
    assert info.best_reward.number == 2  # 0.3419 beats 0.30 and 0.2621
    hard = pareto_info(_study([(0.30, 1.0), (0.25, 0.5), (0.35, 2.0)], {"target_ms": 1.0, "alpha": 0.0, "beta": -1.0}))
    assert hard.best_reward.number == 0  # over the target, the hard constraint halves 0.35


def test_table_marks_the_best_reward_and_handles_empty_studies(tmp_path):
    info = pareto_info(_study([(0.30, 1.0), (0.25, 0.5)], SETTINGS))
    table = format_front(info)
    best_line = next(line for line in table.splitlines() if line.startswith("*"))
    assert best_line.split()[1] == "0"
    assert "no completed trials" in format_front(pareto_info(_study([(None, None)])))
    write_csv_atomic(list(info.rows), str(tmp_path / "t.csv"))
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("number,state,arch")
