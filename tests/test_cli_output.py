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


def test_trials_timed_on_a_busy_machine_are_tagged_and_counted(tmp_path):
    from helpers import study_with

    from latency.measure import LatencyResult
    from nas import progress
    from nas.config import SearchConfig
    from nas.searching import SearchSummary
    from results.pareto import pareto_info
    from results.record import TrialRecord

    def record(k: int, busy: float) -> TrialRecord:
        latency = LatencyResult(
            median_ms=0.1 * k, p90_ms=0.1 * k, cv=0.01, run_cv=0.02, runs=200, attempts=1, busy_cores=busy, spell_rounds=k - 1
        )
        return TrialRecord(arch=f"arch-{k}", arch_id=f"id-{k}", accuracy=0.3 + 0.1 * k, latency=latency)

    _, study = study_with(tmp_path, trials=[record(1, 0.02), record(2, 1.6), record(3, 0.1)])
    quiet, busy = study.trials[0], study.trials[1]
    assert "busy" not in progress.trial_line(quiet, 1, 3, elapsed_s=1.0, chance=0.1)
    assert "(timed beside 1.6 busy cores)" in progress.trial_line(busy, 2, 3, elapsed_s=2.0, chance=0.1)
    # a resumed study-wide budget: 13 of 60 done, 12 of them before this process began 42 s ago
    assert "elapsed 0.7 min, eta 32.9 min" in progress.trial_line(quiet, 13, 60, elapsed_s=42.0, chance=0.1, done_before=12)
    assert progress.trial_line(quiet, 12, 60, elapsed_s=5.0, chance=0.1, done_before=12).endswith("eta -")
    summary = SearchSummary(info=pareto_info(study), new_trials=3, wall_seconds=3.0, csv_path="t.csv", storage_url="s")
    text = progress.search_summary(summary, SearchConfig(), chance=0.1)
    assert "warning: 1 of 3 trials were timed while other processes kept up to 1.6 cores busy" in text
    assert "latency: 2 of 3 timings had rounds in one of the machine's slow spells" in text
