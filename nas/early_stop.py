"""Multi-objective early stopping. Optuna's pruners compare one objective and refuse
multi-objective studies, so the rule here is Pareto-aware: a trial stops at a rung (a point of
its training, see `trainers.proxy.RUNGS`) when the best finished trial that is at least as fast
had, at the same rung, a clearly higher accuracy. Such a trial is dominated at equal training
progress, so it is unlikely to reach the front.

"Clearly" is corrected for the number of comparisons. Comparing with each of k faster peers at
one standard error stops a trial as good as all of them whenever any peer's noise is a standard
error above its own: with ten such peers, 80 % of good trials were stopped (simulated in
tests/test_early_stop.py). So the trial is compared with its best faster peer only, and stopped
when the gap exceeds z(1 - FALSE_STOP / (k x rungs)) standard errors of the difference of the two
accuracies (binomial, on the rung's held-out images): a Bonferroni bound that keeps the chance of
stopping a trial as good as its peers below `FALSE_STOP` over its whole training.

The rule runs in the worker (it needs the trial's measured latency and its curve as training
goes); the peers are the study's finished trials, passed in with the job.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import optuna

from results.record import TrialRecord

FALSE_STOP = 0.05  # chance that a trial as good as every faster peer is stopped, over all its rungs
MIN_PEERS = 3  # before this many finished curves exist, nothing is stopped


def peers(study: optuna.Study) -> tuple:
    """(trial number, latency ms, curve) of every finished trial that recorded a curve."""
    found = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        record = TrialRecord.from_trial(trial)
        if record.curve and record.latency_ms is not None:
            found.append((trial.number, record.latency_ms, record.curve))
    return tuple(found)


def stop_threshold(peer_accuracy: float, accuracy: float, *, comparisons: int, images: int) -> float:
    """The accuracy gap beyond which the best of `comparisons` faster peers is clearly better."""
    variance = (peer_accuracy * (1 - peer_accuracy) + accuracy * (1 - accuracy)) / images
    standard_error = max(math.sqrt(variance), 1.0 / images)  # never zero, even at 0 % or 100 %
    return NormalDist().inv_cdf(1.0 - FALSE_STOP / comparisons) * standard_error


def dominance_rule(peer_trials: tuple, latency_ms: float, *, images: int, rungs: int):
    """The stop rule of one trial whose latency is `latency_ms`, its curve measured on `images`
    held-out images at `rungs` points: (fraction, accuracy) -> reason or None."""

    def rule(fraction: float, accuracy: float) -> str | None:
        if len(peer_trials) < MIN_PEERS:
            return None
        faster = []
        for number, peer_latency, curve in peer_trials:
            peer_accuracy = next((a for f, a in curve if abs(f - fraction) < 1e-6), None)
            if peer_accuracy is not None and peer_latency <= latency_ms:
                faster.append((peer_accuracy, number, peer_latency))
        if not faster:
            return None
        peer_accuracy, number, peer_latency = max(faster)
        threshold = stop_threshold(peer_accuracy, accuracy, comparisons=len(faster) * rungs, images=images)
        if peer_accuracy - accuracy <= threshold:
            return None
        return (
            f"early-stopped at {fraction:.0%} of training: accuracy {accuracy:.3f} there, while trial {number} "
            f"({peer_latency:.3f} ms <= {latency_ms:.3f} ms) had {peer_accuracy:.3f}, the best of {len(faster)} faster "
            f"trials (a gap of more than {threshold:.3f})"
        )

    return rule
