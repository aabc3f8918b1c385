"""The seams between modules, where a result could silently become wrong: study identity and
latency fingerprints, data provenance, atomic files, bounded input, one typed trial record, the
latency model tied to the builder, worker timeouts, a clean terminal and the Python API."""

import json
import os
import pickle
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import optuna
import pytest

from nas.config import ConfigError, SearchConfig
from nas.storage import check_identity
from results.pareto import pareto_info, write_trials_csv
from results.record import SETTINGS_ATTR, TrialRecord, store

REPO = Path(__file__).resolve().parents[1]


def _fingerprint(**changes):
    from latency.fingerprint import fingerprint_id

    info = {"device": "host", "cpu": "cpu A", "runtime": "ai-edge-litert 2.3.0", "converter": "tensorflow 2.21.0"}
    info |= {"threads": 1, "delegate": "xnnpack", "precision": "fp32", "pinned": False} | changes
    info["id"] = fingerprint_id(info)
    return info


def test_a_study_refuses_a_process_that_measures_on_another_fingerprint():
    study = optuna.create_study(directions=["maximize", "minimize"])
    config = SearchConfig()
    check_identity(config, _fingerprint(), study)
    check_identity(config, _fingerprint(), study)  # the same machine resumes
    for change in ({"cpu": "cpu B"}, {"runtime": "ai-edge-litert 2.4.0"}, {"threads": 2}, {"precision": "int8"}):
        with pytest.raises(ConfigError) as error:
            check_identity(config, _fingerprint(**change), study)
        message = str(error.value)
        stored, current = _fingerprint()["id"], _fingerprint(**change)["id"]
        assert stored in message and current in message and "latencies would mix" in message
        name = next(iter(change))
        assert f"{name}: {_fingerprint()[name]!r} -> {change[name]!r}" in message


def _study_with(tmp_path, *, dataset="cifar10", space="mnasnet", trials=()):
    """A study on disk as a search leaves it: settings and finished trials (no training)."""
    runs = tmp_path / "runs"
    (runs / "s").mkdir(parents=True)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{runs}/s/study.db", directions=["maximize", "minimize"])
    study.set_user_attr(SETTINGS_ATTR, {"dataset": dataset, "space": space, "target_ms": 1.0, "alpha": -0.07, "beta": -0.07})
    distribution = optuna.distributions.CategoricalDistribution(["a"])
    for record in trials:
        trial = optuna.trial.create_trial(
            params={"x": "a"},
            distributions={"x": distribution},
            values=[record.accuracy, record.latency_median_ms],
            user_attrs=record.to_user_attrs(),
        )
        study.add_trial(trial)
    return runs, study


