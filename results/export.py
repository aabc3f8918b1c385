"""`nas export`: deployable files of a retrained model, each checked, and a model card.

Formats: the Keras model (`.keras`), TFLite float32, float16 and full-integer int8 (calibrated on
training images, never validation or test ones). Every TFLite file's test accuracy is computed with
the LiteRT interpreter and its latency re-measured with the study's protocol: quantization is
judged by what it does to this model, not assumed (int8 was measured *slower* than float32 for a
MobileViT model on these CPUs).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, replace

import numpy as np

from results.card import FormatEntry, ModelCard
from search_spaces.errors import error_line
from search_spaces.files import load_provenance

log = logging.getLogger(__name__)

FORMATS = ("fp32", "fp16", "int8")
REPRESENTATIVE_IMAGES = 256


def tflite_accuracy(path: str, images: np.ndarray, labels: np.ndarray) -> float:
    from latency.convert import run_tflite

    return float(np.mean(np.argmax(run_tflite(path, images), axis=1) == labels))


def export_retrained(
    workdir: str, *, dataset, device=None, formats: tuple[str, ...] = FORMATS, measure: bool = True
) -> ModelCard:
    """Write `workdir`/model_<format>.tflite and model_card.{md,json}; return the card. With
    `measure=False` the files are not timed (`nas compare` times all models side by side) and the
    card names no device."""
    import keras

    from latency.convert import revive_dead_layers, to_tflite
    from latency.devices import DeviceError, HostDevice
    from latency.macs import tflite_macs
    from search_spaces import ArchSpec
    from trainers.cifar import train_val_split
    from trainers.full import MODEL, load_result

    result = asdict(load_result(workdir))
    recipe = result["recipe"]
    sources = load_provenance(workdir)
    # the search it came from, if any (a model chosen from a study and as a string keeps both)
    provenance = next((p for p in sources if "study" in p), sources[0] if sources else {})
    spec = ArchSpec.from_string(result["arch"])
    model_path = os.path.join(workdir, MODEL)
    model = keras.models.load_model(model_path)
    input_shape = dataset.x_train.shape[1:]
    train_idx, _ = train_val_split(dataset, val_size=recipe["val_images"], seed=recipe["seed"])
    representative = dataset.x_train[np.random.default_rng(0).choice(train_idx, REPRESENTATIVE_IMAGES, replace=False)]
    device = (device or HostDevice()) if measure else None  # where the study measured, if it was told (--device)

    keras_accuracy = float(
        np.mean(np.argmax(model.predict(dataset.x_test.astype(np.float32), batch_size=256, verbose=0), 1) == dataset.y_test)
    )
    entries = {"keras": FormatEntry(file=MODEL, test_accuracy=keras_accuracy, size_bytes=os.path.getsize(model_path))}
    for precision in formats:
        path = os.path.join(workdir, f"model_{precision}.tflite")
        start = time.perf_counter()
        if precision == "int8":  # what fp32 computes, in a form XNNPACK can prepare once quantized
            revived = revive_dead_layers(model, representative)
            if revived:
                log.info("int8: layers zero on every calibration image, given a constant their consumers cancel: %s", revived)
        try:
            to_tflite(
                model,
                path,
                input_shape=input_shape,
                precision=precision,
                representative=representative,
                check_inputs=dataset.x_test[:8].astype(np.float32),
            )
        except Exception as error:  # one format failing must not hide the others
            if os.path.exists(path):  # an earlier export's file of this format is not this model's deliverable
                os.remove(path)
            entries[precision] = FormatEntry(error=error_line(error, typed=True))
            continue
        entry = FormatEntry(
            file=os.path.basename(path),
            test_accuracy=tflite_accuracy(path, dataset.x_test, dataset.y_test),
            size_bytes=os.path.getsize(path),
        )
        if device is not None:
            try:
                latency = device.measure(path)
                entry = replace(entry, latency_median_ms=latency.median_ms, latency_p90_ms=latency.p90_ms, latency_cv=latency.cv)
            except DeviceError as error:  # the file is good; only its timing is missing
                entry = replace(entry, latency_error=str(error))
        entries[precision] = replace(entry, export_seconds=time.perf_counter() - start)
    fp32_path = os.path.join(workdir, "model_fp32.tflite")
    card = ModelCard(
        arch=spec.to_string(),
        arch_id=spec.arch_id,
        params_count=int(model.count_params()),
        multiply_adds=tflite_macs(fp32_path) if os.path.exists(fp32_path) else None,
        input={"shape": list(input_shape), "dtype": "float32 pixels in [0, 255] (int8 model: uint8)", "dataset": dataset.name},
        classes=tuple(dataset.class_names),
        formats=entries,
        latency_fingerprint=device.fingerprint() if device is not None else None,
        latency_protocol=asdict(device.protocol) if device is not None else None,
        training={
            "recipe": recipe,
            "epochs_run": result["epochs_run"],
            "best_epoch": result["best_epoch"],
            "val_accuracy": result["val_accuracy"],
            "test_accuracy": result["test_accuracy"],
            "retrain_seconds": result["train_seconds"],
        },
        search=provenance,
    )
    card.save(workdir)
    return card
