"""Shared fixtures. Real CIFAR-10 comes from ../shared/cifar (official formats, a --limit subset);
downloads are disabled for every test so none can hang on a machine without network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import temporary_postgres

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
    """Real CIFAR-100, both formats: the first 10,000 training and 2,000 test images (its fixed shuffled
    order): enough for a short search to learn something of 100 classes."""
    out = tmp_path_factory.mktemp("cifar100")
    subprocess.run(
        [sys.executable, str(MATERIALIZE), str(out), "--dataset", "cifar100", "--limit", "2000"], check=True, capture_output=True
    )
    return out


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory) -> Path:
    """Real CIFAR-10, first 1000 images of every batch: 5000 train, 1000 test, both formats."""
    return _materialize(tmp_path_factory.mktemp("cifar"), 1000)


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def postgres_url():
    try:
        with temporary_postgres() as url:
            yield url
    except FileNotFoundError as error:
        pytest.fail(str(error))
