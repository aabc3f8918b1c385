"""Bad input: one line naming the bad value, exit code 2, no traceback, nothing written."""

import subprocess
import sys

import pytest

BAD = [
    (["search", "--target-ms", "0"], "target-ms=0.0"),
    (["search", "--target-ms", "-5"], "target-ms=-5.0"),
    (["search", "--target-ms", "abc"], "'abc' is not a number"),
    (["search", "--alpha", "0.07"], "alpha=0.07"),
    (["search", "--beta", "2"], "beta=2.0"),
    (["search", "--mode", "fastest"], "mode='fastest'"),
    (["search", "--sampler", "grid"], "sampler='grid'"),
    (["search", "--space", "resnet"], "space='resnet'"),
    (["search", "--constraint", "medium"], "constraint='medium'"),
    (["search", "--dataset", "mnist"], "dataset='mnist'"),
    (["search", "--trials", "0"], "trials=0"),
    (["search", "--epochs", "0"], "epochs=0"),
    (["search", "--batch-size", "4096", "--train-images", "1000"], "batch-size=4096"),
    (["search", "--study-name", "a/b"], "study-name='a/b'"),
    (["search", "--config", "/nonexistent.toml"], "config file '/nonexistent.toml' does not exist"),
    (["search", "--data-dir", "/nonexistent-dir"], "data directory '/nonexistent-dir' does not exist"),
    (["search", "--storage", "notaurl://x"], "storage 'notaurl://x' cannot be opened"),
    (["front", "--study", "never-ran"], "study 'never-ran' does not exist"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(args, message, tmp_path, cifar_dir):
    if args[0] == "search" and "--data-dir" not in args:
        args = [*args, "--data-dir", str(cifar_dir)]
    result = subprocess.run(
        [sys.executable, "-m", "nas.cli", *args, "--runs-dir", str(tmp_path / "runs")]
        if args[0] != "frobnicate"
        else [sys.executable, "-m", "nas.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "never-ran").exists()


def test_config_file_with_unknown_key(tmp_path, cifar_dir):
    config = tmp_path / "search.toml"
    config.write_text('trials = 2\ncolour = "red"\n')
    result = subprocess.run(
        [sys.executable, "-m", "nas.cli", "search", "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "unknown key 'colour'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_config_file_values_are_used_and_flags_win(tmp_path):
    from nas.config import load_config

    config = tmp_path / "search.toml"
    config.write_text('target-ms = 75\nalpha = -0.1\ntrials = 4\nsampler = "nsga2"\n')
    loaded = load_config(toml_path=str(config), overrides={"trials": 9})
    assert (loaded.target_ms, loaded.reward_alpha, loaded.reward_beta, loaded.trials, loaded.sampler) == (
        75,
        -0.1,
        -0.07,
        9,
        "nsga2",
    )
    hard = load_config(overrides={"constraint": "hard", "target_ms": 2.0})
    assert (hard.reward_alpha, hard.reward_beta, hard.latency_limit_ms) == (0.0, -1.0, 4.0)
