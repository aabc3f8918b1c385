"""Keras 3 -> TFLite conversion, checked against Keras.

Route: the model's inference function traced at a fixed batch-1 shape (a fixed shape lets the
converter specialise; measured 10-20 % faster for attention blocks), its variables frozen into
constants, then `TFLiteConverter.from_concrete_functions`. Converting the *unfrozen* concrete
function, or `tf.saved_model.save(keras3_model)` + convert, silently drops the weights (NaN
outputs). Freezing first skips the SavedModel write and reload of `keras.Model.export`, which
took 80 % of the conversion: measured 2.4-4.0 s instead of 16-21 s (same machine, same load),
with outputs equal to Keras' to 1e-6 and the same latency. Every fp32 conversion is verified
against the Keras model on real inputs all the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

import numpy as np

from search_spaces.errors import error_line
from search_spaces.files import atomic_path

log = logging.getLogger(__name__)


class ConversionError(RuntimeError):
    """The model cannot become a builtin-ops TFLite model that computes what Keras computes."""


class XnnpackRefusal(ConversionError):
    """The file converted, but XNNPACK, LiteRT's default CPU path, cannot prepare it (see `untrained_tflite`)."""


PRECISIONS = ("fp32", "fp16", "int8")


def converter_options(precision: str, representative: np.ndarray | None = None) -> dict:
    """TFLiteConverter settings per precision; builtin ops only in every case.

    int8 is full-integer: uint8 pixels in (the model normalises them itself), int8 logits out,
    calibrated on `representative` training images."""
    import tensorflow as tf

    if precision == "fp32":
        return {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if precision == "fp16":
        return {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS], "supported_types": [tf.float16]},
        }
    if precision == "int8":
        if representative is None or not len(representative):
            raise ValueError("int8 conversion needs representative images")

        def batches():
            for image in representative:
                yield [image[None].astype(np.float32)]

        return {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": batches,
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
            "inference_input_type": tf.uint8,
            "inference_output_type": tf.int8,
        }
    raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")


def to_tflite(
    model,
    path: str,
    *,
    input_shape: tuple[int, int, int],
    check_inputs: np.ndarray | None = None,
    precision: str = "fp32",
    representative: np.ndarray | None = None,
) -> str:
    """Convert `model` (batch 1, builtin ops only) to `path` and return `path`. A float32 model
    is verified against Keras; quantized ones are judged by their accuracy (see results.export)."""
    options = converter_options(precision, representative)
    # Written beside the target and renamed only once checked: a killed or failed conversion never
    # leaves a file that looks good.
    with atomic_path(path, suffix=".tflite") as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(_convert(model, input_shape, options))
        except Exception as error:  # the converter raises many types; all mean "cannot convert"
            raise ConversionError(f"TFLite conversion failed: {error_line(error)}") from error
        _check_runs(tmp, precision)
        if precision == "fp32":
            if check_inputs is None:
                check_inputs = np.random.default_rng(0).uniform(0, 255, size=(4, *input_shape)).astype(np.float32)
            verify(model, tmp, check_inputs)
    return path


#: weight draws `untrained_tflite` tries before it gives up (a draw is refused about one time in eight)
UNTRAINED_DRAWS = 3


def untrained_tflite(build_model, path: str, *, input_shape: tuple[int, int, int], precision: str, representative=None):
    """A latency file: `build_model()`'s untrained weights converted to `path`; the model.

    XNNPACK refuses a quantized file in which a requantization scale falls outside its range, and
    untrained weights make such files: a unit that is zero on every calibration image (a squeeze-excite
    ReLU whose random kernel is negative for every image's mean) is calibrated to a range of ~0, so the
    next layer's scale ratio runs to ~1,000 (XNNPACK takes < 256; 8 of a 60-trial int8 search's
    architectures failed so). Latency depends on neither weights nor scales, so such a file is made
    again from other random weights (`UNTRAINED_DRAWS` draws, seeds 0, 1, ...). (`revive_dead_layers`, the fix
    for trained models, does not serve here: an untrained consumer's bias is zero, so its output becomes the
    constant 0 in turn; all 8 of those architectures stayed refused with it.)"""
    import keras

    refusal = None
    for seed in range(UNTRAINED_DRAWS):
        keras.utils.set_random_seed(seed)
        model = build_model()
        try:
            to_tflite(model, path, input_shape=input_shape, precision=precision, representative=representative)
            return model
        except XnnpackRefusal as error:
            refusal = error
            log.debug("draw %d of %s: %s", seed, path, error)
    raise XnnpackRefusal(f"{refusal}, in each of {UNTRAINED_DRAWS} draws of untrained weights") from refusal


