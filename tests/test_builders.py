"""Every reference builds, converts to a builtin-ops TFLite model and computes what Keras computes."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from latency.convert import ConversionError, run_tflite, to_tflite, verify  # noqa: E402
from search_spaces import REFERENCES, ArchSpec  # noqa: E402
from search_spaces.keras_blocks import build  # noqa: E402

# Golden parameter counts (10 classes): a silent change in any builder moves them.
PARAMS = {
    "mnasnet-a1": 2_652_336,
    "mnasnet-b1": 3_153_042,
    "mnasnet-small": 779_002,
    "mobilenetv2-1.0": 2_270_794,
    "mobilenetv2-0.5": 719_034,
    "mobilevit-xxs": 958_346,
}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_builds_converts_and_matches_keras(name, images, tmp_path):
    model = build(ArchSpec.from_string(REFERENCES[name]))
    assert model.count_params() == PARAMS[name]
    assert model.output_shape == (None, 10)
    path = to_tflite(model, str(tmp_path / f"{name}.tflite"), input_shape=(32, 32, 3), check_inputs=images)
    outputs = run_tflite(path, images)
    expected = np.asarray(model(images, training=False))
    scale = np.abs(expected).max()
    assert scale > 0 and np.isfinite(outputs).all()
    assert np.abs(outputs - expected).max() <= 1e-4 * scale


def test_layers_are_named_by_block_and_repeat():
    model = build(ArchSpec.from_string(REFERENCES["mnasnet-a1"]))
    names = {layer.name for layer in model.layers}
    # block 3 of A1 is mbconv_r3_k5_s2_e3_c40_se0.25: three layers, each with SE and (after the first) a residual
    for expected in ("b3_0_expand", "b3_0_dw", "b3_2_se_reduce", "b3_2_se_expand", "b3_1_project_bn", "b3_2_add", "b8_head"):
        assert expected in names
    assert "b3_0_add" not in names  # the strided first layer changes shape: no identity residual


def test_skip_ops_change_the_graph():
    def adds(skip):
        spec = ArchSpec.from_string(f"conv_r1_k3_s2_c16-mbconv_r2_k3_s2_e3_c24{skip}-head_c64")
        return sorted(layer.name for layer in build(spec).layers if layer.name.endswith(("_add", "_skip_pool", "_skip_proj")))

    assert adds("") == ["b1_1_add"]  # identity only where shapes match
    assert adds("_poolskip") == ["b1_0_add", "b1_0_skip_pool", "b1_0_skip_proj", "b1_1_add"]
    assert adds("_noskip") == []


def test_se_reduces_from_block_input_channels():
    spec = ArchSpec.from_string("conv_r1_k3_s2_c32-mbconv_r1_k3_s1_e6_c48_se0.25-head_c64")
    layer = build(spec).get_layer("b1_0_se_reduce")
    assert layer.filters == 8  # 0.25 x 32 input channels, not x 192 expanded channels


def test_verify_catches_a_model_with_other_weights(images, tmp_path):
    spec = ArchSpec.from_string("conv_r1_k3_s2_c16-mbconv_r2_k3_s2_e3_c24_se0.25-head_c64")
    path = to_tflite(build(spec), str(tmp_path / "a.tflite"), input_shape=(32, 32, 3), check_inputs=images)
    keras.utils.set_random_seed(123)
    other = build(spec)  # same graph, different weights: what a conversion that lost weights looks like
    with pytest.raises(ConversionError, match="differs from Keras"):
        verify(other, path, images)


def test_initial_weights_are_seeded_and_distinct_per_layer():
    import subprocess
    import sys

    code = (
        "import keras, hashlib, numpy as np\n"
        "from search_spaces import reference\n"
        "from search_spaces.keras_blocks import build\n"
        "keras.utils.set_random_seed(7)\n"
        "m = build(reference('mnasnet-small'))\n"
        "print(hashlib.sha256(b''.join(np.asarray(w).tobytes() for w in m.weights)).hexdigest())\n"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]
        for _ in range(2)
    }
    assert len(digests) == 1  # the same seed gives the same network in another process
    model = build(ArchSpec.from_string(REFERENCES["mnasnet-small"]))
    a, b = model.get_layer("b4_1_dw").weights[0], model.get_layer("b4_2_dw").weights[0]
    assert a.shape == b.shape and not np.allclose(np.asarray(a), np.asarray(b))  # same shape, own values
