"""Where a study lives and what makes it one study: the Optuna storage (SQLite by default,
PostgreSQL for many workers), the single-process lock on SQLite, the study's identity (settings
that must not change between runs, and the latency fingerprint), and the repair of trials that a
kill interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings

import optuna
import sqlalchemy.exc

from latency.fingerprint import differences
from nas.config import ConfigError, SearchConfig
from results.record import StudySettings, TrialRecord, store
from search_spaces.errors import error_line

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30
#: defaults of settings that studies made before the setting existed did not record
LEGACY_DEFAULTS = {"stem_stride": 2}
INTERRUPTED = "interrupted: the search stopped during this trial"


def sqlite_path(url: str) -> str | None:
    return os.path.abspath(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def open_storage(url: str, *, heartbeat: bool = False, create: bool = True) -> optuna.storages.BaseStorage:
    """The study's RDB storage. With `heartbeat` on a server database (PostgreSQL, MySQL), every
    running trial records a heartbeat, and a trial whose worker stopped beating is failed and its
    parameters retried by whichever worker asks next (Optuna's own mechanism). With
    `create=False` (commands that only read) a missing SQLite file is an error, not a new database."""
    path = sqlite_path(url)
    if path and not create and not os.path.isfile(path):
        raise ConfigError(f"storage {url!r} does not exist: no file {path}")
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
            raise ConfigError(f"storage {url!r} cannot be opened: {error_line(error)}") from None


def _rdb_storage(url: str, options: dict) -> optuna.storages.RDBStorage:
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, **options)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as error:
            # Workers started together on an empty database race to create Optuna's tables; the
            # loser sees a duplicate key or "relation already exists" and finds the tables there a moment later.
            if isinstance(error, sqlalchemy.exc.ProgrammingError) and "already exists" not in str(error):
                raise
            time.sleep(1.0 + attempt)
    return optuna.storages.RDBStorage(url, **options)


def load_existing_study(*, study_name: str, storage_url: str) -> optuna.Study:
    """A study that must already exist (front, report, retrain, ...): creates nothing."""
    storage = open_storage(storage_url, create=False)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name not in names:
        known = ", ".join(names) if names else "none"
        raise ConfigError(f"study {study_name!r} does not exist in {storage_url} (studies there: {known})")
    return optuna.load_study(study_name=study_name, storage=storage)


def lock_sqlite(path: str, stack: contextlib.ExitStack, study_name: str) -> None:
    """SQLite serves one search process: a second one on the same file is refused."""
    from search_spaces.files import Busy, locked

    busy = (
        f"study {study_name!r} is already being searched by another process on {path}: SQLite serves one process; "
        "for many workers use --storage postgresql://..."
    )
    try:
        stack.enter_context(locked(path + ".lock", busy=busy))
    except Busy as error:
        raise ConfigError(str(error)) from None


#: the settings whose defaults are measured per data set and move with new measurements (trainers.proxy)
BUDGET = ("train_images", "epochs")


def with_study_budget(config: SearchConfig, *, given: set[str]) -> SearchConfig:
    """`config` with the proxy budget its study ran with, where the user set none (`given`: the settings set
    by flag or file): a study resumes as it ran after a default changed, instead of being refused."""
    keys = [k for k in BUDGET if k not in given]
    path = sqlite_path(config.storage_url)
    if not keys or (path and not os.path.exists(path)):
        return config
    try:
        stored = StudySettings.of(load_existing_study(study_name=config.study_name, storage_url=config.storage_url))
    except ConfigError:  # a new study; a storage that cannot be opened says so when the search opens it
        return config
    inherited = {k: getattr(stored, k) for k in keys if getattr(stored, k) not in (None, getattr(config, k))}
    return dataclasses.replace(config, **inherited) if inherited else config


def check_identity(config: SearchConfig, fingerprint: dict, study: optuna.Study) -> None:
    """Record the study's settings on its first run; on later runs refuse settings or a latency
    fingerprint that would make the new trials incomparable with the stored ones. The reward's
    settings may change in Pareto mode (the reward is a derived column, recomputed from them)."""
    stored = StudySettings.of(study)
    wanted = config.study_settings(fingerprint)
    if not stored.recorded:
        wanted.save(study)
        return
    for key, value in config.study_identity().items():
        # A setting missing from an older study's record held that version's default.
        was = getattr(stored, key)
        was = was if was is not None else LEGACY_DEFAULTS.get(key, getattr(SearchConfig, key, None))
        if was != value:  # a default that changed since the study began is named, so it can be resumed as it ran
            raise ConfigError(
                f"study {config.study_name!r} was run with {key}={was!r}, not {value!r}: its trials would not be "
                f"comparable; resume it with --{key.replace('_', '-')} {was}, or use another --study-name"
            )
    if stored.fingerprint.get("id") != fingerprint["id"]:
        raise ConfigError(
            f"study {config.study_name!r} measured latency on fingerprint {stored.fingerprint.get('id')} and this process "
            f"measures on {fingerprint['id']} ({differences(stored.fingerprint, fingerprint)}): latencies would mix; "
            "use identical machines, one device hook for every worker, or another --study-name"
        )
    changed = {**config.reward_settings(), "strategy": config.strategy}
    if any(getattr(stored, k) != v for k, v in changed.items()):
        dataclasses.replace(stored, **changed).save(study)


def fail_and_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Fail a trial that did not finish, with its reason, and enqueue its architecture again."""
    storage = study._storage
    store(_Writer(storage, trial._trial_id), TrialRecord(fail_reason=reason))
    storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    study.enqueue_trial(trial.params, user_attrs=TrialRecord(retry_of=trial.number).to_user_attrs())


def retry_interrupted(study: optuna.Study) -> int:
    """With the SQLite lock held, a RUNNING trial was cut off by a kill: fail it with a reason and
    enqueue its architecture again."""
    interrupted = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in interrupted:
        fail_and_retry(study, trial, INTERRUPTED)
    return len(interrupted)


class _Writer:
    """`set_user_attr` on a trial known only by id (a frozen trial of another process)."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id

    def set_user_attr(self, key: str, value) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)
