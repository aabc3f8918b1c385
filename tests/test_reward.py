import math

import pytest

from results.reward import HARD, SOFT, mnasnet_reward


@pytest.mark.parametrize(
    ("latency_ms", "weights", "expected"),
    [
        (75.0, SOFT, 0.8),  # on target: the accuracy itself
        (150.0, SOFT, 0.8 * 2**-0.07),  # twice too slow: ~4.7 % less
        (37.5, SOFT, 0.8 * 0.5**-0.07),  # twice as fast: ~5 % more
        (37.5, HARD, 0.8),  # hard: no bonus under the target
        (150.0, HARD, 0.4),  # hard: reward halves at twice the target
    ],
)
def test_known_points(latency_ms, weights, expected):
    assert mnasnet_reward(0.8, latency_ms, target_ms=75.0, **weights) == pytest.approx(expected, rel=1e-12)


def test_soft_values_match_the_paper_numbers():
    assert mnasnet_reward(0.8, 150.0, target_ms=75.0, **SOFT) == pytest.approx(0.762110, abs=1e-6)  # 0.8 * exp(-0.07 ln 2)
    assert mnasnet_reward(0.8, 37.5, target_ms=75.0, **SOFT) == pytest.approx(0.839773, abs=1e-6)  # 0.8 * exp(0.07 ln 2)


def test_boundary_uses_alpha_at_exactly_the_target():
    # At LAT == T both branches give ACC; just above T, beta applies.
    assert mnasnet_reward(0.5, 10.0, target_ms=10.0, alpha=-0.5, beta=-3.0) == 0.5
    just_over = mnasnet_reward(0.5, 10.0 * (1 + 1e-9), target_ms=10.0, alpha=-0.5, beta=-3.0)
    assert just_over < 0.5
    assert math.isclose(just_over, 0.5 * (1 + 1e-9) ** -3.0)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"accuracy": 1.5}, "accuracy=1.5"),
        ({"accuracy": -0.1}, "accuracy=-0.1"),
        ({"latency_ms": 0.0}, "latency_ms=0.0"),
        ({"latency_ms": float("nan")}, "latency_ms=nan"),
        ({"target_ms": -1.0}, "target_ms=-1.0"),
        ({"alpha": 0.07}, "alpha=0.07"),
        ({"beta": 1.0}, "beta=1.0"),
    ],
)
def test_invalid_inputs_name_the_value(kwargs, word):
    args = {"accuracy": 0.5, "latency_ms": 1.0, "target_ms": 1.0, "alpha": -0.07, "beta": -0.07} | kwargs
    accuracy, latency_ms = args.pop("accuracy"), args.pop("latency_ms")
    with pytest.raises(ValueError, match=word.replace(".", r"\.")):
        mnasnet_reward(accuracy, latency_ms, **args)


@pytest.mark.parametrize("latency_ms", [0.2, 1.0, 1.7, 40.0])
def test_the_iso_reward_accuracy_earns_exactly_that_reward(latency_ms):
    from results.reward import Reward

    reward = Reward(target_ms=1.0, alpha=-0.07, beta=-0.5)
    assert reward.of(reward.accuracy_for(0.1, latency_ms), latency_ms) == pytest.approx(0.1)
    assert reward.accuracy_for(0.3, 1.0) == pytest.approx(0.3)  # at the target the reward is the accuracy