def revive_dead_layers(model, images: np.ndarray, *, constant: float = 1.0) -> list[str]:
    """Give each 1x1 ReLU convolution that is zero on every one of `images` (a squeeze-excite reduce layer that
    training killed) a constant output that its 1x1 consumers cancel; the names of the layers changed.

    Quantized, such a layer's output gets a range of ~0 and a scale ratio XNNPACK refuses (trial 16 of the
    int8 search: 437, XNNPACK takes < 256). Its first unit now outputs `constant` (kernel 0, bias `constant`)
    and each consumer's bias subtracts what that adds, so the model computes what it computed on every image
    where the layer was zero; elsewhere it differs as little as the layer's int8 range, calibrated on
    `images`, let it anyway. Weights change in place."""
    import keras

    relu = keras.activations.relu
    candidates = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.activation is relu and layer.kernel_size == (1, 1) and layer.use_bias
    ]
    if not candidates:
        return []
    outputs = keras.Model(model.inputs, [layer.output for layer in candidates]).predict(images, batch_size=64, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    changed = []
    for layer, output in zip(candidates, outputs, strict=True):
        consumers = [node.operation for node in layer._outbound_nodes]
        linear = all(
            isinstance(c, keras.layers.Conv2D) and c.kernel_size == (1, 1) and c.use_bias and c.input is layer.output
            for c in consumers
        )
        if np.max(np.abs(output)) > 0 or not consumers or not linear:
            continue
        kernel, bias = layer.get_weights()
        kernel[..., 0], bias[0] = 0.0, constant
        layer.set_weights([kernel, bias])
        for consumer in consumers:
            weights, offsets = consumer.get_weights()
            consumer.set_weights([weights, offsets - constant * weights[0, 0, 0, :]])
        changed.append(layer.name)
    return changed


def _convert(model, input_shape: tuple[int, ...], options: dict) -> bytes:
    import tensorflow as tf

    # TF's own converter freezes with this helper; it has no public alias.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    forward = tf.function(lambda images: model(images, training=False))
    concrete = forward.get_concrete_function(tf.TensorSpec((1, *input_shape), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(concrete)])
    for name, value in options.items():
        if name == "target_spec":
            for key, item in value.items():
                setattr(converter.target_spec, key, item)
        else:
            setattr(converter, name, value)
    with _stdout_to_stderr(), warnings.catch_warnings():  # the quantizer prints its settings on the C++ stdout
        # uint8 pixels in with no (mean, std) statistics is what we ask for: the scale comes from calibration
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()


@contextlib.contextmanager
def _stdout_to_stderr():
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _check_runs(path: str, precision: str) -> None:
    """The file needs only builtin ops, and XNNPACK, LiteRT's default CPU path, can prepare it: a file the
    default runtime cannot run is no deliverable, and cannot be timed. One interpreter for both checks."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1)
    flex = sorted({op["op_name"] for op in interpreter._get_ops_details() if op["op_name"].startswith("Flex")})
    if flex:
        raise ConversionError(f"model needs TensorFlow (Flex) ops {flex}; only TFLite builtin ops are allowed")
    try:
        interpreter.allocate_tensors()
    except RuntimeError as error:
        raise XnnpackRefusal(f"XNNPACK refuses the {precision} file: {error_line(error)}") from error


def run_tflite(path: str, images: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
    """Float outputs of the TFLite model for each image, one at a time (the model has batch 1).
    Quantized inputs and outputs are converted with the model's own scale and zero point."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = source["quantization"]
    out_scale, out_zero = target["quantization"]
    outputs = []
    for image in images:
        value = image[None].astype(np.float32)
        if source["dtype"] != np.float32:
            info = np.iinfo(source["dtype"])
            value = np.clip(np.round(value / in_scale + in_zero), info.min, info.max).astype(source["dtype"])
        interpreter.set_tensor(source["index"], value)
        interpreter.invoke()
        output = interpreter.get_tensor(target["index"])[0]
        if target["dtype"] != np.float32:
            output = (output.astype(np.float32) - out_zero) * out_scale
        outputs.append(output.copy())
    return np.stack(outputs)


def verify(model, path: str, images: np.ndarray, *, rtol: float = 1e-3) -> float:
    """Relative max error of TFLite vs Keras; raise ConversionError above `rtol`.

    Relative to the output scale: an untrained net's logits may be tiny, and an absolute
    tolerance would pass a model whose weights were dropped."""
    expected = np.asarray(model(images, training=False))
    actual = run_tflite(path, images)
    scale = float(np.max(np.abs(expected)))
    if not np.all(np.isfinite(actual)):
        raise ConversionError("TFLite model produced NaN/inf outputs (weights lost in conversion?)")
    if scale == 0.0:
        raise ConversionError("Keras model outputs are all zero; the conversion check cannot discriminate")
    error = float(np.max(np.abs(actual - expected))) / scale
    if error > rtol:
        raise ConversionError(f"TFLite output differs from Keras by {error:.2e} (relative), above {rtol:.0e}")
    log.debug("conversion verified: relative error %.2e", error)
    return error
