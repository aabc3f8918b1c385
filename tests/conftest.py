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


# -- where the suite's CPU goes -------------------------------------------------------------------
# Wall times move with the machine's load; CPU seconds (this process and every child it waited for:
# the `nas` commands and their workers) say what a test costs on any machine.


_CPU_AT_START = pytest.StashKey[float]()


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[_CPU_AT_START] = _cpu_seconds()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "teardown" and _CPU_AT_START in item.stash:
        outcome.get_result().user_properties.append(("cpu_seconds", _cpu_seconds() - item.stash[_CPU_AT_START]))


def pytest_terminal_summary(terminalreporter):
    spent: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            cpu = dict(getattr(report, "user_properties", ())).get("cpu_seconds")
            if cpu is not None and getattr(report, "when", None) == "teardown":
                spent[report.nodeid] = cpu
    if not spent:
        return
    by_file: dict[str, float] = {}
    for nodeid, cpu in spent.items():
        path = nodeid.split("::")[0]
        by_file[path] = by_file.get(path, 0.0) + cpu
    write = terminalreporter.write_line
    terminalreporter.section("CPU seconds (tests and the processes they ran)")
    write(f"{sum(spent.values()):.0f} s in all; by file:")
    for path, cpu in sorted(by_file.items(), key=lambda item: -item[1])[:15]:
        write(f"{cpu:8.1f}  {path}")
    write("slowest tests (a module's shared set-up counts to its first test):")
    for nodeid, cpu in sorted(spent.items(), key=lambda item: -item[1])[:15]:
        write(f"{cpu:8.1f}  {nodeid}")
