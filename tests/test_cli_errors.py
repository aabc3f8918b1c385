"""Bad input: one line naming the bad value, exit code 2, no traceback, nothing written."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BAD = [
    (["search", "--target-ms", "0"], "target-ms=0.0"),
    (["search", "--target-ms", "-5"], "target-ms=-5.0"),
    (["search", "--target-ms", "abc"], "'abc' is not a number"),
    (["search", "--alpha", "0.07"], "alpha=0.07"),
    (["search", "--beta", "2"], "beta=2.0"),
    (["search", "--mode", "fastest"], "mode='fastest'"),
    (["search", "--strategy", "grid"], "strategy='grid'"),
    (["search", "--sampler", "grid"], "strategy='grid'"),
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
    (["search", "--width", "0"], "width=0.0"),
    (["search", "--val-images", "0"], "val-images=0"),
    (["search", "--latency-threads", "0"], "latency-threads=0"),
    (["search", "--timeout", "-1"], "timeout-s=-1.0"),
    (["search", "--max-latency-ms", "0"], "max-latency-ms=0.0"),
    (["search", "--trials", "abc"], "invalid int value: 'abc'"),
    (["search", "--config", "{bad_type_toml}"], "trials='many'"),
    (["search", "--data-dir", "{empty}"], "no cifar10 found in"),
    (["search", "--data-dir", "{truncated}"], "data_batch_1.bin is truncated"),
    (["search", "--data-dir", "{foreign}"], "not a CIFAR python batch"),
    (["search", "--runs-dir", "/etc/passwd/runs"], "cannot create the run directory '/etc/passwd/runs/mnasnet-cifar10'"),
    (["search", "--storage", "postgresql+psycopg2://nobody@127.0.0.1:1/none"], "cannot be opened"),
    (["front", "--study", "never-ran"], "study 'never-ran' does not exist"),
    (["report", "--study", "never-ran"], "study 'never-ran' does not exist"),
    (["dashboard", "--study", "never-ran", "--port", "0"], "port=0 must be in 1..65535"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["search", "--device", "tpu"], "device='tpu' is not one of host, adb[:SERIAL], cmd:COMMAND"),
    (["search", "--device", "cmd:measure.sh"], "has no {model} placeholder"),
    (["search", "--device", "cmd:m {model}", "--latency-regex", "("], "latency regex '(' is not a valid regular expression"),
    (["search", "--latency-precision", "int4"], "latency_precision='int4' is not one of fp32, int8"),
    (["search", "--latency-runs", "3"], "latency-runs=3 must be an integer >= 5"),
    (["search", "--latency-warmup", "-1"], "latency-warmup=-1"),
    (["search", "--latency-max-cv", "0"], "latency-max-cv=0.0"),
    (["search", "--latency-round-gap", "11"], "latency-round-gap=11.0 must be a number of seconds in [0, 10]"),
    (["search", "--latency-pin-core", "4096"], "latency-pin-core=4096 is not one of"),
    (["search", "--device", "adb", "--delegate", "tpu"], "delegate='tpu' is not one of"),
    (
        ["search", "--device", "adb", "--adb", "/nonexistent/adb"],
        "device 'adb' cannot be used: adb: '/nonexistent/adb' not found",
    ),
    (["search", "--width", "5"], "width=5 must lie in [0.1, 2.0]"),
    (["search", "--stem-stride", "3"], "stem-stride=3 must be 1 or 2"),
    (["search", "--trial-timeout", "0"], "trial-timeout-s=0.0"),
    (["search", "--trials-per-worker", "0"], "trials-per-worker=0"),
    (["search", "--device-timeout", "0"], "device-timeout-s=0.0"),
    (["search", "--dataset", "imagenet16"], "dataset='imagenet16' exists only as NAS-Bench-201's table"),
    (["search", "--space", "nb201"], "takes its latencies from a table"),
    (["search", "--device", "table:{table}:pixel3"], "use it with --space nb201"),
    (["search", "--space", "nb201", "--device", "table:/no.csv:pixel3"], "latency table '/no.csv' does not exist"),
    (["search", "--space", "nb201", "--device", "table:{table}:tpu"], "has no column 'tpu'; its latency columns: pixel3"),
    (["search", "--space", "nb201", "--device", "table:{bad_table}:pixel3"], "has no 'arch' column"),
    (["search", "--space", "nb201", "--device", "table:{table}"], "must be table:FILE:COLUMN"),
    (["search", "--space", "nb201", "--device", "table:{table}:pixel3"], "lacks 15624 of the 15625 NAS-Bench-201 cells"),
    (["front", "--storage", "sqlite:////missing/dir/x.db"], "storage 'sqlite:////missing/dir/x.db' does not exist"),
    (["retrain", "--arch", "mnasnet-small", "--epochs", "3", "--warmup-epochs", "5"], "warmup-epochs=5 must be >= 0 and less"),
    (["retrain", "--arch", "mnasnet-small", "--cutout", "40"], "cutout=40 must be a side in pixels"),
    (["retrain", "--arch", "mnasnet-small", "--lr", "0"], "lr=0.0 must lie in (0, 10]"),
    (["retrain", "--arch", "mnasnet-small", "--dropout", "1"], "dropout=1.0 must lie in [0, 1)"),
    (["retrain", "--arch", "mnasnet-small", "--ema-decay", "1"], "ema-decay=1.0 must lie in [0, 1)"),
    (["retrain", "--arch", "mnasnet-small", "--label-smoothing", "-0.1"], "label-smoothing=-0.1 must lie in [0, 1)"),
    (["retrain", "--arch", "mnasnet-small", "--weight-decay", "-1"], "weight-decay=-1.0 must lie in [0, 0.1]"),
    (["retrain", "--arch", "mnasnet-small", "--batch-size", "0"], "batch-size=0 must be an integer >= 1"),
    (["retrain", "--arch", "mnasnet-small", "--val-images", "-1"], "val-images=-1 must be an integer >= 0"),
    (["retrain", "--arch", "mnasnet-small", "--train-images", "10"], "train-images=10 must be an integer >= 128"),
    (["retrain", "--arch", "mnasnet-small", "--dataset", "mnist"], "dataset='mnist' is not one of cifar10, cifar100"),
    (["retrain", "--arch", "mnasnet-small", "--arch", "mnasnet-a1", "--out", "x"], "--out names one folder"),
    (["retrain", "--study", "never-ran", "--front", "--top", "0"], "top=0 must be at least 1"),
    (["retrain", "--study", "never-ran"], "study 'never-ran' does not exist"),
    (["retrain", "--front"], "study 'mnasnet-cifar10' does not exist"),
    (["retrain", "--arch", "mnasnet-small", "--data-dir", "/no-dir"], "data directory '/no-dir' does not exist"),
    (["compare", "--arch", "mnasnet-small", "--references", "resnet50"], "arch 'resnet50' is not a valid architecture"),
    (["compare", "--arch", "mnasnet-small", "--device", "tpu"], "device='tpu' is not one of"),
    (["compare", "--study", "never-ran"], "say what to take from the study: --trial N or --front"),
    # a named study anchors a comparison of references alone (its data set, its compare.json): it must exist
    (["compare", "--study", "never-ran", "--references", "mobilenetv2-0.5"], "study 'never-ran' does not exist"),
    (["retrain", "--study", "never-ran", "--arch", "mnasnet-small"], "study 'never-ran' does not exist"),
    (["export", "--arch", "mnasnet-small", "--device", "cmd:true"], "has no {model} placeholder"),
    (["export", "--arch", "mnasnet-small", "--latency-runs", "3"], "latency-runs=3 must be an integer >= 5"),
    (["compare", "--arch", "mnasnet-small", "--latency-threads", "0"], "latency-threads=0 must be an integer >= 1"),
    (["dashboard", "--study", "never-ran", "--port", "70000"], "port=70000 must be in 1..65535"),
    (["proxy-check", "--archs", "-1"], "archs=-1: nothing to check"),
    (["proxy-check", "--long-epochs", "0"], "long-epochs=0 must be at least 1"),
    (["proxy-check", "--trial-timeout", "0"], "trial-timeout-s=0.0 must be a positive number"),
    (["calibrate", "--target-ms", "0"], "target-ms=0.0 must be a positive number"),
    (["calibrate", "--references", "resnet50"], "reference 'resnet50' is unknown"),
    (["calibrate", "--input-size", "4"], "input-size=4 must be in 8..1024"),
    (["calibrate", "--input-size", "224", "--references", "mobilevit-xxs"], "no reference fits input-size=224: mobilevit-xxs"),
    (["calibrate", "--device", "cmd:true"], "has no {model} placeholder"),
    (["calibrate", "--device", "adb", "--adb", "/nonexistent/adb"], "device 'adb' cannot be used: adb: '/nonexistent/adb'"),
    (["latency-fit", "--samples", "-3"], "samples=-3 must be >= 0"),
    (["latency-fit", "--runs-dir", "{empty}"], "0 measured architectures are too few"),
]


@pytest.fixture
def bad_inputs(tmp_path, cifar_dir):
    """Folders and files that look like input but are not: {name} placeholders in BAD."""
    empty = tmp_path / "empty"
    empty.mkdir()
    truncated = tmp_path / "truncated"
    shutil.copytree(cifar_dir / "cifar-10-batches-bin", truncated / "cifar-10-batches-bin")
    batch = truncated / "cifar-10-batches-bin" / "data_batch_1.bin"
    batch.write_bytes(batch.read_bytes()[:-1])
    foreign = tmp_path / "foreign" / "cifar-10-batches-py"
    foreign.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (foreign / name).write_text("these are not images\n")
    toml = tmp_path / "bad.toml"
    toml.write_text('trials = "many"\n')
    table = tmp_path / "latency.csv"  # one cell that is not in NAS-Bench-201's accuracy table's notation
    table.write_text("index,arch,pixel3\n0,|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|,1.5\n")
    bad_table = tmp_path / "bad.csv"
    bad_table.write_text("index,cell,pixel3\n0,x,1.0\n")
    return {
        "empty": empty,
        "truncated": truncated,
        "foreign": foreign.parent,
        "bad_type_toml": toml,
        "table": table,
        "bad_table": bad_table,
    }


def _run_in_this_process(args, capsys) -> tuple[int, str]:
    """`nas ARGS` as `main` runs it: (exit code, stderr), without the seconds of a new process's imports,
    for the commands that run no TensorFlow here (those point file descriptor 2 elsewhere: a process
    of their own)."""
    from nas.cli import main

    try:
        code = main(args)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(args, message, tmp_path, cifar_dir, bad_inputs, monkeypatch, capsys):
    from nas.cli import BY_NAME

    args = [a.format(**bad_inputs) if "{" in a and "{model}" not in a else a for a in args]
    if args[0] == "search" and "--data-dir" not in args:
        args = [*args, "--data-dir", str(cifar_dir)]
    runs_flag = [] if "--runs-dir" in args or args[0] == "frobnicate" else ["--runs-dir", str(tmp_path / "runs")]
    monkeypatch.chdir(tmp_path)
    if args[0] in BY_NAME and not BY_NAME[args[0]].in_process_tensorflow:
        code, stderr = _run_in_this_process([*args, *runs_flag], capsys)
    else:
        command = [sys.executable, "-m", "nas.cli", *args, *runs_flag]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        code, stderr = result.returncode, result.stderr
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "runs" / "never-ran").exists()
    assert not Path("/missing").exists()  # a command that reads creates nothing


def test_bad_input_in_a_process_of_its_own_is_one_line_exit_2(tmp_path):
    """What the in-process rows stand for: a real `nas` process, its exit code and its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "nas.cli", "search", "--target-ms", "0", "--runs-dir", str(tmp_path / "runs")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.strip() == "nas: error: target-ms=0.0 must be a positive number"


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
    assert (loaded.target_ms, loaded.reward_alpha, loaded.reward_beta, loaded.trials, loaded.strategy) == (
        75,
        -0.1,
        -0.07,
        9,
        "nsga2",
    )
    hard = load_config(overrides={"constraint": "hard", "target_ms": 2.0})
    assert (hard.reward_alpha, hard.reward_beta, hard.latency_limit_ms) == (0.0, -1.0, 4.0)


def test_an_error_of_many_lines_is_reported_by_its_first():
    """Converter, runtime and database errors run to pages; summaries, failure reasons and cards keep one line,
    and an error without a message still says what kind it was."""
    from search_spaces.errors import error_line

    long = RuntimeError("\n  tensor 3 has no buffer\nStack trace:\n  frame 1\n  frame 2\n")
    assert error_line(long) == "tensor 3 has no buffer"
    assert error_line(long, typed=True) == "RuntimeError: tensor 3 has no buffer"
    assert error_line(MemoryError()) == error_line(MemoryError(), typed=True) == "MemoryError"
