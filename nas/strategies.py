"""Search strategies (`--strategy`): Optuna's TPE, NSGA-II and random sampling, and the
latency-aware candidate selection of `nas.selection`. All are Optuna samplers, so a study, its
storage and its resumption behave the same whichever proposes the architectures."""

from __future__ import annotations

import os

import optuna

from nas.config import SearchConfig
from nas.storage import sqlite_path

#: trials drawn at random before the model-based strategies start to model (TPE's own default too)
STARTUP_TRIALS = 10


def sampler_seed(config: SearchConfig, *, existing_trials: int) -> int:
    """Seeded so that a resumed search proposes new architectures (the same seed would replay the
    first run's random start-up proposals) and workers sharing a server database, started with the
    same command, do not propose the same trials. One SQLite process stays reproducible: the seed
    depends only on --seed and the study's size."""
    seed = config.seed * 1_000_003 + existing_trials
    if not sqlite_path(config.storage_url):
        seed = seed * 65_537 + os.getpid()
    return seed % 2**32


def make_sampler(config: SearchConfig, *, existing_trials: int = 0, space=None, evaluator=None) -> optuna.samplers.BaseSampler:
    seed = sampler_seed(config, existing_trials=existing_trials)
    if config.strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    if config.strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    if config.strategy == "latency-aware":
        from nas.selection import LatencyAwareSampler

        return LatencyAwareSampler(space=space, evaluator=evaluator, seed=seed, startup_trials=STARTUP_TRIALS)
    return optuna.samplers.RandomSampler(seed=seed)
