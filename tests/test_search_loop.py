"""The search loop's bookkeeping, on NAS-Bench-201's tables (no training, a trial costs milliseconds):
a re-proposed architecture is answered without giving the sampler a second copy of its point, a
failed one is tried once more at most, an architecture being evaluated is reserved, and the running
trial is forgotten however it ended."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from nas.config import SearchConfig
from nas.searching import prior_evaluation
from results.record import TrialRecord
from search_spaces import CellSpec, Nb201Space

TABLE = Path(__file__).resolve().parents[2] / "shared" / "nb201-hw" / "latency_ms.csv.gz"
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
State = optuna.trial.TrialState


def frozen(number: int, state, **record) -> optuna.trial.FrozenTrial:
    values = [0.5, 1.0] if state == State.COMPLETE else None
    trial = optuna.trial.create_trial(state=state, values=values, user_attrs=TrialRecord(**record).to_user_attrs())
    trial.number = number
    return trial


@pytest.mark.parametrize(
    ("earlier", "expected"),
    [
        ([], ("new", None)),
        ([frozen(0, State.COMPLETE, arch_id="a")], ("answer", 0)),
        ([frozen(0, State.PRUNED, arch_id="a", fail_reason="screened: predicted 9 ms")], ("answer", 0)),
        ([frozen(0, State.FAIL, arch_id="a", fail_reason="conversion failed")], ("retry", 0)),
        (
            [frozen(n, State.FAIL, arch_id="a", fail_reason="timeout") for n in (0, 3)],
            ("answer", 3),
        ),
        ([frozen(0, State.FAIL, arch_id="a", fail_reason="interrupted: the search stopped during this trial")], ("new", None)),
        ([frozen(0, State.FAIL, arch_id="a")], ("new", None)),  # a stale heartbeat: Optuna gives no reason
        ([frozen(2, State.RUNNING, arch_id="a")], ("running", 2)),
        ([frozen(9, State.RUNNING, arch_id="a")], ("running", 9)),  # whichever number: it may have checked first
        ([frozen(1, State.FAIL, arch_id="a", reused_from=0, fail_reason="re-proposal")], ("new", None)),  # answers don't count
        ([frozen(0, State.COMPLETE, arch_id="b")], ("new", None)),
    ],
)
def test_prior_evaluation_answers_reserves_and_retries_once(earlier, expected):
    kind, trial = prior_evaluation(earlier, "a", number=5)
    assert (kind, None if trial is None else trial.number) == expected


def _config(tmp_path, **overrides) -> SearchConfig:
    settings = {"space": "nb201", "device": f"table:{TABLE}:pixel3", "strategy": "random", "runs_dir": str(tmp_path / "runs")}
    return SearchConfig(**(settings | overrides))


def _enqueue(config: SearchConfig, times: int) -> None:
    os.makedirs(config.run_dir, exist_ok=True)
    study = optuna.create_study(
        study_name=config.study_name, storage=config.storage_url, directions=["maximize", "minimize"], load_if_exists=True
    )
    params = Nb201Space().params_of(CellSpec.from_string(ARCH0))
    for _ in range(times):
        study.enqueue_trial(params)


def test_a_re_proposal_is_answered_as_a_failed_trial_the_sampler_does_not_learn_from(tmp_path):
    from nas.searching import run_search

    config = _config(tmp_path, trials=3)
    _enqueue(config, 3)
    summary = run_search(config)
    study = optuna.load_study(study_name=config.study_name, storage=config.storage_url)
    states = [t.state for t in study.trials]
    records = [TrialRecord.from_trial(t) for t in study.trials]
    assert summary.new_trials == 3 and summary.reused_trials == 2
    assert states[:3] == [State.COMPLETE, State.FAIL, State.FAIL]
    assert [r.reused_from for r in records[1:3]] == [0, 0]
    assert records[1].accuracy == records[0].accuracy and "answered from the study" in records[1].fail_reason
    complete = [TrialRecord.from_trial(t).arch_id for t in study.get_trials(states=(State.COMPLETE,))]
    assert len(complete) == len(set(complete)) == 3  # one point per architecture for the sampler


def test_a_resumed_search_that_begins_with_an_answer_prints_its_progress(tmp_path):
    """The first trial of the second run is a re-proposal: the progress line has no ETA yet (it
    divided by zero)."""
    config = _config(tmp_path, trials=1)
    command = [
        sys.executable, "-m", "nas.cli", "search", "--space", "nb201", "--device", f"table:{TABLE}:pixel3",
        "--strategy", "random", "--trials", "1", "--runs-dir", config.runs_dir,
    ]  # fmt: skip
    _enqueue(config, 1)
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    _enqueue(config, 1)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    answer = next(line for line in second.stdout.splitlines() if "(reused trial 0: not counted)" in line)
    assert "[  0/1]" in answer and "eta -" in answer


def test_a_failed_architecture_is_tried_once_more_then_answered(tmp_path, monkeypatch):
    from nas import evaluators
    from nas.searching import run_search

    def broken(self, candidate):
        raise evaluators.EvaluationFailed("the table has a hole here")

    monkeypatch.setattr(evaluators.TableEvaluator, "latency", broken)
    config = _config(tmp_path, trials=3)  # the answer is not counted: trial 3, a new cell, is the third
    _enqueue(config, 3)
    run_search(config)
    study = optuna.load_study(study_name=config.study_name, storage=config.storage_url)
    records = [TrialRecord.from_trial(t) for t in study.trials[:3]]
    assert [t.state for t in study.trials[:3]] == [State.FAIL] * 3
    assert records[0].fail_reason == records[1].fail_reason == "the table has a hole here"
    assert records[1].retry_of == 0 and records[1].reused_from is None  # tried once more
    assert records[2].reused_from == 1 and "answered from the study" in records[2].fail_reason


def test_only_an_interrupted_trial_is_marked_for_retry(tmp_path):
    """A pruned or failed trial is no interrupted one: Ctrl-C before the next trial must not enqueue
    it again as a retry (test_robustness checks that an interrupted trial is)."""
    from nas.evaluators import TableEvaluator
    from nas.searching import Objective

    # every cell is over the 0.002 ms limit: the table's fastest, output cut off by `none` edges, takes 0.0033 ms
    # (at 0.01 ms, 128 of the 15,625 cells were under the limit: a trial now and then completed)
    config = _config(tmp_path, constraint="hard", target_ms=0.001)
    study = optuna.create_study(directions=["maximize", "minimize"])
    objective = Objective(config, study, TableEvaluator.from_config(config), study.sampler)
    study.optimize(objective, n_trials=2)
    assert [t.state for t in study.trials] == [State.PRUNED, State.PRUNED]
    assert objective.interrupted is None


def test_every_trial_tells_the_sampler_how_far_over_the_limit_its_latency_lies(tmp_path):
    """With a hard limit each trial with a latency (measured, or predicted when screened) carries Optuna's
    constraint latency - limit: TPE and NSGA-II rank the trials over it last, the least over first; without
    it, TPE's multi-objective split put arbitrary pruned trials among its good ones."""
    from nas.searching import LIMIT_CONSTRAINT, run_search

    config = _config(tmp_path, trials=20, strategy="tpe", max_latency_ms=3.3)  # about a tenth of the cells are under it
    run_search(config)
    trials = optuna.load_study(study_name=config.study_name, storage=config.storage_url).trials
    over = []
    for trial in trials:
        record = TrialRecord.from_trial(trial)
        latency = record.latency_ms if record.latency_ms is not None else record.latency_predicted_ms
        if record.reused_from is not None:
            assert trial.state == State.FAIL and not trial.constraints  # answers teach the sampler nothing
            continue
        assert trial.constraints == {LIMIT_CONSTRAINT: pytest.approx(latency - 3.3)}, trial.number
        assert (trial.state == State.PRUNED) == (latency > 3.3), trial.number
        over.append(latency > 3.3)
    assert any(over) and not all(over)


