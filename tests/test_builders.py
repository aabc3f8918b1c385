"""Every reference builds, converts to a builtin-ops TFLite model and computes what Keras computes."""

import os

import keras
import numpy as np
import pytest

from latency.convert import ConversionError, run_tflite, to_tflite, verify
from search_spaces import REFERENCES, ArchSpec
from search_spaces.keras_blocks import build

# Golden parameter counts (10 classes): a silent change in any builder moves them.
PARAMS = {
    "mnasnet-a1": 2_652_336,
    "mnasnet-b1": 3_153_042,
    "mnasnet-small": 779_002,
    # the MobileNetV2 widths: each equal to keras.applications.MobileNetV2(alpha=..., classes=10)'s count
    "mobilenetv2-1.0": 2_270_794,
    "mobilenetv2-0.75": 1_394_874,
    "mobilenetv2-0.5": 719_034,
    "mobilenetv2-0.35": 423_018,
    "mobilenetv2-0.5-s1": 719_034,  # the same layers, other strides
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


def test_fused_batchnorm_computes_what_keras_batchnorm_computes():
    from search_spaces.keras_blocks import FusedBatchNormalization

    x = np.random.default_rng(1).normal(2.0, 3.0, size=(8, 5, 5, 6)).astype(np.float32)
    layers = [cls(momentum=0.9, epsilon=1e-3) for cls in (keras.layers.BatchNormalization, FusedBatchNormalization)]
    for layer in layers:
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, 6))
        layer.beta.assign(np.linspace(-1.0, 1.0, 6))
    keras_bn, fused_bn = layers
    np.testing.assert_allclose(fused_bn(x, training=True), keras_bn(x, training=True), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused_bn.moving_mean, keras_bn.moving_mean, rtol=1e-5)
    # fused: the batch variance with Bessel's correction, n = 8 * 5 * 5
    np.testing.assert_allclose(
        fused_bn.moving_variance, 0.9 + (np.asarray(keras_bn.moving_variance) - 0.9) * 200 / 199, rtol=1e-5
    )
    assert not np.allclose(fused_bn.moving_mean, 0.0)  # the update happened
    fused_bn.moving_variance.assign(keras_bn.moving_variance)  # inference: equal statistics, equal outputs
    np.testing.assert_allclose(fused_bn(x, training=False), keras_bn(x, training=False), rtol=1e-5, atol=1e-5)


def test_fused_batchnorm_model_converts_to_the_same_tflite_graph(images, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    spec = ArchSpec.from_string(REFERENCES["mnasnet-small"])
    ops = {}
    for fused in (False, True):
        keras.utils.set_random_seed(0)
        path = to_tflite(
            build(spec, fused_bn=fused), str(tmp_path / f"{fused}.tflite"), input_shape=(32, 32, 3), check_inputs=images
        )
        ops[fused] = [op["op_name"] for op in Interpreter(model_path=path)._get_ops_details()]
    assert ops[True] == ops[False]  # BatchNorm folded into the convolutions either way
    assert "CONV_2D" in ops[True]


def _squeeze_excite_toy(reduce_bias: float) -> keras.Model:
    """A squeeze-excite-like path whose reduce unit is dead on every image when `reduce_bias` is very negative."""
    x = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu")(x / 255.0)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    s = keras.layers.Conv2D(4, 1, activation="relu", bias_initializer=keras.initializers.Constant(reduce_bias))(s)
    s = keras.layers.Conv2D(8, 1, activation="sigmoid", bias_initializer=keras.initializers.Constant(0.5))(s)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Multiply()([h, s]))
    return keras.Model(x, keras.layers.Dense(10)(h))


def test_an_int8_latency_file_that_xnnpack_refuses_is_made_again_from_other_weights(images, tmp_path):
    """A unit dead on every calibration image gets a range of ~0, a scale ratio XNNPACK refuses; the latency
    file is drawn again (latency depends on neither weights nor scales); the error names it when every draw is."""
    from latency.convert import UNTRAINED_DRAWS, XnnpackRefusal, untrained_tflite

    path = str(tmp_path / "m.tflite")
    with pytest.raises(XnnpackRefusal, match="XNNPACK refuses the int8 file: failed to create XNNPACK runtime"):
        to_tflite(_squeeze_excite_toy(-100.0), path, input_shape=(32, 32, 3), precision="int8", representative=images)
    assert not os.path.exists(path)  # a file the default runtime cannot run is not left behind

    biases = iter([-100.0, 0.0])
    model = untrained_tflite(
        lambda: _squeeze_excite_toy(next(biases)), path, input_shape=(32, 32, 3), precision="int8", representative=images
    )
    assert run_tflite(path, images[:1]).shape == (1, 10)  # it runs, on XNNPACK as LiteRT does by default
    assert model.get_layer(index=3).get_weights()[1].max() == 0.0  # the second draw's model

    calls = []
    with pytest.raises(XnnpackRefusal, match=f"in each of {UNTRAINED_DRAWS} draws of untrained weights"):
        untrained_tflite(
            lambda: calls.append(1) or _squeeze_excite_toy(-100.0),
            path,
            input_shape=(32, 32, 3),
            precision="int8",
            representative=images,
        )
    assert len(calls) == UNTRAINED_DRAWS


def test_a_trained_layer_dead_on_every_image_is_given_a_constant_its_consumer_cancels(images, tmp_path):
    """Trained models die too (trial 16 of the int8 search): the dead layer outputs a constant, its consumer's
    bias takes it back out, the model computes the same, and XNNPACK prepares its int8 file."""
    from latency.convert import revive_dead_layers

    keras.utils.set_random_seed(0)
    model = _squeeze_excite_toy(-100.0)
    before = np.asarray(model(images))
    assert revive_dead_layers(model, images) == [model.get_layer(index=3).name]
    np.testing.assert_allclose(np.asarray(model(images)), before, rtol=1e-5, atol=1e-6)
    path = to_tflite(model, str(tmp_path / "m.tflite"), input_shape=(32, 32, 3), precision="int8", representative=images)
    assert run_tflite(path, images[:1]).shape == (1, 10)  # it runs, on XNNPACK as LiteRT does by default
    assert revive_dead_layers(model, images) == []  # nothing is dead any more
    assert revive_dead_layers(_squeeze_excite_toy(0.0), images) == []  # a live layer is left alone
