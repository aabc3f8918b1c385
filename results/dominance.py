"""Pareto dominance on (latency ms, accuracy) points, where faster and more accurate is better: the
one definition the study's front, the comparison's verdicts and the search strategy all use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

Point = tuple[float, float]  # (latency ms, accuracy)
T = TypeVar("T")


def dominates(a: Point, b: Point) -> bool:
    """a is at least as fast and as accurate as b, and strictly better in one."""
    (latency_a, accuracy_a), (latency_b, accuracy_b) = a, b
    return accuracy_a >= accuracy_b and latency_a <= latency_b and (accuracy_a > accuracy_b or latency_a < latency_b)


def non_dominated(items: Iterable[T], point: Callable[[T], Point]) -> list[T]:
    """The items no other item dominates, fastest first. Items at the very same point are all kept
    (distinct architectures that tie), in their given order. One sweep in latency order, the more
    accurate first among equal latencies: an item is on the front if it is more accurate than every
    faster one, or sits exactly on the best point so far."""
    front, best = [], None
    for item in sorted(items, key=lambda x: (point(x)[0], -point(x)[1])):
        latency, accuracy = point(item)
        if best is None or accuracy > best[1]:
            best = (latency, accuracy)
            front.append(item)
        elif (latency, accuracy) == best:
            front.append(item)
    return front
