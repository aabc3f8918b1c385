"""Which candidates `nas proxy-check --study` takes, and what its summary reports (no training:
the results are given)."""

import optuna
import pytest
from helpers import run_nas, study_with

from latency.measure import LatencyResult
from nas import proxy_check
from nas.config import ConfigError
from results.record import TrialRecord


def _study(latencies, accuracies):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for number, (latency, accuracy) in enumerate(zip(latencies, accuracies, strict=True)):
        record = TrialRecord(
            arch=f"arch-{number}", arch_id=f"id-{number}", accuracy=accuracy, latency=LatencyResult.exact(latency)
        )
        study.add_trial(optuna.trial.create_trial(values=[accuracy, latency], user_attrs=record.to_user_attrs()))
    return study


def test_given_trials_first_then_a_spread_over_every_measured_latency_not_only_the_front():
    # trials 0..9 at 0.1..1.0 ms; the front is trials 0 and 9 only (the others are worse and slower than 0)
    study = _study([0.1 * k for k in range(1, 11)], [0.5] + [0.3] * 8 + [0.6])
    chosen = proxy_check.study_candidates(study, 4, trials=(9,))
    assert [name for name, _, _ in chosen] == ["trial-9", "trial-0", "trial-3", "trial-6", "trial-8"]
    assert [round(lat, 1) for _, _, lat in chosen] == [1.0, 0.1, 0.4, 0.7, 0.9]
    with pytest.raises(ConfigError, match="trial 42 of study"):
        proxy_check.study_candidates(study, 1, trials=(42,))


def test_the_summary_ranks_by_every_estimator_and_reports_the_trend_of_the_error():
    proxy, long = proxy_check.Budget(8000, 1), proxy_check.Budget(45000, 30)
    records = {}
    for k in range(6):
        # the proxy overrates the small models: its accuracy falls with size while the final one rises
        results = {
            proxy.label: {
                "accuracy": 0.5 - 0.02 * k,
                "params_count": 1000 * (k + 1),
                "train_loss_mean": 2.0 - 0.1 * k,
                "seconds": 60,
            },
            long.label: {"accuracy": 0.8 + 0.01 * k, "seconds": 3600},
        }
        arch = f"conv_r1_k3_s1_c{8 * (k + 1)}-head_c64"
        records[arch] = proxy_check.CheckRecord(name=f"a{k}", arch=arch, results=results, latency_ms=0.1 * (k + 1))
    summary = proxy_check.summarize(records, proxy, long)
    assert summary["n"] == 6 and summary["agreement"].spearman_rho == pytest.approx(-1.0)
    assert summary["estimators"]["- mean training loss"].spearman_rho == pytest.approx(1.0)
    assert "accuracy half-way" not in summary["estimators"]  # no curve recorded
    assert summary["error_trend"]["params"].spearman_rho == pytest.approx(-1.0)  # overrated when small
    assert summary["error_trend"]["latency"].spearman_rho == pytest.approx(-1.0)
    text = proxy_check.format_check(records, proxy, long)
    assert "ranked by - mean training loss" in text and "proxy rank minus final rank against params" in text


def test_the_command_takes_several_given_trials_of_a_study(tmp_path):
    """`--trial` fills proxy-check's own list, not the search's trial count (it did, and refused every
    `--trial` as "must be an integer")."""
    records = [
        TrialRecord(arch=f"arch-{k}", arch_id=f"id-{k}", accuracy=0.3, latency=LatencyResult.exact(0.1 * k)) for k in (1, 2)
    ]
    runs, _ = study_with(tmp_path, trials=records)
    storage = f"sqlite:///{runs}/s/study.db"
    flags = ["--study", "s", "--storage", storage, "--trial", "0", "--trial", "1", "--runs-dir", str(runs), "--show"]
    shown = run_nas("proxy-check", *flags, "--out", str(tmp_path / "check.json"), cwd=tmp_path)
    assert shown.returncode == 2 and shown.stderr.strip() == f"nas: error: no saved proxy check at {tmp_path / 'check.json'}"
