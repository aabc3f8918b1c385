"""The latency model and the rank statistics: arithmetic checked on constructed data, then the
model fitted and judged on latencies really measured on the host (tests/data/), and `nas
latency-fit` / `nas calibrate` run end to end with the real LiteRT interpreter."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import optuna
import pytest

from latency.cache import LatencyCache, cache_key
from latency.model import FEATURES, LatencyModel, _nnls_relative, cross_validate, fit_with_error, layers, network_features
from nas import calibration as calibrate
from results.ranking import agreement, kendall_tau, spearman_rho
from search_spaces import REFERENCES, ArchSpec, get_space, reference

MEASURED = os.path.join(os.path.dirname(__file__), "data", "host_latencies.json")


def test_rank_statistics_on_known_cases():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman_rho([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped pair out of six: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # d = (0, 1, -1, 0): 1 - 6 * 2 / (4 * 15)
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # tau-b with a tie in b: S = 5 concordant - 0 discordant; untied pairs 6 in a, 5 in b
    assert kendall_tau([1, 2, 3, 4], [1, 2, 2, 4]) == pytest.approx(5 / np.sqrt(6 * 5))


def test_agreement_interval_contains_the_estimate():
    rng = np.random.default_rng(1)
    a = rng.normal(size=30)
    b = a + rng.normal(scale=0.5, size=30)
    result = agreement(a, b, resamples=500)
    assert result.kendall_interval[0] <= result.kendall_tau <= result.kendall_interval[1]
    assert result.spearman_interval[0] <= result.spearman_rho <= result.spearman_interval[1]
    assert 0.3 < result.kendall_tau < 0.9
    with pytest.raises(ValueError, match="at least 3"):
        agreement([1, 2], [1, 2])


def test_layers_add_up_and_follow_the_strides():
    spec = reference("mnasnet-a1")
    per_layer = layers(spec, 32, num_classes=10)
    assert np.allclose(sum(layer.features for layer in per_layer), network_features(spec, 32, num_classes=10))
    assert len(per_layer) == 2 + sum(block.repeats for block in spec.blocks[:-1])
    assert per_layer[1].key.startswith("conv_r1_k3_s2_c32 in3 @32")
    assert per_layer[-1].key == "head 320->1280 @4"
    # twice the resolution, about four times the multiply-adds
    pointwise = FEATURES.index("pointwise_mmacs")
    ratio = network_features(spec, 64, num_classes=10)[pointwise] / network_features(spec, 32, num_classes=10)[pointwise]
    assert ratio == pytest.approx(4, rel=0.05)


def test_nnls_recovers_non_negative_coefficients():
    """Plumbing: data made from a known non-negative model is fitted back exactly."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 2.0, size=(40, 3))
    truth = np.array([0.3, 0.0, 1.5, 0.2])  # last: intercept
    y = x @ truth[:-1] + truth[-1]
    assert np.allclose(_nnls_relative(x, y), truth, atol=1e-9)


def measured_host_data():
    with open(MEASURED) as f:
        document = json.load(f)
    return [ArchSpec.from_string(a) for a in document["arch"]], np.array(document["latency_median_ms"]), document


def test_model_on_real_host_measurements():
    """Held-out (5-fold) error of the model on architectures measured on these machines."""
    specs, latencies, document = measured_host_data()
    held_out = cross_validate(specs, latencies, input_hw=32, num_classes=10, folds=5)
    within = np.mean(np.abs(held_out / latencies - 1) <= 0.10)
    tau = kendall_tau(latencies, held_out)
    assert within >= 0.6, f"only {within:.0%} within 10 %"
    assert tau >= 0.6
    model, _ = fit_with_error(specs, latencies, input_hw=32, fingerprint_id=document["fingerprint_id"], num_classes=10)
    assert 0 < model.min_ratio <= 1.0
    assert all(c >= 0 for c in model.coefficients) and model.correction_ms >= 0
    spec = specs[0]
    assert sum(cost for _, cost in model.table(spec)) + model.correction_ms == pytest.approx(model.predict(spec))
    assert model.lower_bound(spec) < model.predict(spec)
    assert LatencyModel.from_json(model.to_json()) == model


def test_cache_feeds_the_model_only_its_own_device_and_settings(tmp_path):
    from latency.measure import LatencyProtocol

    cache = LatencyCache(str(tmp_path / "c.json"))
    space = get_space("mnasnet")
    a = space.sample(__import__("optuna").trial.FixedTrial(space.default_params()))
    dev_a, dev_b = {"id": "devA"}, {"id": "devB"}

    def key(arch_id, fingerprint, *, num_classes=10, protocol=None, shape=(32, 32, 3)):
        protocol = protocol or LatencyProtocol()
        return cache_key(arch_id, shape, num_classes=num_classes, fingerprint=fingerprint, protocol=protocol)

    cache.put(key(a.arch_id, dev_a), {"latency_median_ms": 0.5}, arch=a.to_string())
    cache.put(key(a.arch_id, dev_b), {"latency_median_ms": 9.0}, arch=a.to_string())
    cache.put(key("old", dev_a), {"latency_median_ms": 1.0})  # no arch: written before archs were stored
    assert cache.measured(key("", dev_a)) == [(a.to_string(), 0.5)]
    assert cache.get(key(a.arch_id, dev_a)) == {"latency_median_ms": 0.5}
    # every setting a latency depends on is part of the key: none of these finds the entry
    for other in (
        key(a.arch_id, dev_a, num_classes=100),
        key(a.arch_id, dev_a, shape=(64, 64, 3)),
        key(a.arch_id, dev_a, protocol=LatencyProtocol(runs_per_round=20)),
        key(a.arch_id, dev_a, protocol=LatencyProtocol(threads=2)),
    ):
        assert cache.get(other) is None


