"""What multi-objective early stopping would have done to a finished search, replayed from its study: every
trial records its learning curve (accuracy at the rungs) even with early stopping off, so the rule of
`nas.early_stop` can be applied trial by trial, in the order they finished, with the peers it would have
had (a stopped trial is no peer of later ones, as in a search). Counted: trials stopped, the share of
proxy training saved, and what it cost: members of the study's Pareto front that would have been stopped,
and the hypervolume of the trials left against all of them (one reference point: accuracy 0, 1.1 x the
slowest latency).

    python bench/early_stop_replay.py                       # the proof's two studies, if present
    python bench/early_stop_replay.py --study NAME --storage sqlite:///PATH

What a replay cannot say: with trials stopped, a sampler proposes other architectures afterwards (the
time saved buys more trials; the pruned ones also inform TPE differently). It measures the rule's
decisions on the same trials, at no cost of machine time.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PROOF = os.path.join(ROOT, "bench", "data", "proof")
STUDIES = (
    ("mnasnet-cifar10", os.path.join(PROOF, "study.db")),
    ("mnasnet-cifar10-24000x2", os.path.join(PROOF, "shipped", "study.db")),
)


def replay(rows: list) -> dict:
    """Apply the dominance rule to `rows` (measured TrialRows with curves, in finishing order)."""
    from nas.early_stop import dominance_rule
    from results.pareto import hypervolume, hypervolume_reference, pareto_front
    from trainers.proxy import RUNG_VAL_IMAGES, RUNGS

    peers, stopped = [], {}
    for row, curve in rows:
        rule = dominance_rule(tuple(peers), row.latency_ms, images=RUNG_VAL_IMAGES, rungs=len(RUNGS))
        reason = next(((fraction, why) for fraction, accuracy in curve if (why := rule(fraction, accuracy))), None)
        if reason:
            stopped[row.number] = reason
        else:
            peers.append((row.number, row.latency_ms, curve))
    everything = [row for row, _ in rows]
    kept = [row for row in everything if row.number not in stopped]
    reference = hypervolume_reference(everything)
    front = pareto_front(everything)
    return {
        "trials": len(rows),
        "stopped": sorted(stopped),
        "saved": sum(1.0 - fraction for fraction, _ in stopped.values()) / max(1, len(rows)),
        "front": [row.number for row in front],
        "front_stopped": [row.number for row in front if row.number in stopped],
        "hypervolume_kept": hypervolume(kept, reference=reference) / max(1e-12, hypervolume(everything, reference=reference)),
        "reasons": stopped,
    }


def rows_of(study_name: str, storage: str) -> list:
    import optuna

    from results.pareto import trial_row
    from results.record import TrialRecord

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.datetime_complete or t.datetime_start):
        row, curve = trial_row(trial), TrialRecord.from_trial(trial).curve
        if row.measured and curve:
            rows.append((row, tuple(tuple(point) for point in curve)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", help="a study name (with --storage); default: the proof's studies")
    parser.add_argument("--storage")
    args = parser.parse_args()
    if bool(args.study) != bool(args.storage):
        parser.error("--study and --storage go together")
    studies = [(args.study, args.storage)] if args.study else [(n, f"sqlite:///{p}") for n, p in STUDIES if os.path.exists(p)]
    print(f"{'study':<26} {'trials':>6} {'stopped':>7} {'training saved':>14} {'front':>5} {'front stopped':>13} {'HV kept':>7}")
    for name, storage in studies:
        result = replay(rows_of(name, storage))
        print(
            f"{name:<26} {result['trials']:>6} {len(result['stopped']):>7} {result['saved']:>13.0%} {len(result['front']):>5} "
            f"{len(result['front_stopped']):>13} {result['hypervolume_kept']:>7.1%}"
        )
        for number, (_, why) in sorted(result["reasons"].items()):
            flag = "  FRONT" if number in result["front_stopped"] else ""
            print(f"    trial {number:>3}{flag}: {why}")


if __name__ == "__main__":
    main()
