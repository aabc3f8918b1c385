"""What reaches the terminal: the command's own lines, not the native libraries' start-up chatter."""

from pathlib import Path

import pytest
from helpers import run_nas

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_no_native_start_up_lines_reach_the_terminal(cifar_dir, tmp_path):
    result = run_nas(
        "retrain", "--arch", "mnasnet-small", "--epochs", "1", "--train-images", "256", "--val-images", "100",
        "--data-dir", str(cifar_dir), "--runs-dir", "runs", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    noises = ("oneDNN", "cuda", "I0000", "W0000", "E0000", "absl::InitializeLog", "XNNPACK", "fully_quantize")
    for noise in noises:
        assert noise not in result.stdout and noise not in result.stderr, noise
    log = (tmp_path / "runs" / "nas.log").read_text()
    assert any(noise in log for noise in noises), log[-2000:]  # kept in the run's log instead (which lines varies by machine)
