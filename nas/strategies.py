"""Search strategies (`--strategy`): Optuna's TPE, NSGA-II and random sampling, and the
latency-aware candidate selection of `nas.selection`. All are Optuna samplers, so a study, its
storage and its resumption behave the same whichever proposes the architectures."""

from __future__ import annotations

import os
import warnings

import optuna
from optuna.samplers import BaseSampler

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


class HeartbeatFirst(BaseSampler):
    """Another sampler, with the new trial's first heartbeat recorded before it samples. Optuna starts
    a trial's heartbeat only after `study.ask()`, and sampling inside it takes time (seconds of
    latency measurements for the latency-aware strategy): a worker killed there would leave a trial
    RUNNING forever. With a heartbeat from the start, it goes stale and is failed and retried."""

    def __init__(self, inner: BaseSampler, storage):
        self.inner, self.storage = inner, storage

    def before_trial(self, study, trial) -> None:
        self.storage.record_heartbeat(trial._trial_id)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def make_sampler(
    config: SearchConfig, *, existing_trials: int = 0, space=None, evaluator=None, storage=None
) -> optuna.samplers.BaseSampler:
    """The strategy's sampler; on a storage with heartbeats (many workers), with its first heartbeat
    recorded before sampling (`HeartbeatFirst`)."""
    sampler = _strategy_sampler(config, existing_trials=existing_trials, space=space, evaluator=evaluator)
    if isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() is not None:
        return HeartbeatFirst(sampler, storage)
    return sampler


def _strategy_sampler(config: SearchConfig, *, existing_trials: int, space, evaluator) -> optuna.samplers.BaseSampler:
    seed = sampler_seed(config, existing_trials=existing_trials)
    if config.strategy == "tpe":
        # constant_liar: running trials (other workers') count as bad points, so workers spread out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, constant_liar=True)
    if config.strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    if config.strategy == "latency-aware":
        from nas.selection import LatencyAwareSampler

        return LatencyAwareSampler(space=space, evaluator=evaluator, seed=seed, startup_trials=STARTUP_TRIALS)
    return optuna.samplers.RandomSampler(seed=seed)
