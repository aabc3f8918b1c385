"""`nas retrain` (resumable full recipe) and `nas export` (every format checked, model card) on real CIFAR-10.
One retraining serves the file; `nas compare` and the interruptions are in test_compare.py (another xdist
worker, as files are distributed whole)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import RETRAIN_ARCH as ARCH
from helpers import epochs_done
from helpers import run_nas as nas

pytestmark = pytest.mark.slow  # every test here runs real searches or trainings

RECIPE = [
    "--epochs",
    "2",
    "--train-images",
    "2048",
    "--val-images",
    "500",
    "--batch-size",
    "64",
    "--lr",
    "0.05",
    "--ema-bn-batches",
    "8",  # the averaged weights' statistics from a quarter of an epoch, not all of it: cheaper, the same path
    "--deterministic",
]
INT8_TOLERANCE = 0.03  # absolute accuracy on the 1000-image test subset


@pytest.fixture(scope="module")
def retrained(cifar_dir, tmp_path_factory):
    """An uninterrupted run and a run killed after its first epoch, then resumed."""
    root = tmp_path_factory.mktemp("retrain")
    straight = nas("retrain", "--arch", ARCH, *RECIPE, "--data-dir", str(cifar_dir), "--out", str(root / "straight"), cwd=root)
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed_dir = root / "killed"
    command = [
        sys.executable,
        "-m",
        "nas.cli",
        "retrain",
        "--arch",
        ARCH,
        *RECIPE,
        "--data-dir",
        str(cifar_dir),
        "--out",
        str(killed_dir),
    ]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if epochs_done(killed_dir) >= 1:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epochs_at_kill = epochs_done(killed_dir)
    resumed = nas("retrain", "--arch", ARCH, *RECIPE, "--data-dir", str(cifar_dir), "--out", str(killed_dir), cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return root, epochs_at_kill, straight, resumed


def test_resume_after_a_kill_matches_an_uninterrupted_run(retrained):
    root, epochs_at_kill, _, resumed = retrained
    assert epochs_at_kill == 1
    assert "epoch   1/2" not in resumed.stdout and "epoch   2/2" in resumed.stdout  # it went on from epoch 2
    a = json.loads((root / "straight" / "result.json").read_text())
    b = json.loads((root / "killed" / "result.json").read_text())
    assert a["epochs_run"] == b["epochs_run"] == 2
    for x, y in zip(a["history"], b["history"], strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4)  # same data, order, schedule and deterministic kernels
        assert y["val_accuracy"] == pytest.approx(x["val_accuracy"], abs=0.004)
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.005
    assert a["test_accuracy"] > 0.15  # it learned: at chance (0.1) 1000 test images exceed 0.15 with p < 1e-6


def test_the_delivered_model_loads_with_keras_alone(retrained):
    """Training runs on fused BatchNorm ops; model.keras holds Keras' own layer, so it loads
    in a process that never imports this package."""
    root, *_ = retrained
    code = "import keras, sys; m = keras.models.load_model(sys.argv[1]); print(','.join({type(x).__name__ for x in m.layers}))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(root / "straight" / "model.keras")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    names = out.stdout.strip().splitlines()[-1].split(",")
    assert "BatchNormalization" in names and "FusedBatchNormalization" not in names


def test_export_checks_every_format_and_writes_a_model_card(retrained, cifar_dir):
    root, *_ = retrained
    result = nas("export", "--arch", ARCH, "--data-dir", str(cifar_dir), "--out", str(root / "killed"), cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((root / "killed" / "model_card.json").read_text())
    formats = card["formats"]
    assert set(formats) == {"keras", "fp32", "fp16", "int8"}
    for name in ("fp32", "fp16", "int8"):
        entry = formats[name]
        assert "error" not in entry, entry
        assert (root / "killed" / entry["file"]).is_file()
        assert 0.1 < entry["test_accuracy"] <= 1 and entry["latency_median_ms"] > 0
    assert formats["fp32"]["test_accuracy"] == pytest.approx(formats["keras"]["test_accuracy"], abs=0.002)
    assert abs(formats["int8"]["test_accuracy"] - formats["fp32"]["test_accuracy"]) <= INT8_TOLERANCE
    assert formats["int8"]["size_bytes"] < 0.4 * formats["fp32"]["size_bytes"]
    for field in ("arch", "params_count", "multiply_adds", "latency_fingerprint", "training", "search", "latency_protocol"):
        assert card[field] is not None, field
    assert card["training"]["recipe"]["epochs"] == 2 and card["search"] == {"reference": ARCH}
    markdown = (root / "killed" / "model_card.md").read_text()
    for heading in ("# Model card", "## Formats", "## Training", "## Search", "| int8 |", "Latency measured on"):
        assert heading in markdown


def test_a_format_that_fails_to_export_is_named_on_the_card_and_its_old_file_removed(retrained, cifar_dir, tmp_path, monkeypatch):
    """One format failing does not hide the others; its card entry says why in one line, and a file an earlier
    export left under its name (another model's deliverable) is not shipped beside this model's card."""
    import shutil

    import latency.convert
    from results.export import export_retrained
    from trainers.cifar import load_cifar

    root, *_ = retrained
    workdir = tmp_path / "model"
    shutil.copytree(root / "straight", workdir)
    (workdir / "model_int8.tflite").write_bytes(b"an earlier export")
    convert = latency.convert.to_tflite

    def refuses_int8(model, path, *, precision, **kwargs):
        if precision == "int8":
            raise latency.convert.ConversionError("no int8 kernel for op 7\n  at frame 1\n  at frame 2")
        return convert(model, path, precision=precision, **kwargs)

    monkeypatch.setattr(latency.convert, "to_tflite", refuses_int8)
    card = export_retrained(str(workdir), dataset=load_cifar(data_dir=str(cifar_dir)), formats=("fp32", "int8"), measure=False)
    assert card.formats["int8"].error == "ConversionError: no int8 kernel for op 7"
    assert not (workdir / "model_int8.tflite").exists()
    assert card.formats["fp32"].error is None and 0.1 < card.formats["fp32"].test_accuracy <= 1


def test_export_re_measures_on_the_search_device(retrained, cifar_dir):
    """`nas export --device cmd:...` times each file where the study did (a fake command here)."""
    root, *_ = retrained
    fake = os.path.join(os.path.dirname(__file__), "fakes", "latency_cmd")
    device = f"cmd:{sys.executable} {fake} ok {{model}}"
    out = root / "killed"
    result = nas(
        "export",
        "--arch",
        ARCH,
        "--data-dir",
        str(cifar_dir),
        "--out",
        str(out),
        "--formats",
        "fp32",
        "--device",
        device,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((out / "model_card.json").read_text())
    assert card["formats"]["fp32"]["latency_median_ms"] == pytest.approx(2.11)
    assert card["latency_fingerprint"]["device"] == "cmd"
    assert "Latency measured on: cmd (user command)" in (out / "model_card.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retrain", "--arch", "conv_r1_k9_s1_c8-head_c10"], "kernel=9"),
        (["retrain", "--arch", ARCH, "--epochs", "0"], "epochs=0"),
        (["retrain", "--arch", ARCH, "--optimizer", "lion"], "optimizer='lion'"),
        (["retrain", "--study", "never-ran", "--trial", "3"], "study 'never-ran' does not exist"),
        (["retrain", "--arch", ARCH, "--front"], "study 'mnasnet-cifar10' does not exist"),
        (["export", "--arch", ARCH], "holds no finished retraining"),
    ],
)
def test_bad_retrain_and_export_input(args, message, tmp_path, cifar_dir):
    result = nas(*args, "--data-dir", str(cifar_dir), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