def test_a_search_whose_limit_prunes_most_architectures_says_so(tmp_path):
    from nas import progress
    from nas.searching import run_search

    tight = _config(tmp_path, trials=12, max_latency_ms=3.3)  # about a tenth of the cells are under it
    summary = run_search(tight)
    pruned = sum(r.state == "PRUNED" for r in summary.info.rows)
    text = progress.search_summary(summary, tight, chance=0.1)
    assert f"warning: {pruned} of {len(summary.info.rows)} architectures were over the latency limit 3.3 ms" in text
    loose = _config(tmp_path / "loose", trials=12, max_latency_ms=1000.0)
    assert "over the latency limit" not in progress.search_summary(run_search(loose), loose, chance=0.1)


@pytest.mark.parametrize(
    ("step", "states", "last_reason"),
    [
        # Optuna 5.1 interrupted there left the trial RUNNING and raised UnboundLocalError, a traceback
        ("recording the second trial", [State.COMPLETE, State.COMPLETE], None),
        ("creating the second trial", [State.COMPLETE, State.FAIL], "before this trial began"),
    ],
)
def test_an_interrupt_in_optunas_bookkeeping_stops_the_search_cleanly(tmp_path, monkeypatch, step, states, last_reason):
    """Ctrl-C while Optuna creates or records a trial waits for that step, then stops the search as a
    KeyboardInterrupt: every trial is finished or failed with a reason, and none is retried for nothing."""
    import signal

    from optuna.study import _optimize

    from nas.searching import run_search

    name, target = ("_tell_with_warning", _optimize) if step.startswith("recording") else ("ask", optuna.Study)
    original, calls = getattr(target, name), []

    def interrupted(*args, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler at once, in this thread
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, interrupted)
    handler = signal.getsignal(signal.SIGINT)
    config = _config(tmp_path, trials=5)
    with pytest.raises(KeyboardInterrupt):
        run_search(config)
    trials = optuna.load_study(study_name=config.study_name, storage=config.storage_url).trials
    assert [t.state for t in trials] == states
    last = TrialRecord.from_trial(trials[-1]).fail_reason
    assert (last_reason is None and not last) or last_reason in last, last
    assert signal.getsignal(signal.SIGINT) is handler  # the handler of before the search, again


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "budget", "evaluations"),
    [("latency-aware", ["--trials", "25"], 50), ("tpe", ["--study-trials", "37"], 37)],
    ids=["latency-aware, 25 each", "tpe, 37 together"],
)
def test_two_workers_on_one_postgresql_study_never_evaluate_an_architecture_twice(
    tmp_path, postgres_url, strategy, budget, evaluations
):
    command = [
        sys.executable, "-m", "nas.cli", "search", "--space", "nb201", "--device", f"table:{TABLE}:pixel3",
        "--strategy", strategy, *budget, "--storage", postgres_url, "--study-name", "shared",
        "--runs-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    workers = [subprocess.Popen(command, cwd=tmp_path, **pipes) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    evaluated = [TrialRecord.from_trial(t) for t in study.trials if TrialRecord.from_trial(t).reused_from is None]
    assert len(evaluated) == evaluations and all(t.state != State.RUNNING for t in study.trials)
    assert len({r.arch_id for r in evaluated}) == evaluations  # no architecture evaluated twice, by either worker


def test_the_study_budget_counts_every_workers_evaluations_and_running_trials():
    from nas.searching import study_evaluations

    trials = [
        frozen(0, State.COMPLETE, arch_id="a"),
        frozen(1, State.PRUNED, arch_id="b", fail_reason="latency over the limit"),
        frozen(2, State.FAIL, arch_id="c", fail_reason="conversion failed"),
        frozen(3, State.FAIL, arch_id="a", reused_from=0, fail_reason="re-proposal"),  # an answer: not counted
        frozen(4, State.FAIL, arch_id="d"),  # a stale heartbeat: retried, not counted
        frozen(5, State.FAIL, arch_id="e", fail_reason="interrupted: stopped"),
        frozen(6, State.RUNNING, arch_id="f"),  # another worker's: counted, so workers together do not overshoot
        frozen(7, State.WAITING),  # a retry not started yet
    ]
    assert study_evaluations(trials) == 4


def test_a_worker_whose_study_budget_is_spent_evaluates_nothing(tmp_path):
    from nas.searching import run_search

    config = _config(tmp_path, trials=6)
    run_search(config)
    again = run_search(dataclasses.replace(config, study_trials=5))
    assert again.new_trials == 0
    study = optuna.load_study(study_name=config.study_name, storage=config.storage_url)
    assert len(study.trials) == 6


_KILLED_IN_ASK = """
import sys, time, optuna
from nas.strategies import HeartbeatFirst

class Slow(optuna.samplers.RandomSampler):
    def before_trial(self, study, trial):
        print("sampling", flush=True)
        time.sleep(600)  # the latency-aware strategy measures candidates here

storage = optuna.storages.RDBStorage(sys.argv[1], heartbeat_interval=1, grace_period=2)
study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True)
study.sampler = HeartbeatFirst(Slow(), storage)
study.ask()
"""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_worker_killed_while_sampling_leaves_no_trial_running_forever(tmp_path, postgres_url):
    """Optuna's heartbeat starts after `study.ask()`; the strategy's first heartbeat comes before it
    samples, so a trial whose worker died there goes stale and is failed like any other."""
    import time

    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", _KILLED_IN_ASK, postgres_url], cwd=root, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "sampling"
    child.kill()
    child.wait()
    storage = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state for t in study.trials] == [State.RUNNING]
    time.sleep(3)
    optuna.storages.fail_stale_trials(study)  # what the next worker's optimize() does first
    assert [t.state for t in study.trials] == [State.FAIL]
