"""Shared fixtures. Real CIFAR-10 comes from ../shared/cifar (official formats, a --limit subset);
downloads are disabled for every test so none can hang on a machine without network."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MATERIALIZE = Path(os.environ.get("NAS_CIFAR_PACK", REPO.parent / "shared" / "cifar")) / "materialize.py"


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    monkeypatch.setenv("NAS_NO_DOWNLOAD", "1")
    monkeypatch.delenv("NAS_DATA_DIR", raising=False)


def _materialize(out: Path, limit: int) -> Path:
    if not MATERIALIZE.is_file():
        pytest.fail(f"real CIFAR pack not found at {MATERIALIZE} (set NAS_CIFAR_PACK to the folder holding materialize.py)")
    subprocess.run([sys.executable, str(MATERIALIZE), str(out), "--limit", str(limit)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory) -> Path:
    """Real CIFAR-100, both formats: the first 1000 training and 200 test images (its fixed shuffled order)."""
    out = tmp_path_factory.mktemp("cifar100")
    subprocess.run(
        [sys.executable, str(MATERIALIZE), str(out), "--dataset", "cifar100", "--limit", "200"], check=True, capture_output=True
    )
    return out


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory) -> Path:
    """Real CIFAR-10, first 1000 images of every batch: 5000 train, 1000 test, both formats."""
    return _materialize(tmp_path_factory.mktemp("cifar"), 1000)


# -- PostgreSQL ---------------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL is not installed (tests/install-system-deps.sh installs Debian's postgresql)")
    return found[-1]


def _as_postgres(command: list[str]) -> list[str]:
    # the server refuses to run as root; Debian's package creates the postgres user
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def postgres_url():
    # pytest's own tmp folders are private to root; the server runs as the postgres user
    data = Path(tempfile.mkdtemp(prefix="nas-pg-")) / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data.parent, "postgres")
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        _as_postgres([_pg_bin("initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"]), check=True, capture_output=True
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    subprocess.run(
        _as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            _as_postgres([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nas"]),
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/nas"  # the plain form of Optuna's documentation
    finally:
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(data.parent, ignore_errors=True)
