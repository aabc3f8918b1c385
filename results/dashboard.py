"""`nas dashboard`: optuna-dashboard on a study's own storage, for live inspection."""

from __future__ import annotations

import optuna

OBJECTIVE_NAMES = {2: ["accuracy", "latency_ms"], 1: ["mnasnet_reward"]}


def prepare(study: optuna.Study) -> None:
    """Name the objectives (stored in the study, so every dashboard shows them)."""
    from optuna_dashboard import set_objective_names

    set_objective_names(study, OBJECTIVE_NAMES[len(study.directions)])


def serve(storage_url: str, *, host: str, port: int) -> None:
    """Blocks until interrupted (Ctrl-C)."""
    from optuna_dashboard import run_server

    run_server(storage_url, host=host, port=port)
