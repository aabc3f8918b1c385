"""Multi-objective early stopping. Optuna's pruners compare one objective and refuse
multi-objective studies, so the rule here is Pareto-aware: a trial stops at a rung (a point of
its training, see `trainers.proxy.RUNGS`) when a finished trial that is at least as fast had,
at the same rung, an accuracy higher by more than `MARGIN`. Such a trial is dominated at equal
training progress, so it is unlikely to reach the front; the margin (about one standard error
of the difference of two 500-image accuracies) keeps noise from stopping it.

The rule runs in the worker (it needs the trial's measured latency and its curve as training
goes); the peers are the study's finished trials, passed in with the job.
"""

from __future__ import annotations

import optuna

MARGIN = 0.03
MIN_PEERS = 3  # before this many finished curves exist, nothing is stopped


def peers(study: optuna.Study) -> tuple:
    """(trial number, latency ms, curve) of every finished trial that recorded a curve."""
    found = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if attrs.get("curve") and "latency_median_ms" in attrs:
            found.append((trial.number, attrs["latency_median_ms"], tuple(tuple(point) for point in attrs["curve"])))
    return tuple(found)


def dominance_rule(peer_trials: tuple, latency_ms: float):
    """The stop rule of one trial whose latency is `latency_ms`: (fraction, accuracy) -> reason or None."""

    def rule(fraction: float, accuracy: float) -> str | None:
        if len(peer_trials) < MIN_PEERS:
            return None
        for number, peer_latency, curve in peer_trials:
            peer_accuracy = next((a for f, a in curve if abs(f - fraction) < 1e-6), None)
            if peer_accuracy is not None and peer_latency <= latency_ms and peer_accuracy > accuracy + MARGIN:
                return (
                    f"early-stopped at {fraction:.0%} of training: accuracy {accuracy:.3f} there, while trial {number} "
                    f"({peer_latency:.3f} ms <= {latency_ms:.3f} ms) had {peer_accuracy:.3f}"
                )
        return None

    return rule
