"""Helpers of several test files (and of bench/chaos.py): a study on disk as a search leaves it (no
training), the `nas` command, and a real PostgreSQL server of one's own."""

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

from results.record import SETTINGS_ATTR


def study_with(tmp_path, *, dataset="cifar10", space="mnasnet", trials=()):
    """A study on disk as a search leaves it: settings and finished trials (no training)."""
    runs = tmp_path / "runs"
    (runs / "s").mkdir(parents=True)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{runs}/s/study.db", directions=["maximize", "minimize"])
    study.set_user_attr(SETTINGS_ATTR, {"dataset": dataset, "space": space, "target_ms": 1.0, "alpha": -0.07, "beta": -0.07})
    distribution = optuna.distributions.CategoricalDistribution(["a"])
    for record in trials:
        trial = optuna.trial.create_trial(
            params={"x": "a"},
            distributions={"x": distribution},
            values=[record.accuracy, record.latency_ms],
            user_attrs=record.to_user_attrs(),
        )
        study.add_trial(trial)
    return runs, study


def run_nas(*args, cwd, timeout=900, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "nas.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs
    )


#: the retraining tests' architecture, and where nothing needs to learn (comparison plumbing,
#: interruption) the least that runs the recipe
RETRAIN_ARCH = "mnasnet-small"
QUICK_RECIPE = [
    "--epochs", "2", "--train-images", "1024", "--val-images", "500", "--batch-size", "64", "--lr", "0.05",
    "--ema-bn-batches", "4",
]  # fmt: skip


def epochs_done(workdir) -> int:
    from trainers.full import CHECKPOINT, load_checkpoint

    loaded = load_checkpoint(str(workdir / CHECKPOINT))
    return loaded[0]["epochs_done"] if loaded else 0


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError("PostgreSQL is not installed (tests/install-system-deps.sh installs Debian's postgresql)")
    return found[-1]


def _as_postgres(command: list[str]) -> list[str]:
    # the server refuses to run as root; Debian's package creates the postgres user
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def temporary_postgres():
    """A PostgreSQL server on a free local port with an empty database; its URL. Gone afterwards."""
    # pytest's own tmp folders are private to root; the server runs as the postgres user
    data = Path(tempfile.mkdtemp(prefix="nas-pg-")) / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data.parent, "postgres")
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        initdb = [_pg_bin("initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"]
        subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
        start = [_pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"]
        subprocess.run(_as_postgres(start), check=True, capture_output=True)
        createdb = [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nas"]
        subprocess.run(_as_postgres(createdb), check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/nas"  # the plain form of Optuna's documentation
    finally:
        with contextlib.suppress(FileNotFoundError):
            stop = [_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
            subprocess.run(_as_postgres(stop), capture_output=True)
        shutil.rmtree(data.parent, ignore_errors=True)
