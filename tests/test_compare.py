"""`nas compare` (found against reference, retrained with one recipe, timed side by side) and a retraining
stopped by SIGTERM, on real CIFAR-10."""

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import QUICK_RECIPE as QUICK
from helpers import RETRAIN_ARCH as ARCH
from helpers import epochs_done
from helpers import run_nas as nas

from search_spaces import ArchSpec
from trainers.full import RESULT

pytestmark = pytest.mark.slow  # real trainings

#: the side-by-side timing measures every file 5 times with the protocol's 5 rounds: its 0.5 s pauses between
#: rounds (tested in test_latency) would add about 2 minutes of sleep to this file alone
NO_PAUSES = ["--latency-round-gap", "0"]


def test_compare_retrains_exports_times_and_reports(cifar_dir, tmp_path):
    """`nas compare` on a tiny recipe: a found architecture against a reference, both retrained with
    the same recipe, scored in fp32 and int8, timed side by side; compare.json and its report section."""
    found = "conv_r1_k3_s1_c16-dsconv_r1_k3_s2_c16-mbconv_r1_k3_s2_e3_c24-mbconv_r1_k3_s2_e3_c32-head_c256"
    args = ["--arch", found, "--references", ARCH, *QUICK, *NO_PAUSES, "--data-dir", str(cifar_dir), "--runs-dir", "runs"]
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
    # stamped when the files were timed, after the last training (it once held the run's start, hours earlier)
    trained = max(os.path.getmtime(tmp_path / r["workdir"] / RESULT) for r in records.values())
    assert datetime.datetime.fromisoformat(records[ARCH]["timed"]).timestamp() >= int(trained)
    assert document["runs"][-1]["timed"] == records[ARCH]["timed"]
    assert "dominates in int8" in result.stdout
    again = nas("compare", *args, cwd=tmp_path)  # everything is reused: no epoch is trained again
    assert again.returncode == 0 and "epoch" not in again.stdout.replace("epochs", "")

    # a run that names only the reference keeps the found model's record and times it again beside it
    alone = nas("compare", "--arch", ARCH, "--references", "", *QUICK, *NO_PAUSES, "--data-dir", str(cifar_dir), cwd=tmp_path)
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