def _nas(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_retraining_takes_the_studys_dataset_and_refuses_another(tmp_path):
    from search_spaces import reference

    spec = reference("mnasnet-small")
    record = TrialRecord(arch=spec.to_string(), arch_id=spec.arch_id, accuracy=0.3, latency_median_ms=0.2)
    runs, _ = _study_with(tmp_path, trials=[record])
    refused = _nas("retrain", "--study", "s", "--runs-dir", str(runs), "--front", "--dataset", "cifar100", cwd=tmp_path)
    assert refused.returncode == 2 and "study 's' searched on cifar10, not dataset='cifar100'" in refused.stderr
    runs_nb, _ = _study_with(tmp_path / "nb", space="nb201", trials=[record])
    table = _nas("retrain", "--study", "s", "--runs-dir", str(runs_nb), "--front", cwd=tmp_path)
    assert table.returncode == 2 and "NAS-Bench-201 cells from tables: there is nothing to retrain" in table.stderr


def test_the_studys_models_come_before_the_references(tmp_path):
    """A comparison trains the found models first: they are what a user waits for, and a run cut
    short still has them."""
    from nas.choice import choose
    from search_spaces import reference
    from trainers.full import Recipe

    spec = reference("mnasnet-small")
    record = TrialRecord(arch=spec.to_string(), arch_id=spec.arch_id, accuracy=0.3, latency_median_ms=0.2)
    runs, study = _study_with(tmp_path, trials=[record])
    chosen = choose(
        study=study, trials=(0,), archs=("mobilenetv2-0.5", "mnasnet-small"), runs_dir=str(runs),
        dataset="cifar10", recipe=Recipe(),
    )  # fmt: skip
    assert [c.name for c in chosen] == ["trial 0", "mobilenetv2-0.5"]  # mnasnet-small is trial 0's architecture


def test_the_front_lists_an_architecture_once_and_trials_csv_follows_the_current_reward(tmp_path):
    same = TrialRecord(arch="conv_r1_k3_s2_c8-head_c16", arch_id="aaa", accuracy=0.5, latency_median_ms=0.5, reward=0.1)
    _, study = _study_with(tmp_path, trials=[same, same.replace(reused_from=0), same.replace(arch_id="bbb", arch="other")])
    info = pareto_info(study)
    assert [r.arch_id for r in info.front] == ["aaa", "bbb"]  # two architectures tie; the reuse of aaa is not listed
    assert info.counts == {"COMPLETE": 2} and info.reused == 1  # a copy (as older studies stored them) is no trial
    study.set_user_attr(SETTINGS_ATTR, {**study.user_attrs[SETTINGS_ATTR], "target_ms": 0.25})
    write_trials_csv(study, str(tmp_path / "t.csv"))
    rewards = [float(line.split(",")[9]) for line in (tmp_path / "t.csv").read_text().splitlines()[1:]]
    assert rewards == pytest.approx([0.5 * (0.5 / 0.25) ** -0.07] * 3)  # T = 0.25 now, not the stored 0.1


def test_the_trial_record_round_trips_and_is_the_only_reader_of_attributes():
    record = TrialRecord(arch="x", arch_id="y", accuracy=0.4, curve=((0.25, 0.1), (0.5, 0.2)), retry_of=3)
    assert TrialRecord.from_user_attrs(json.loads(json.dumps(record.to_user_attrs()))) == record
    assert TrialRecord.from_user_attrs({"accuracy": 0.1, "from_a_newer_version": 1}).accuracy == 0.1

    class Trial:
        def __init__(self):
            self.writes = {}

        def set_user_attr(self, key, value):
            self.writes[key] = value

    trial = Trial()
    store(trial, record.replace(accuracy=0.5), previous=record)
    assert trial.writes == {"accuracy": 0.5}  # only what changed reaches the storage
    # no module reads or writes a trial attribute by a name of its own
    pattern = re.compile(r"user_attrs\s*\[|user_attrs\.get\(|set_user_attr\(\s*[\"']")
    offenders = [
        str(path.relative_to(REPO))
        for package in ("nas", "results", "latency", "trainers", "search_spaces")
        for path in (REPO / package).glob("*.py")
        if path.name != "record.py" and pattern.search(path.read_text())
    ]
    assert offenders == []


def test_a_checkpoint_is_complete_or_absent(tmp_path, monkeypatch):
    """Weights, optimizer state and run state are one file: a run stopped while writing the next
    checkpoint finds the previous one whole, and no half file beside it."""
    import search_spaces.files
    from trainers import full

    path = str(tmp_path / full.CHECKPOINT)
    full.save_checkpoint(path, state={"epochs_done": 1}, arrays={"w_0": np.ones(3)})

    def dies(*args):  # the written file was about to replace the old one
        raise KeyboardInterrupt

    monkeypatch.setattr(search_spaces.files.os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        full.save_checkpoint(path, state={"epochs_done": 2}, arrays={"w_0": np.zeros(3)})
    monkeypatch.undo()
    state, arrays = full.load_checkpoint(path)
    assert state == {"epochs_done": 1} and np.array_equal(arrays["w_0"], np.ones(3))
    assert sorted(os.listdir(tmp_path)) == [full.CHECKPOINT]


def test_the_cifar_reader_refuses_a_declared_size_before_allocating_it(tmp_path):
    """A pickle of 89 bytes declaring a 2-billion-element array: refused with a message, and
    nothing close to its size is ever allocated."""
    from trainers.cifar import DataError, _unpickle

    class Bomb:
        def __reduce__(self):
            return (np._core.multiarray._reconstruct, (np.ndarray, (2_000_000_000,), b"b"))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(Bomb(), protocol=4))
    assert path.stat().st_size < 100
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="larger than any official CIFAR array"):
            _unpickle(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


def test_a_hung_worker_job_is_stopped_after_its_timeout():
    from nas.worker import Status, TrialJob, TrialRunner

    job = TrialJob(
        arch="conv_r1_k3_s2_c8-head_c16",
        dataset="cifar10",
        data_dir="/nonexistent",
        train_images=1,
        val_images=1,
        epochs=1,
        batch_size=1,
        seed=0,
    )
    with TrialRunner() as runner:
        outcome = runner.run(job, timeout_s=0.5)  # the worker cannot even import TensorFlow in that time
    assert outcome.status is Status.FAILED and outcome.reason.startswith("timed out after 0.5 s")


def test_one_epoch_is_a_valid_recipe():
    from trainers.full import Recipe

    recipe = Recipe(epochs=1)
    assert recipe.warmup == pytest.approx(0.1)
    assert Recipe(epochs=30).warmup == 2.0


@pytest.mark.slow
def test_no_native_start_up_lines_reach_the_terminal(cifar_dir, tmp_path):
    result = _nas(
        "retrain", "--arch", "mnasnet-small", "--epochs", "1", "--train-images", "256", "--val-images", "100",
        "--data-dir", str(cifar_dir), "--runs-dir", "runs", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    noises = ("oneDNN", "cuda", "I0000", "W0000", "E0000", "absl::InitializeLog", "XNNPACK", "fully_quantize")
    for noise in noises:
        assert noise not in result.stdout and noise not in result.stderr, noise
    log = (tmp_path / "runs" / "nas.log").read_text()
    assert any(noise in log for noise in noises), log[-2000:]  # kept in the run's log instead (which lines varies by machine)


def _tflite_macs_of(job: tuple[str, int]) -> int:
    """In a worker process: build, convert (unchecked: only the graph's shapes matter), count."""
    import tempfile

    from latency.convert import _convert, converter_options
    from latency.macs import tflite_macs
    from search_spaces import ArchSpec
    from search_spaces.keras_blocks import build

    arch, classes = job
    model = build(ArchSpec.from_string(arch), input_shape=(32, 32, 3), num_classes=classes)
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(_convert(model, (32, 32, 3), converter_options("fp32")))
        f.flush()
        return tflite_macs(f.name)


@pytest.mark.slow
def test_the_latency_models_walk_counts_what_the_tflite_graph_multiplies():
    """Every reference and 50 sampled architectures of each space (every tenth with 100 classes):
    the latency model's own walk over the network counts the same multiply-adds as the converted
    graph. Two worker processes convert side by side (the converter is single-threaded)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from latency.model import multiply_adds
    from search_spaces import REFERENCES, ArchSpec, get_space, reference

    jobs = [(reference(name).to_string(), 10) for name in REFERENCES]
    for name in ("mnasnet", "mnasnet-mobilevit"):
        space = get_space(name, stem_stride=1)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
        jobs += [(space.sample(study.ask()).to_string(), 100 if k % 10 == 0 else 10) for k in range(50)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        counted = list(pool.map(_tflite_macs_of, jobs))
    for (arch, classes), macs in zip(jobs, counted, strict=True):
        assert multiply_adds(ArchSpec.from_string(arch), 32, num_classes=classes) == macs, arch


def test_the_python_api_searches_reads_the_front_and_retrains(cifar_dir, tmp_path):
    """The README's example, on a tiny budget."""
    import nas

    runs = str(tmp_path / "runs")
    config = nas.SearchConfig(trials=2, train_images=256, val_images=200, data_dir=str(cifar_dir), runs_dir=runs)
    summary = nas.search(config)
    front = nas.front(config.study_name, runs_dir=runs)
    assert summary.new_trials == 2 and len(front) >= 1 and {"accuracy", "latency_ms", "arch"} <= set(front.columns)
    best = int(front.sort_values("reward").iloc[-1]["number"])
    selection = nas.Selection(study=config.study_name, runs_dir=runs, trials=(best,), data_dir=str(cifar_dir))
    ((chosen, result),) = nas.retrain(selection, nas.Recipe(epochs=1, train_images=512, val_images=200))
    assert chosen.name == f"trial {best}" and result.epochs_run == 1 and os.path.exists(result.model_path)
    with pytest.raises(nas.ConfigError, match="searched on cifar10"):
        nas.retrain(nas.Selection(study=config.study_name, runs_dir=runs, trials=(best,), dataset="cifar100"))
