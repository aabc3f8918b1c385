"""One search: an Optuna study over the MnasNet space, each trial built, timed on LiteRT and
short-trained in a worker process, scored with MnasNet's reward (arXiv:1807.11626).

The flow of a trial: sample an `ArchSpec` -> reuse an identical finished trial if there is one ->
latency (cache, or convert + measure) -> skip training when over the hard limit -> proxy-train ->
record everything as user attributes (units in the names) -> return (accuracy, latency_ms) in
Pareto mode or the reward in reward mode.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import sqlalchemy.exc

from latency.cache import LatencyCache, cache_key
from latency.devices import DeviceError
from nas import early_stop
from nas.config import ConfigError, SearchConfig
from nas.reward import mnasnet_reward
from nas.worker import WORKER_LOG, TrialJob, TrialRunner
from results.pareto import ParetoInfo, pareto_info, trial_row, write_csv_atomic
from search_spaces import REFERENCES, ArchSpec, get_space
from trainers.cifar import DataError, check_cifar

log = logging.getLogger(__name__)

INPUT_SHAPE = (32, 32, 3)


class TrialFailed(RuntimeError):
    """An expected per-trial failure (build, conversion, training): the trial fails, the search goes on."""


@dataclass(frozen=True)
class SearchSummary:
    info: ParetoInfo
    new_trials: int
    wall_seconds: float
    csv_path: str
    storage_url: str


def make_sampler(config: SearchConfig, *, existing_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler, seeded so that a resumed search proposes new architectures (the same seed
    would replay the first run's random start-up proposals) and workers sharing a server database,
    started with the same command, do not propose the same trials. One SQLite process stays
    reproducible: the seed depends only on --seed and the study's size."""
    seed = config.seed * 1_000_003 + existing_trials
    if not sqlite_path(config.storage_url):
        seed = seed * 65_537 + os.getpid()
    seed %= 2**32
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    return optuna.samplers.RandomSampler(seed=seed)


def directions(mode: str) -> list[str]:
    return ["maximize", "minimize"] if mode == "pareto" else ["maximize"]


HEARTBEAT_SECONDS = 30


def sqlite_path(url: str) -> str | None:
    return os.path.abspath(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def open_storage(url: str, *, heartbeat: bool = False) -> optuna.storages.BaseStorage:
    """The study's RDB storage. With `heartbeat` on a server database (PostgreSQL, MySQL), every
    running trial records a heartbeat, and a trial whose worker stopped beating is failed and its
    parameters retried by whichever worker asks next (Optuna's own mechanism)."""
    path = sqlite_path(url)
    if path:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create {os.path.dirname(path)!r} for the study: {error.strerror}") from None
    options = {}
    with warnings.catch_warnings():
        # Optuna labels the heartbeat "experimental"; it is the documented way to detect dead workers.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat and not path:
            options = {
                "heartbeat_interval": HEARTBEAT_SECONDS,
                "grace_period": 4 * HEARTBEAT_SECONDS,
                "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            }
        try:
            return _rdb_storage(url, options)
        except Exception as error:  # SQLAlchemy raises many types for a bad URL or an unreachable server
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"storage {url!r} cannot be opened: {message}") from None


def _rdb_storage(url: str, options: dict) -> optuna.storages.RDBStorage:
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, **options)
        except sqlalchemy.exc.IntegrityError:
            # Workers started together on an empty database race to create Optuna's tables; the
            # loser sees a duplicate key and finds the tables there a moment later.
            time.sleep(1.0 + attempt)
    return optuna.storages.RDBStorage(url, **options)


