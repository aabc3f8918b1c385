"""One search: an Optuna study over a space, each trial's candidate evaluated latency first, then
accuracy, and scored with MnasNet's reward (arXiv:1807.11626).

The flow of a trial: the strategy proposes a candidate (`nas.strategies`) -> reuse an identical
finished trial if there is one -> latency from the evaluator (`nas.evaluators`: measured on the
device, cached, or looked up) -> skip training when over the hard limit -> accuracy from the
evaluator (proxy training in a worker, or a table) -> one typed record (`results.record`) stored
as user attributes -> (accuracy, latency_ms) in Pareto mode or the reward in reward mode.
Storage, study identity and crash repair live in `nas.storage`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import optuna

from latency.devices import DeviceError
from nas import early_stop
from nas.config import ConfigError, SearchConfig
from nas.evaluators import EvaluationFailed, LatencyAnswer, RealEvaluator, TableEvaluator
from nas.storage import check_identity, fail_and_retry, lock_sqlite, open_storage, retry_interrupted, sqlite_path
from nas.strategies import make_sampler
from nas.worker import WORKER_LOG, Status, TrialRunner
from results.pareto import ParetoInfo, pareto_info, write_trials_csv
from results.record import REUSABLE_FIELDS, TrialRecord, store
from results.reward import mnasnet_reward
from search_spaces import INPUT_SHAPE, REFERENCES, ArchSpec
from search_spaces.files import TRIALS_CSV
from trainers.cifar import DataError, check_cifar

log = logging.getLogger(__name__)


STOPPED = "interrupted: the search was stopped (Ctrl-C or SIGTERM) during this trial"
NOT_BEGUN = "interrupted: the search was stopped (Ctrl-C or SIGTERM) before this trial began"


class TrialFailed(RuntimeError):
    """An expected per-trial failure (build, conversion, training): the trial fails, the search goes on."""


class AlreadyKnown(TrialFailed):
    """A re-proposed architecture, answered from the study. The trial is stored as failed (with the
    answer's figures and `reused_from`) so that no sampler learns from one point twice: TPE and
    NSGA-II ignore failed trials, while a COMPLETE copy would pull them back to it."""


#: the trial constraint (Optuna's `Trial.set_constraint`) that says how many ms a latency lies over the hard limit
LIMIT_CONSTRAINT = "latency_over_limit_ms"

#: a failed evaluation is tried once more when proposed again; after this many failures it is answered
FAILURES_BEFORE_GIVING_UP = 2


def was_interrupted(record: TrialRecord) -> bool:
    """Failed because its process stopped, not because of the architecture: a Ctrl-C, a kill found at
    the next start, or a stale heartbeat (Optuna fails those without a reason of ours)."""
    return not record.fail_reason or record.fail_reason.startswith("interrupted")


def prior_evaluation(trials, arch_id: str, *, number: int) -> tuple[str, object]:
    """How the study already answers trial `number`'s proposal of `arch_id`:

    - ("new", None): evaluate it;
    - ("running", t): trial t (another worker) is evaluating it right now. Every trial records its
      architecture before it asks, so of two that propose one architecture at once, at least the
      second to record it defers (both may: then neither evaluates it now, and no point is doubled);
    - ("answer", t): t finished it (complete, pruned, screened or early-stopped), or it failed
      `FAILURES_BEFORE_GIVING_UP` times (t the last failure);
    - ("retry", t): it failed once (t), for a reason of its own: try once more.

    Only original evaluations count, not earlier answers; interruptions are no failures."""
    originals = []
    for t in trials:
        record = TrialRecord.from_trial(t)
        if t.number != number and record.arch_id == arch_id and record.reused_from is None:
            originals.append((t, record))
    State = optuna.trial.TrialState
    for t, _ in originals:
        if t.state in (State.COMPLETE, State.PRUNED):
            return "answer", t
    for t, _ in originals:
        if t.state == State.RUNNING:
            return "running", t
    failures = [t for t, r in originals if t.state == State.FAIL and not was_interrupted(r)]
    if len(failures) >= FAILURES_BEFORE_GIVING_UP:
        return "answer", failures[-1]
    if failures:
        return "retry", failures[-1]
    return "new", None


def study_evaluations(trials) -> int:
    """New architectures the study holds or is evaluating, every worker's together: finished original
    evaluations and running trials (each becomes one, or an answer, which then no longer counts);
    not answers, not interruptions (their architecture is retried)."""
    State = optuna.trial.TrialState
    count = 0
    for t in trials:
        record = TrialRecord.from_trial(t)
        if record.reused_from is not None or t.state == State.WAITING:
            continue
        count += t.state != State.FAIL or not was_interrupted(record)
    return count


#: samplers re-propose architectures they like; answered from the study, such trials cost half a second
#: and do not count towards --trials, but a sampler that proposes nothing new this many times in a row
#: (at least) has converged, and the search ends rather than spin
MAX_REUSED_IN_A_ROW = 50


@dataclass(frozen=True)
class SearchSummary:
    info: ParetoInfo
    new_trials: int  # architectures evaluated (trained, pruned or failed), not answers copied from the study
    wall_seconds: float
    csv_path: str
    storage_url: str
    reused_trials: int = 0
    converged: bool = False  # stopped because the sampler proposed only known architectures


def seed_references(study: optuna.Study, space) -> int:
    """Enqueue each reference's projection onto the space, once per study."""
    seeded = {TrialRecord.from_trial(t).seeded_from for t in study.get_trials(deepcopy=False)}
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
        study.enqueue_trial(params, user_attrs=TrialRecord(seeded_from=name).to_user_attrs(), skip_if_exists=True)
        count += 1
    return count


class LatencyScreen:
    """Skips candidates that the latency model is all but certain to measure above the hard
    limit, before any conversion. Active only with a hard limit and once the evaluator's latency
    model is fitted. It never supplies a latency: screened candidates are pruned trials, every
    other trial is measured."""

    def __init__(self, config: SearchConfig, evaluator):
        self.limit_ms = config.latency_limit_ms if config.latency_screen else None
        self.evaluator = evaluator

    def reject(self, spec) -> tuple[str | None, float | None]:
        """(reason to skip or None, the prediction made)."""
        model = self.evaluator.latency_model() if self.limit_ms is not None else None
        if model is None:
            return None, None
        predicted, bound = model.predict(spec), model.lower_bound(spec)
        if bound <= self.limit_ms:
            return None, round(predicted, 4)
        reason = (
            f"screened: predicted {predicted:.3f} ms (at least {bound:.3f} ms) is over the limit {self.limit_ms:g} ms; "
            "not converted, measured or trained"
        )
        return reason, round(predicted, 4)


class Objective:
    """One trial: the candidate, its latency, then (if it may run) its accuracy; every figure in
    one `TrialRecord`."""

    def __init__(self, config: SearchConfig, study: optuna.Study, evaluator, sampler, guard: InterruptGuard | None = None):
        self.config = config
        self.guard = guard or InterruptGuard()  # not installed: interrupts are Python's as usual
        self.study = study
        self.evaluator = evaluator
        self.sampler = sampler
        self.space = config.make_space()
        self.screen = LatencyScreen(config, evaluator)
        # the trial an interrupt stopped, retried by the search; only that one: a trial that ended
        # pruned or failed before an interrupt between two trials is no interrupted trial
        self.interrupted: optuna.Trial | None = None

    def __call__(self, trial: optuna.Trial):
        if self.guard.pending:  # interrupted while Optuna created this trial: it never began
            store(trial, TrialRecord(fail_reason=NOT_BEGUN), previous=TrialRecord.from_trial(trial))
            self.guard.raise_pending()
        try:
            with self.guard.trial():
                return self._evaluate(trial)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: while the trial still runs, say why it will fail
            store(trial, TrialRecord(fail_reason=STOPPED), previous=TrialRecord.from_trial(trial))
            self.interrupted = trial
            raise

    def _evaluate(self, trial: optuna.Trial):
        start = time.perf_counter()
        candidate = self.space.sample(trial)
        # an enqueued trial brings seeded_from / retry_of, the selection its bookkeeping; a trial that
        # Optuna re-created after its worker died brings the dead one's record, and its number
        stored = TrialRecord.from_trial(trial)
        record = stored.replace(arch=candidate.to_string(), arch_id=candidate.arch_id, fail_reason="")
        system_attrs = self.study._storage.get_trial_system_attrs(trial._trial_id)
        if "failed_trial" in system_attrs and record.retry_of is None:
            record = record.replace(retry_of=system_attrs["failed_trial"])

        def finish(record: TrialRecord, error: BaseException | None = None):
            store(trial, record.replace(trial_seconds=round(time.perf_counter() - start, 3)), previous=stored)
            if error is not None:
                raise error

        # Reserve the architecture before anything else: a worker proposing it from now on sees it running.
        store(trial, record, previous=stored)
        stored = record
        kind, previous = prior_evaluation(self.study.get_trials(deepcopy=False), candidate.arch_id, number=trial.number)
        if kind in ("answer", "running"):  # samplers re-propose architectures: the answer is known or coming
            copied = TrialRecord.from_trial(previous)
            if kind == "answer":
                record = record.replace(**{f: getattr(copied, f) for f in REUSABLE_FIELDS})
                why = f"re-proposal of trial {previous.number} ({previous.state.name.lower()}): answered from the study"
            else:
                why = f"re-proposal of trial {previous.number}, which is evaluating it now"
            finish(record.replace(reused_from=previous.number, fail_reason=why), AlreadyKnown(why))
        if kind == "retry" and record.retry_of is None:
            record = record.replace(retry_of=previous.number)

        limit = self.config.latency_limit_ms

        def over_limit(latency_ms: float) -> None:
            # Optuna's multi-objective TPE cannot tell a pruned trial from another; told how far over the
            # limit it lay (<= 0: within), it ranks such trials last, the least over first: under a limit few
            # architectures meet, its proposals' median latency fell from 0.34-0.37 to 0.27-0.30 ms (limit
            # 0.18 ms, 4 seeds, bench/data/limit_constraint.json)
            if limit is not None:
                trial.set_constraint(LIMIT_CONSTRAINT, latency_ms - limit)

        latency = self.evaluator.cached_latency(candidate)
        if latency is None:
            reason, predicted = self.screen.reject(candidate)
            record = record.replace(latency_predicted_ms=predicted)
            if reason:
                over_limit(predicted)
                finish(record.replace(fail_reason=reason), optuna.TrialPruned(reason))
            try:
                latency = self.evaluator.latency(candidate)
            except (EvaluationFailed, DeviceError) as error:
                finish(record.replace(fail_reason=str(error)), TrialFailed(str(error)))
        record = with_latency(record, latency)
        latency_ms = latency.median_ms
        over_limit(latency_ms)
        if limit is not None and latency_ms > limit:
            reason = f"latency {latency_ms:.3f} ms is over the limit {limit:g} ms"
            finish(record.replace(fail_reason=reason), optuna.TrialPruned(reason))

        peers = early_stop.peers(self.study) if self.config.early_stop == "on" else None
        outcome = self.evaluator.accuracy(candidate, latency_ms=latency_ms, early_stop_peers=peers)
        record = record.replace(
            timings=record.timings.merged(outcome.timings),
            curve=tuple(tuple(p) for p in outcome.curve),
            train_loss_mean=_rounded(outcome.train_loss_mean),
            train_loss_late_mean=_rounded(outcome.train_loss_late_mean),
        )
        if outcome.params_count and record.params_count is None:
            record = record.replace(params_count=outcome.params_count)
        if outcome.status is Status.FAILED:
            finish(record.replace(fail_reason=outcome.reason), TrialFailed(outcome.reason))
        if outcome.status is Status.EARLY_STOPPED:
            finish(record.replace(fail_reason=outcome.reason), optuna.TrialPruned(outcome.reason))
        reward = mnasnet_reward(
            outcome.accuracy,
            latency_ms,
            target_ms=self.config.target_ms,
            alpha=self.config.reward_alpha,
            beta=self.config.reward_beta,
        )
        finish(record.replace(accuracy=outcome.accuracy, reward=reward))
        return (outcome.accuracy, latency_ms) if self.config.mode == "pareto" else reward


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


def with_latency(record: TrialRecord, latency: LatencyAnswer) -> TrialRecord:
    return record.replace(
        latency=latency.result,
        latency_cached=latency.cached,
        timings=record.timings.merged(latency.timings),
        params_count=latency.params_count if latency.params_count is not None else record.params_count,
        multiply_adds=latency.multiply_adds if latency.multiply_adds is not None else record.multiply_adds,
    )


def run_search(
    config: SearchConfig,
    *,
    on_trial: Callable[[object, int, int], None] | None = None,
    on_start: Callable[[optuna.Study, dict], None] | None = None,
    storage: optuna.storages.BaseStorage | None = None,
) -> SearchSummary:
    """Run `config.trials` more trials on the (new or resumed) study; return its front. `storage`,
    when given, holds the study instead of `config.storage_url` (benchmarks of many short
    searches: an in-memory storage spares them SQL's cost per trial)."""
    if not config.is_tabular:
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
    with contextlib.ExitStack() as stack:
        if config.is_tabular:
            evaluator = TableEvaluator.from_config(config)
        else:
            device, fingerprint = config.device_config.open()
            runner = stack.enter_context(
                TrialRunner(trials_per_worker=config.trials_per_worker, log_path=os.path.join(config.run_dir, WORKER_LOG))
            )
            evaluator = RealEvaluator(config, runner, device, fingerprint)
        return _run_search(config, stack, evaluator, storage, on_trial=on_trial, on_start=on_start)


def _warn_about_target(config: SearchConfig, fingerprint: dict, study: optuna.Study) -> bool:
    """Warn when --target-ms is far from what this device runs, judged by its calibration or else
    by the latencies the study measured. False when there is nothing to judge by yet."""
    from nas import calibration as calibrate

    rows = calibrate.load(config.runs_dir, fingerprint["id"], INPUT_SHAPE[0])
    latencies = [r.latency_median_ms for r in rows or () if r.latency_median_ms]
    source = "the reference architectures (nas calibrate)"
    if not latencies:
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        records = [TrialRecord.from_trial(t) for t in trials]
        latencies = [r.latency_ms for r in records if r.latency_ms is not None]
        source = "the architectures measured so far"
    warning = calibrate.target_warning(config.target_ms, latencies, source=source)
    if warning:
        log.warning(warning)
    return bool(latencies)


class _Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: a search fails the running trial with a reason and retries it
    later; a retraining keeps its finished epochs."""


class InterruptGuard:
    """Where Ctrl-C or SIGTERM stops a search. Inside a trial: at once (the trial fails with a reason and
    is retried). In Optuna's bookkeeping around a trial (creating it, recording its result, the
    callbacks): once that is done, when the trial's callbacks end. Interrupted while it records a
    result, Optuna 5.1 leaves the trial RUNNING and raises an unrelated UnboundLocalError. A second
    interrupt stops at once wherever it lands."""

    def __init__(self):
        self.in_trial = False
        self.pending: str | None = None  # the signal that came between trials, not acted on yet

    def _handler(self, signum, frame):
        name = signal.Signals(signum).name
        if self.in_trial or self.pending:
            raise _Interrupted(f"signal {name}")
        self.pending = name

    @contextlib.contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        """SIGINT and SIGTERM handled by this guard for the block (main thread only, as any handler)."""
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def trial(self) -> Iterator[None]:
        self.in_trial = True
        try:
            yield
        finally:
            self.in_trial = False

    def raise_pending(self) -> None:
        if self.pending:
            raise _Interrupted(f"signal {self.pending}")


@contextlib.contextmanager
def terminate_as_interrupt():
    def handler(signum, frame):
        raise _Interrupted(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_search(config, stack, evaluator, storage, *, on_trial, on_start) -> SearchSummary:
    fingerprint = evaluator.fingerprint
    path = None
    if storage is None:  # the study's own storage (a benchmark may hand one in)
        path, storage = sqlite_path(config.storage_url), open_storage(config.storage_url, heartbeat=True)
    if path:
        lock_sqlite(path, stack, config.study_name)
    existing = 0
    with contextlib.suppress(KeyError):  # KeyError: a new study
        existing = len(optuna.load_study(study_name=config.study_name, storage=storage).get_trials(deepcopy=False))
    space = config.make_space()
    sampler = make_sampler(config, existing_trials=existing, space=space, evaluator=evaluator, storage=storage)
    study = optuna.create_study(
        storage=storage,
        sampler=sampler,
        study_name=config.study_name,
        directions=["maximize", "minimize"] if config.mode == "pareto" else ["maximize"],
        load_if_exists=True,
    )
    check_identity(config, fingerprint, study)
    if path:
        retry_interrupted(study)
    elif isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval() is not None:
        # dead workers' trials: failed and retried now, not at the next trial
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9: the documented way (see open_storage)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    if config.seed_references:
        seed_references(study, space)
    if on_start:
        on_start(study, fingerprint)
    target_checked = config.is_tabular or _warn_about_target(config, fingerprint, study)
    csv_path = os.path.join(config.run_dir, TRIALS_CSV)
    done = reused = reused_in_a_row = 0
    start = time.perf_counter()

    def budget_spent(study: optuna.Study) -> tuple[int, int, bool]:
        """(evaluations counted, the budget, whether it is spent): this process's, or the study's
        with --study-trials (running trials count, so that workers together do not overshoot)."""
        if config.study_trials is None:
            return done, config.trials, done >= config.trials
        count = study_evaluations(study.get_trials(deepcopy=False))
        return count, config.study_trials, count >= config.study_trials

    def after_trial(study: optuna.Study, trial) -> None:
        nonlocal done, reused, reused_in_a_row, target_checked
        if TrialRecord.from_trial(trial).reused_from is None:
            done, reused_in_a_row = done + 1, 0
        else:
            reused, reused_in_a_row = reused + 1, reused_in_a_row + 1
        if not target_checked:
            target_checked = _warn_about_target(config, fingerprint, study)
        write_trials_csv(study, csv_path)
        count, budget, spent = budget_spent(study)
        if on_trial:
            on_trial(trial, count, budget)
        if spent or reused_in_a_row >= MAX_REUSED_IN_A_ROW or guard.pending:
            study.stop()

    guard = InterruptGuard()
    objective = Objective(config, study, evaluator, sampler, guard)
    try:
        with guard.installed():
            if not budget_spent(study)[2]:  # with --study-trials, other workers may have spent it
                study.optimize(
                    objective,
                    n_trials=None,  # ended by after_trial: --trials counts new architectures only
                    timeout=config.timeout_s,
                    catch=(TrialFailed,),
                    callbacks=[after_trial],
                    gc_after_trial=False,
                )
            guard.raise_pending()  # an interrupt in Optuna's bookkeeping, acted on now that it is done
    except KeyboardInterrupt:
        if objective.interrupted is not None:  # failed with its reason (Objective); run its architecture again next time
            trial = study._storage.get_trial(objective.interrupted._trial_id)
            if trial.state == optuna.trial.TrialState.RUNNING:
                fail_and_retry(study, trial, STOPPED)
            else:
                study.enqueue_trial(trial.params, user_attrs=TrialRecord(retry_of=trial.number).to_user_attrs())
        write_trials_csv(study, csv_path)
        raise
    write_trials_csv(study, csv_path)
    return SearchSummary(
        pareto_info(study),
        done,
        time.perf_counter() - start,
        csv_path,
        config.storage_url,
        reused_trials=reused,
        converged=reused_in_a_row >= MAX_REUSED_IN_A_ROW,
    )
