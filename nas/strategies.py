"""Search strategies (`--strategy`): Optuna's TPE, NSGA-II and random sampling, and the
latency-aware candidate selection of `nas.selection`. All are Optuna samplers, so a study, its
storage and its resumption behave the same whichever proposes the architectures."""

from __future__ import annotations

import os
import warnings
from functools import partial

import optuna
from optuna.samplers import BaseSampler

from nas.config import SearchConfig
from nas.selection import known_arch_ids
from nas.storage import sqlite_path

#: trials drawn at random before the model-based strategies start to model (TPE's own default too)
STARTUP_TRIALS = 10
#: proposals asked of a strategy for one trial before an unseen architecture is drawn at random
PROPOSALS_PER_TRIAL = 16


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


class UnseenFirst(BaseSampler):
    """Another strategy (TPE, NSGA-II, random), asked again when it proposes an architecture the
    study already holds, and after `PROPOSALS_PER_TRIAL` known ones replaced by a random unseen one.

    Why: a re-proposal is answered from the study as a failed trial (no sampler learns from one
    point twice), and then nothing changes for the strategy: TPE, whose acquisition is an argmax
    over a model fitted to the same points, proposed the same architecture 50 times in a row on
    NAS-Bench-201 after 11 trials. The whole architecture is proposed at once, as relative
    parameters: TPE's independent per-parameter draws are gathered into one vector first."""

    def __init__(self, inner: BaseSampler, space, *, seed: int | None = None):
        self.inner, self.space = inner, space
        self._distributions = {
            name: optuna.distributions.CategoricalDistribution(list(choices)) for name, choices in space.choices().items()
        }
        self._random = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(self, study, trial):
        return dict(self._distributions)

    def sample_relative(self, study, trial, search_space):
        if "fixed_params" in trial.system_attrs or trial.params:  # enqueued or re-created: its parameters are set
            return {}
        known = known_arch_ids(study, self.space)
        inner_space = self.inner.infer_relative_search_space(study, trial)
        for _ in range(PROPOSALS_PER_TRIAL):
            params = dict(self.inner.sample_relative(study, trial, inner_space))
            for name, distribution in self._distributions.items():
                if name not in params:
                    params[name] = self.inner.sample_independent(study, trial, name, distribution)
            if self.space.from_params(params).arch_id not in known:
                return params
        for _ in range(100 * PROPOSALS_PER_TRIAL):
            params = {n: self._random.sample_independent(study, trial, n, d) for n, d in self._distributions.items()}
            if self.space.from_params(params).arch_id not in known:
                break
        return params  # the space may be exhausted: then the objective answers it from the study

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self._random.reseed_rng()


def reference_latency_ms(config: SearchConfig, evaluator) -> float:
    """The latency bound of the latency-aware strategy's hypervolume, fixed for the whole search: a
    table's slowest entry, else the latency limit, else 10 x the target (no trial of the default
    search came near 3 x)."""
    if config.is_tabular:
        return float(evaluator.max_latency_ms)
    return config.latency_limit_ms or 10.0 * config.target_ms


def make_sampler(
    config: SearchConfig, *, existing_trials: int = 0, space=None, evaluator=None, storage=None
) -> optuna.samplers.BaseSampler:
    """The strategy's sampler: one that proposes architectures the study does not hold yet (Optuna's
    own, wrapped in `UnseenFirst`, or the latency-aware selection); on a storage with heartbeats
    (many workers), with its first heartbeat recorded before sampling (`HeartbeatFirst`)."""
    # a server database with heartbeats is the many-workers setting; SQLite serves one process
    shared = isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() is not None
    sampler = _strategy_sampler(config, existing_trials=existing_trials, space=space, evaluator=evaluator, shared=shared)
    if config.strategy != "latency-aware" and space is not None:
        sampler = UnseenFirst(sampler, space, seed=sampler_seed(config, existing_trials=existing_trials))
    return HeartbeatFirst(sampler, storage) if shared else sampler


def _strategy_sampler(
    config: SearchConfig, *, existing_trials: int, space, evaluator, shared: bool
) -> optuna.samplers.BaseSampler:
    seed = sampler_seed(config, existing_trials=existing_trials)
    if config.strategy == "tpe":
        # constant_liar with many workers: running trials (other workers') count as bad points, so
        # workers spread out. Only then: it turns off TPE's per-trial cache of the study's trials, and
        # each of a trial's parameters re-reads the storage (2.6x the time of a 100-trial
        # nb201 search, bench/search_overhead.py)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, constant_liar=shared)
    if config.strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    if config.strategy == "latency-aware":
        from nas.selection import LatencyAwareSampler, network_description

        describe = space.describe if config.is_tabular else partial(network_description, num_classes=config.num_classes)
        return LatencyAwareSampler(
            space=space,
            evaluator=evaluator,
            describe=describe,
            reference_latency_ms=reference_latency_ms(config, evaluator),
            reference_accuracy=1.0 / config.num_classes,  # chance
            seed=seed,
            startup_trials=STARTUP_TRIALS,
        )
    return optuna.samplers.RandomSampler(seed=seed)