def load_existing_study(*, study_name: str, storage_url: str) -> optuna.Study:
    """A study that must already exist (for `nas front` and the reports)."""
    storage = open_storage(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name not in names:
        known = ", ".join(names) if names else "none"
        raise ConfigError(f"study {study_name!r} does not exist in {storage_url} (studies there: {known})")
    return optuna.load_study(study_name=study_name, storage=storage)


def settings_of(config: SearchConfig, fingerprint: dict) -> dict:
    return {**config.study_identity(), **config.reward_settings(), "sampler": config.sampler, "fingerprint": fingerprint}


def open_study(config: SearchConfig, fingerprint: dict, storage: optuna.storages.BaseStorage) -> optuna.Study:
    existing = 0
    with contextlib.suppress(KeyError):  # KeyError: a new study
        existing = len(optuna.load_study(study_name=config.study_name, storage=storage).get_trials(deepcopy=False))
    study = optuna.create_study(
        storage=storage,
        sampler=make_sampler(config, existing_trials=existing),
        study_name=config.study_name,
        directions=directions(config.mode),
        load_if_exists=True,
    )
    stored = study.user_attrs.get("nas_settings")
    wanted = settings_of(config, fingerprint)
    if stored is None:
        study.set_user_attr("nas_settings", wanted)
    else:
        for key in config.study_identity():
            # A key missing from an older study's record held the default then.
            if stored.get(key, getattr(SearchConfig, key, None)) != wanted[key]:
                raise ConfigError(
                    f"study {config.study_name!r} was run with {key}={stored.get(key)!r}, not {wanted[key]!r}: "
                    "its trials would not be comparable; use another --study-name"
                )
        if stored.get("fingerprint", {}).get("id") != fingerprint["id"]:
            log.warning("this machine's latency fingerprint differs from the study's: latencies may not be comparable")
        if any(stored.get(k) != v for k, v in config.reward_settings().items()):
            study.set_user_attr("nas_settings", {**stored, **config.reward_settings()})
    return study


def seed_references(study: optuna.Study, space) -> int:
    """Enqueue each reference's projection onto the space, once per study."""
    seeded = {t.user_attrs.get("seeded_from") for t in study.get_trials(deepcopy=False)}
    seen_params: list[dict] = []
    count = 0
    for name, text in REFERENCES.items():
        try:
            params = space.project(ArchSpec.from_string(text))
        except ValueError:  # another layout (MobileViT-XXS has 5 body blocks): not a point of this space
            log.info("reference %s does not fit the %s space; not seeded", name, space.name)
            continue
        if name in seeded or params in seen_params:
            continue
        seen_params.append(params)
        study.enqueue_trial(params, user_attrs={"seeded_from": name}, skip_if_exists=True)
        count += 1
    return count


class LatencyScreen:
    """Skips candidates that the latency model is all but certain to measure above the hard
    limit, before any conversion. Active only with a hard limit and at least MIN_SAMPLES
    architectures measured on this device; refitted as measurements accumulate. It never
    supplies a latency: screened candidates are pruned trials, every other trial is measured."""

    REFIT_EVERY = 10

    def __init__(self, config: SearchConfig, cache: LatencyCache, fingerprint_id: str):
        self.limit_ms = config.latency_limit_ms if config.latency_screen else None
        self.cache = cache
        self.fingerprint_id = fingerprint_id
        self.model = None
        self._fitted_on = 0

    def _refresh(self) -> None:
        from latency.model import MIN_SAMPLES, fit_with_error

        measured = self.cache.measured(INPUT_SHAPE, self.fingerprint_id)
        if len(measured) < max(MIN_SAMPLES, self._fitted_on + (self.REFIT_EVERY if self.model else 0)):
            return
        specs = [ArchSpec.from_string(arch) for arch, _ in measured]
        latencies = [ms for _, ms in measured]
        self.model, _ = fit_with_error(specs, latencies, input_hw=INPUT_SHAPE[0], fingerprint_id=self.fingerprint_id)
        self._fitted_on = len(measured)
        log.info("latency model refitted on %d architectures (screening factor %.3f)", len(measured), self.model.min_ratio)

    def reject(self, spec: ArchSpec, trial: optuna.Trial) -> str | None:
        if self.limit_ms is None:
            return None
        self._refresh()
        if self.model is None:
            return None
        predicted, bound = self.model.predict(spec), self.model.lower_bound(spec)
        trial.set_user_attr("latency_predicted_ms", round(predicted, 4))
        if bound <= self.limit_ms:
            return None
        return (
            f"screened: predicted {predicted:.3f} ms (at least {bound:.3f} ms) is over the limit {self.limit_ms:g} ms; "
            "not converted, measured or trained"
        )


class Objective:
    def __init__(self, config: SearchConfig, study: optuna.Study, runner: TrialRunner, fingerprint: dict):
        self.config = config
        self.study = study
        self.runner = runner
        self.fingerprint = fingerprint
        self.space = get_space(config.space, width=config.width)
        self.cache = LatencyCache(os.path.join(config.runs_dir, "latency_cache.json"))
        self.screen = LatencyScreen(config, self.cache, fingerprint["id"])

    def _previous(self, arch_id: str):
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if trial.user_attrs.get("arch_id") == arch_id:
                return trial
        return None

    def __call__(self, trial: optuna.Trial):
        start = time.perf_counter()
        spec = self.space.sample(trial)
        trial.set_user_attr("arch", spec.to_string())
        trial.set_user_attr("arch_id", spec.arch_id)

        previous = self._previous(spec.arch_id)
        if previous is not None:  # samplers re-propose architectures: the answer is already known
            for key, value in previous.user_attrs.items():
                if key not in ("seeded_from", "trial_seconds"):
                    trial.set_user_attr(key, value)
            trial.set_user_attr("reused_from", previous.number)
            trial.set_user_attr("trial_seconds", time.perf_counter() - start)
            return tuple(previous.values) if len(previous.values) > 1 else previous.values[0]

        key = cache_key(spec.arch_id, INPUT_SHAPE, self.fingerprint["id"])
        cached = self.cache.get(key)
        if cached is None:
            reason = self.screen.reject(spec, trial)
            if reason:
                trial.set_user_attr("fail_reason", reason)
                trial.set_user_attr("trial_seconds", round(time.perf_counter() - start, 3))
                raise optuna.TrialPruned(reason)
        run_dir = self.config.run_dir
        outcome = self.runner.run(
            TrialJob.from_config(
                self.config,
                arch=spec.to_string(),
                tflite_path=os.path.join(run_dir, "models", f"{spec.arch_id}.tflite"),
                cached_latency=cached,
                early_stop_peers=early_stop.peers(self.study) if self.config.early_stop == "on" else None,
            )
        )
        for name, value in (outcome.timings or {}).items():
            trial.set_user_attr(name, round(value, 4))
        trial.set_user_attr("trial_seconds", round(time.perf_counter() - start, 3))
        if outcome.params_count:
            trial.set_user_attr("params_count", outcome.params_count)
        if outcome.latency:
            for name, value in outcome.latency.items():
                trial.set_user_attr(name, value)
            trial.set_user_attr("latency_cached", cached is not None)
            if cached is None:
                self.cache.put(key, outcome.latency, arch=spec.to_string())
        if outcome.status == "failed":
            trial.set_user_attr("fail_reason", outcome.reason)
            raise TrialFailed(outcome.reason)
        if outcome.curve:
            trial.set_user_attr("curve", outcome.curve)
        if outcome.status in ("over_latency", "early_stopped"):
            trial.set_user_attr("fail_reason", outcome.reason)
            raise optuna.TrialPruned(outcome.reason)

        latency_ms = outcome.latency["latency_median_ms"]
        reward = mnasnet_reward(
            outcome.accuracy,
            latency_ms,
            target_ms=self.config.target_ms,
            alpha=self.config.reward_alpha,
            beta=self.config.reward_beta,
        )
        trial.set_user_attr("accuracy", outcome.accuracy)
        trial.set_user_attr("reward", reward)
        return (outcome.accuracy, latency_ms) if self.config.mode == "pareto" else reward


def run_search(
    config: SearchConfig,
    *,
    on_trial: Callable[[object, int, int], None] | None = None,
    on_start: Callable[[optuna.Study, dict], None] | None = None,
) -> SearchSummary:
    """Run `config.trials` more trials on the (new or resumed) study; return its front."""
    try:
        check_cifar(config.dataset, data_dir=config.data_dir)
    except DataError as error:
        raise ConfigError(str(error)) from None
    try:
        os.makedirs(config.run_dir, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the run directory {config.run_dir!r}: {error.strerror}") from None
    if not os.access(config.run_dir, os.W_OK):
        raise ConfigError(f"the run directory {config.run_dir!r} is not writable")
    try:
        fingerprint = config.make_device().fingerprint()
    except DeviceError as error:
        raise ConfigError(f"device {config.device!r} cannot be used: {error}") from None
    with contextlib.ExitStack() as stack:
        return _run_search(config, stack, fingerprint=fingerprint, on_trial=on_trial, on_start=on_start)


def _lock_sqlite(path: str, stack: contextlib.ExitStack, study_name: str) -> None:
    """SQLite serves one search process: a second one on the same file is refused."""
    lock = stack.enter_context(open(path + ".lock", "w"))  # noqa: SIM115 (closed by the stack)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(
            f"study {study_name!r} is already being searched by another process on {path}: SQLite serves one process; "
            "for many workers use --storage postgresql://..."
        ) from None


def retry_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """With the SQLite lock held, a RUNNING trial was cut off by a kill: fail it with a reason and
    enqueue its architecture again."""
    interrupted = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in interrupted:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", "interrupted: the search stopped during this trial")
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return len(interrupted)


def _warn_about_target(config: SearchConfig, fingerprint: dict, study: optuna.Study) -> bool:
    """Warn when --target-ms is far from what this device runs, judged by its calibration or else
    by the latencies the study measured. False when there is nothing to judge by yet."""
    from nas import calibrate

    rows = calibrate.load(config.runs_dir, fingerprint["id"], INPUT_SHAPE[0])
    latencies = [r.latency_median_ms for r in rows or () if r.latency_median_ms]
    source = "the reference architectures (nas calibrate)"
    if not latencies:
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        latencies = [t.user_attrs["latency_median_ms"] for t in trials if "latency_median_ms" in t.user_attrs]
        source = "the architectures measured so far"
    warning = calibrate.target_warning(config.target_ms, latencies, source=source)
    if warning:
        log.warning(warning)
    return bool(latencies)


def _run_search(config, stack, *, fingerprint, on_trial, on_start) -> SearchSummary:
    path = sqlite_path(config.storage_url)
    storage = open_storage(config.storage_url, heartbeat=True)
    if path:
        _lock_sqlite(path, stack, config.study_name)
    study = open_study(config, fingerprint, storage)
    if path:
        retry_interrupted(study, storage)
    if config.seed_references:
        seed_references(study, get_space(config.space, width=config.width))
    if on_start:
        on_start(study, fingerprint)
    target_checked = _warn_about_target(config, fingerprint, study)
    csv_path = os.path.join(config.run_dir, "trials.csv")
    done = 0
    start = time.perf_counter()

    def after_trial(study: optuna.Study, trial) -> None:
        nonlocal done, target_checked
        done += 1
        if not target_checked:
            target_checked = _warn_about_target(config, fingerprint, study)
        write_csv_atomic([trial_row(t) for t in study.get_trials(deepcopy=False)], csv_path)
        if on_trial:
            on_trial(trial, done, config.trials)

    log_path = os.path.join(config.run_dir, WORKER_LOG)
    with TrialRunner(trials_per_worker=config.trials_per_worker, log_path=log_path) as runner:
        study.optimize(
            Objective(config, study, runner, fingerprint),
            n_trials=config.trials,
            timeout=config.timeout_s,
            catch=(TrialFailed,),
            callbacks=[after_trial],
            gc_after_trial=False,
        )
    write_csv_atomic([trial_row(t) for t in study.get_trials(deepcopy=False)], csv_path)
    return SearchSummary(pareto_info(study), done, time.perf_counter() - start, csv_path, config.storage_url)
