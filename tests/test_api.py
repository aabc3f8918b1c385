"""The Python API, as the README shows it."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_python_api_searches_reads_the_front_and_retrains(cifar_dir, tmp_path):
    """The README's example, on a tiny budget."""
    import nas

    runs = str(tmp_path / "runs")
    config = nas.SearchConfig(trials=2, train_images=256, val_images=200, data_dir=str(cifar_dir), runs_dir=runs)
    summary = nas.search(config)
    front = nas.front(config.study_name, runs_dir=runs)
    assert summary.new_trials == 2 and len(front) >= 1 and {"accuracy", "latency_ms", "arch"} <= set(front.columns)
    best = int(front.sort_values("reward").iloc[-1]["number"])
    selection = nas.Selection(study=config.study_name, runs_dir=runs, trials=(best,), data_dir=str(cifar_dir))
    ((chosen, result),) = nas.retrain(selection, nas.Recipe(epochs=1, train_images=512, val_images=200))
    assert chosen.name == f"trial {best}" and result.epochs_run == 1 and os.path.exists(result.model_path)
    with pytest.raises(nas.ConfigError, match="searched on cifar10"):
        nas.retrain(nas.Selection(study=config.study_name, runs_dir=runs, trials=(best,), dataset="cifar100"))
