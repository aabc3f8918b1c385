"""`nas retrain` (resumable full recipe) and `nas export` (every format checked, model card) on real CIFAR-10."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from search_spaces import ArchSpec
from trainers.full import CHECKPOINT, load_checkpoint

pytestmark = pytest.mark.slow  # every test here runs real searches or trainings

ARCH = "mnasnet-small"
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
    "--deterministic",
]
INT8_TOLERANCE = 0.03  # absolute accuracy on the 1000-image test subset
# where nothing needs to learn (comparison plumbing, interruption), the least that runs the recipe
QUICK = ["--epochs", "2", "--train-images", "1024", "--val-images", "500", "--batch-size", "64", "--lr", "0.05"]


def nas(*args, cwd, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "nas.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=900, **kwargs
    )


def epochs_done(workdir) -> int:
    loaded = load_checkpoint(str(workdir / CHECKPOINT))
    return loaded[0]["epochs_done"] if loaded else 0


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


def test_compare_retrains_exports_times_and_reports(cifar_dir, tmp_path):
    """`nas compare` on a tiny recipe: a found architecture against a reference, both retrained with
    the same recipe, scored in fp32 and int8, timed side by side; compare.json and its report section."""
    found = "conv_r1_k3_s1_c16-dsconv_r1_k3_s2_c16-mbconv_r1_k3_s2_e3_c24-mbconv_r1_k3_s2_e3_c32-head_c256"
    args = ["--arch", found, "--references", ARCH, *QUICK, "--data-dir", str(cifar_dir), "--runs-dir", "runs"]
    result = nas("compare", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Warning" not in result.stdout + result.stderr  # the converters' chatter stays off the terminal
    path = tmp_path / "runs" / "compare" / "compare.json"
    document = json.loads(path.read_text())
    records = {r["model"]: r for r in document["records"]}
    assert set(records) == {ARCH, ArchSpec.from_string(found).arch_id}
    (recipe_id,) = document["recipes"]
    for record in records.values():
        assert record["epochs"] == 2 and record["recipe_id"] == recipe_id
        assert 0 < record["test_accuracy_int8"] <= 1 and record["latency_int8_ms"] > 0 and record["latency_fp32_ms"] > 0
        assert record["fingerprint"] in document["fingerprints"] and os.path.isdir(tmp_path / record["workdir"])
        card = json.loads((tmp_path / record["workdir"] / "model_card.json").read_text())
        assert card["latency_fingerprint"] is None  # compare times its files in compare.json, not in the card
    assert len({r["timed"] for r in records.values()}) == 1  # one side-by-side timing
    assert "dominates in int8" in result.stdout
    again = nas("compare", *args, cwd=tmp_path)  # everything is reused: no epoch is trained again
    assert again.returncode == 0 and "epoch" not in again.stdout.replace("epochs", "")

    # a run that names only the reference keeps the found model's record and times it again beside it
    alone = nas("compare", "--arch", ARCH, "--references", "", *QUICK, "--data-dir", str(cifar_dir), cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-2000:]
    merged = json.loads(path.read_text())
    assert {r["model"] for r in merged["records"]} == set(records) and len(merged["runs"]) == 3
    assert len({r["timed"] for r in merged["records"]}) == 1 and merged["records"][0]["timed"] > records[ARCH]["timed"]


def test_sigterm_stops_a_retraining_with_one_line_and_keeps_its_epochs(cifar_dir, tmp_path):
    out = tmp_path / "model"
    command = [sys.executable, "-m", "nas.cli", "retrain", "--arch", ARCH, *QUICK, "--data-dir", str(cifar_dir)]
    process = subprocess.Popen(
        [*command, "--out", str(out)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600
    while epochs_done(out) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted; finished epochs and models are kept" in err
    assert epochs_done(out) >= 1 and not (out / "result.json").exists()
