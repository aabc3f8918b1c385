"""Rank agreement between two measurements of the same items: Kendall's tau-b, Spearman's rho,
and percentile-bootstrap intervals for both. Pure numpy (no scipy in the stack)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def ranks(values) -> np.ndarray:
    """Average ranks from 0 (ties share the mean of their positions)."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0
        start = end + 1
    return ranks


def spearman_rho(a, b) -> float:
    ra, rb = ranks(a), ranks(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau(a, b) -> float:
    """Kendall's tau-b: concordant minus discordant pairs, corrected for ties."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    denominator = np.sqrt(np.sum(da != 0) * np.sum(db != 0))
    return float(np.sum(da * db) / denominator) if denominator else float("nan")


@dataclass(frozen=True)
class Agreement:
    n: int
    kendall_tau: float
    kendall_interval: tuple[float, float]
    spearman_rho: float
    spearman_interval: tuple[float, float]

    def describe(self) -> str:
        kl, kh = self.kendall_interval
        sl, sh = self.spearman_interval
        return (
            f"Kendall tau {self.kendall_tau:.3f} [{kl:.3f}, {kh:.3f}], Spearman rho {self.spearman_rho:.3f} "
            f"[{sl:.3f}, {sh:.3f}] (n={self.n}, 95 % bootstrap intervals)"
        )


def agreement(a, b, *, resamples: int = 2000, seed: int = 0) -> Agreement:
    """Both coefficients with 95 % percentile-bootstrap intervals over resampled items."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"need two equally long lists of at least 3 values, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(resamples):
        pick = rng.integers(0, len(a), len(a))
        tau, rho = kendall_tau(a[pick], b[pick]), spearman_rho(a[pick], b[pick])
        if np.isfinite(tau) and np.isfinite(rho):
            taus.append(tau)
            rhos.append(rho)

    def interval(values: list[float]) -> tuple[float, float]:
        return (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))) if values else (np.nan, np.nan)

    return Agreement(len(a), kendall_tau(a, b), interval(taus), spearman_rho(a, b), interval(rhos))


def error_trend(proxy, final, covariate) -> Agreement | None:
    """Whether a proxy's ranking error (its rank of an item minus the final rank; positive: overrated)
    trends with `covariate` (size, latency): their rank agreement over the items whose covariate is known
    (None: unknown), or None under 3 such items."""
    error = ranks(proxy) - ranks(final)
    pairs = [(e, v) for e, v in zip(error, covariate, strict=True) if v is not None]
    if len(pairs) < 3:
        return None
    return agreement([e for e, _ in pairs], [v for _, v in pairs])