def test_the_device_fingerprint_names_converter_runtime_and_settings():
    from latency.devices import HostDevice

    info = HostDevice().fingerprint()
    assert info["converter"].startswith("tensorflow ") and info["runtime"].startswith("ai-edge-litert ")
    assert (info["threads"], info["precision"], info["delegate"]) == (1, "fp32", "xnnpack")


def test_target_warning():
    assert calibrate.target_warning(75, [0.3, 1.2], source="x") is not None
    assert "far outside the 0.3-1.2 ms" in calibrate.target_warning(75, [0.3, 1.2], source="x")
    assert calibrate.target_warning(1.0, [0.3, 1.2], source="x") is None
    assert calibrate.target_warning(0.001, [0.3, 1.2], source="x") is not None
    assert calibrate.target_warning(75, [], source="x") is None


def test_a_search_judges_its_target_by_the_devices_calibration(tmp_path, caplog):
    """With a calibration of this device stored, the search warns from the references' latencies (and
    from the study's own only without one)."""
    from nas.config import SearchConfig
    from nas.searching import _warn_about_target

    fingerprint = {"id": "fp-test"}
    rows = [calibrate.CalibrationRow("mnasnet-small", "cifar", latency_median_ms=0.3), calibrate.CalibrationRow("x", "cifar")]
    calibrate.save(str(tmp_path), fingerprint, 32, rows)
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert _warn_about_target(SearchConfig(runs_dir=str(tmp_path), target_ms=75), fingerprint, study)
    assert "reference architectures (nas calibrate)" in caplog.text and "far outside" in caplog.text


