"""MnasNet's latency-aware reward (Tan et al., arXiv:1807.11626, equation 2):

    reward = ACC * (LAT / T) ** w,   w = alpha if LAT <= T else beta

Soft constraint: alpha = beta = -0.07 (the paper's choice: a model twice as fast earns ~5 % more
reward). Hard constraint: alpha = 0, beta = -1 (no bonus under the target, a steep penalty over it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SOFT = {"alpha": -0.07, "beta": -0.07}
HARD = {"alpha": 0.0, "beta": -1.0}
CONSTRAINTS = {"soft": SOFT, "hard": HARD}


def mnasnet_reward(accuracy: float, latency_ms: float, *, target_ms: float, alpha: float, beta: float) -> float:
    if not (0.0 <= accuracy <= 1.0):
        raise ValueError(f"accuracy={accuracy!r} must be a fraction in [0, 1]")
    for name, value in (("latency_ms", latency_ms), ("target_ms", target_ms)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r} must be a positive number")
    if alpha > 0 or beta > 0:
        raise ValueError(f"alpha={alpha} and beta={beta} must be <= 0 (a slower model must never earn more)")
    return accuracy * (latency_ms / target_ms) ** (alpha if latency_ms <= target_ms else beta)


@dataclass(frozen=True)
class Reward:
    """A study's reward: its target and exponents, the reward of a point and its inverse (the
    accuracy a latency needs for a given reward: the report's iso-reward curves)."""

    target_ms: float
    alpha: float
    beta: float

    def _exponent(self, latency_ms: float) -> float:
        return self.alpha if latency_ms <= self.target_ms else self.beta

    def of(self, accuracy: float, latency_ms: float) -> float:
        return mnasnet_reward(accuracy, latency_ms, target_ms=self.target_ms, alpha=self.alpha, beta=self.beta)

    def accuracy_for(self, reward: float, latency_ms: float) -> float:
        """ACC = R / (LAT/T)^w: the accuracy that earns `reward` at `latency_ms`."""
        return reward / (latency_ms / self.target_ms) ** self._exponent(latency_ms)
