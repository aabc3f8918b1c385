import optuna
import pytest
from optuna.trial import TrialState, create_trial

from results.pareto import format_front, hypervolume, pareto_info, write_csv_atomic


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


def test_hypervolume_by_hand_and_its_history():
    info = pareto_info(_study([(0.30, 1.0), (0.25, 0.5), (0.35, 2.0), (0.20, 1.5)], SETTINGS))
    assert info.hypervolume_reference == pytest.approx((0.0, 2.2))  # 1.1 x the slowest latency
    # after trial 0: (2.2 - 1.0) x 0.30 = 0.36
    # after trial 1: (1.0 - 0.5) x 0.25 + 0.36 = 0.485
    # after trial 2: 0.125 + (2.0 - 1.0) x 0.30 + (2.2 - 2.0) x 0.35 = 0.495; trial 3 is dominated
    numbers, volumes = zip(*info.hypervolume_history, strict=True)
    assert numbers == (0, 1, 2, 3)
    assert volumes == pytest.approx((0.36, 0.485, 0.495, 0.495))
    # nothing inside the reference box (or nothing at all) covers no area
    assert hypervolume(info.rows, reference=(0.0, 0.4)) == 0.0 and hypervolume([], reference=(0.0, 1.0)) == 0.0


def test_choice_frequencies_compare_the_front_with_all_trials():
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"b1_op": optuna.distributions.CategoricalDistribution(["conv", "mbconv6"])}
    for accuracy, latency_ms, op in [(0.3, 1.0, "mbconv6"), (0.2, 0.5, "conv"), (0.1, 2.0, "conv"), (0.25, 0.9, "mbconv6")]:
        attrs = {"arch": op, "accuracy": accuracy, "latency_median_ms": latency_ms}
        study.add_trial(create_trial(values=[accuracy, latency_ms], params={"b1_op": op}, distributions=dist, user_attrs=attrs))
    info = pareto_info(study)
    assert [r.number for r in info.front] == [1, 3, 0]
    # front: conv once, mbconv6 twice; all trials: two of each
    assert info.choice_frequencies["b1_op"]["conv"] == pytest.approx((1 / 3, 0.5))
    assert info.choice_frequencies["b1_op"]["mbconv6"] == pytest.approx((2 / 3, 0.5))


def test_the_front_sweep_equals_the_brute_force_definition():
    import random

    from results.dominance import dominates
    from results.pareto import TrialRow, pareto_front

    rng = random.Random(0)
    for _ in range(200):
        rows = [
            TrialRow(n, "COMPLETE", f"a{n}", f"id{n}", rng.choice([0.1, 0.2, 0.3, 0.4]), rng.choice([1.0, 2.0, 3.0]),
                     None, None, None, None, None, "", "")
            for n in range(rng.randint(1, 12))
        ]  # fmt: skip
        point = {r.number: (r.latency_ms, r.accuracy) for r in rows}
        kept = (r for r in rows if not any(dominates(point[o.number], point[r.number]) for o in rows))
        brute = sorted(kept, key=lambda r: (r.latency_ms, -r.accuracy, r.number))
        assert pareto_front(rows) == brute