def run_nas(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_calibrate_on_the_host(tmp_path):
    result = run_nas(
        # a target far outside however loaded the machine is (a busy one timed mobilenetv2-1.0 at 9.6 ms)
        "calibrate",
        "--references",
        "mobilenetv2-0.5,mobilenetv2-1.0",
        "--target-ms",
        "75000",
        "--runs-dir",
        "runs",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rows = calibrate.load(str(tmp_path / "runs"), _host_id(), 32)
    assert [r.name for r in rows] == ["mobilenetv2-0.5", "mobilenetv2-1.0"]
    small, large = rows
    assert 0 < small.latency_median_ms < large.latency_median_ms
    assert small.params_count < large.params_count and small.multiply_adds < large.multiply_adds
    assert f"--target-ms {large.latency_median_ms:.3g} puts mobilenetv2-1.0 on the target" in out
    assert "--target-ms 75000 is far outside" in out
    assert "multiply-adds" in out and "saved:" in out


@pytest.mark.slow
def test_calibrate_at_224_measures_what_fits_and_says_what_does_not(tmp_path):
    result = run_nas(
        "calibrate", "--input-size", "224", "--references", "mnasnet-small,mobilevit-xxs", "--runs-dir", "runs", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    small, vit = calibrate.load(str(tmp_path / "runs"), _host_id(), 224)
    assert small.latency_median_ms > 0 and small.layout == "imagenet" and not small.error
    assert vit.latency_median_ms is None and "does not fit 224x224" in vit.error and "256x256" in vit.error
    assert "mobilevit-xxs" in result.stdout and "does not fit 224x224" in result.stdout


def _host_key(arch_id: str) -> str:
    from latency.devices import HostDevice
    from nas.config import SearchConfig
    from nas.evaluators import latency_cache_key

    return latency_cache_key(SearchConfig(), HostDevice().fingerprint(), arch_id)


def _host_id() -> str:
    from latency.devices import HostDevice

    return HostDevice().fingerprint()["id"]


@pytest.mark.slow
def test_latency_fit_measures_fits_and_reports(tmp_path):
    """Real measurements from tests/data seed the cache; two new random samples are measured
    on this host; the model is fitted on all and its held-out error printed."""
    specs, latencies, _ = measured_host_data()
    cache = LatencyCache(str(tmp_path / "runs" / "latency_cache.json"))
    for spec, ms in zip(specs, latencies, strict=True):
        cache.put(_host_key(spec.arch_id), {"latency_median_ms": float(ms)}, arch=spec.to_string())
    result = run_nas("latency-fit", "--samples", "2", "--report", "--runs-dir", "runs", "--seed", "7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(cache.measured(_host_key(""))) == len(specs) + 2
    assert f"latency model on {len(specs) + 2} measured architectures" in result.stdout
    assert "within +-10 %" in result.stdout and "Kendall tau" in result.stdout
    saved = tmp_path / "runs" / f"latency_model-{_host_id()}.json"
    assert LatencyModel.from_json(saved.read_text()).samples == len(specs) + 2


def test_references_have_an_imagenet_layout():
    for name in REFERENCES:
        cifar, imagenet = reference(name), reference(name, layout="imagenet")
        assert sum(b.stride == 2 for b in imagenet.blocks) == sum(b.stride == 2 for b in cifar.blocks) + 2


class _Evaluator:
    """The search's evaluator as the screen sees it: a latency model fitted on real measurements."""

    def __init__(self, model):
        self.model = model

    def latency_model(self):
        return self.model


def test_the_search_screens_only_what_is_surely_over_a_hard_limit():
    """With the latency model fitted on the real host measurements and a hard limit between the
    fastest and the slowest of them: the slowest measured architecture is screened out, the
    fastest is not, and nothing is screened without a hard limit."""
    from nas.config import SearchConfig
    from nas.searching import LatencyScreen

    specs, latencies, document = measured_host_data()
    model, _ = fit_with_error(specs, latencies, input_hw=32, fingerprint_id=document["fingerprint_id"], num_classes=10)
    slowest, fastest = specs[int(np.argmax(latencies))], specs[int(np.argmin(latencies))]
    limit = float(np.min(latencies)) * 1.5
    screen = LatencyScreen(SearchConfig(max_latency_ms=limit), _Evaluator(model))
    reason, predicted = screen.reject(slowest)
    assert reason and reason.startswith("screened: predicted") and "not converted, measured or trained" in reason
    assert predicted > limit
    assert screen.reject(fastest)[0] is None
    assert LatencyScreen(SearchConfig(), _Evaluator(model)).reject(slowest) == (None, None)
    assert LatencyScreen(SearchConfig(max_latency_ms=limit, latency_screen=False), _Evaluator(model)).reject(slowest) == (
        None,
        None,
    )


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


def _choices_of(arch: str) -> set[tuple]:
    """What an architecture chooses: the op at each position, and each block's choices (kernel,
    stride, expansion, squeeze-excite, skip, attention), alone and in pairs with the block's op, since
    a block's multiply-adds come from how its choices combine (a pool skip on a strided block, SE after
    an expansion). Layer counts and widths are left out: every architecture takes some value of them."""
    import itertools
    import re

    made = set()
    for position, (op, *parts) in enumerate(block.split("_") for block in arch.split("-")):
        kept = [part for part in parts if not re.fullmatch(r"[rc]\d+", part)]
        made |= {(position, op)} | {(op, part) for part in kept} | {(op, *pair) for pair in itertools.combinations(kept, 2)}
    return made


def covering(archs: list[str]) -> list[str]:
    """Greedily, a few of `archs` that together make every choice any of them makes."""
    chosen, covered = [], set()
    wanted = set().union(*map(_choices_of, archs))
    while covered != wanted:
        best = max(archs, key=lambda arch: len(_choices_of(arch) - covered))
        chosen.append(best)
        covered |= _choices_of(best)
    return chosen


@pytest.mark.slow
def test_the_latency_models_walk_counts_what_the_tflite_graph_multiplies():
    """A few architectures that together make every choice, and every pair of choices within a block,
    of every reference and of 300 random draws of each space (the first two also with 100 classes):
    the latency model's own walk over the network counts the same multiply-adds as the converted graph.
    Blocks keep at most two layers (the second is where a block's repeats differ from its first; more
    only cost conversion time). Two worker processes convert side by side (the converter is
    single-threaded)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from latency.model import multiply_adds

    drawn = [reference(name).to_string() for name in REFERENCES]
    for name in ("mnasnet", "mnasnet-mobilevit"):
        space = get_space(name, stem_stride=1)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
        drawn += [space.sample(study.ask()).to_string() for _ in range(300)]
    chosen = [_at_most_two_layers(arch) for arch in covering(drawn)]  # the spaces share their early blocks: one cover
    jobs = [(arch, 10) for arch in chosen] + [(arch, 100) for arch in chosen[:2]]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        counted = list(pool.map(_tflite_macs_of, jobs))
    for (arch, classes), macs in zip(jobs, counted, strict=True):
        assert multiply_adds(ArchSpec.from_string(arch), 32, num_classes=classes) == macs, arch


def _at_most_two_layers(arch: str) -> str:
    spec = ArchSpec.from_string(arch)
    blocks = tuple(dataclasses.replace(block, repeats=min(block.repeats, 2)) for block in spec.blocks)
    return dataclasses.replace(spec, blocks=blocks).to_string()


def test_the_sample_that_covers_every_choice_makes_every_choice():
    a, b = "conv_r1_k3_s1_c16-mbconv_r2_k3_s1_e6_c16", "conv_r1_k5_s1_c16-mbconv_r2_k3_s1_e6_c16"
    same_as_a = "conv_r2_k3_s1_c24-mbconv_r1_k3_s1_e6_c8"  # other layer counts and widths: no choice of its own
    assert covering([a, same_as_a, b]) == [a, b]
