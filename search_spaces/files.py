"""Writing files so that a kill never leaves half of one: every file the project writes goes
through `atomic_path` (write beside the target, flush to disk, rename over it). Reading JSON the
one way (`read_json`, `read_json_store`): a damaged file is never silently taken for an empty one.

It lives in the bottom package, which every other imports and which imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str, *, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside `path`; when the block ends without an exception, the file
    written there replaces `path` in one rename. On an exception the temporary file is removed
    and `path` is left as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the data reaches the disk before the name does
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; these are ordinary files
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text_atomic(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)


class Busy(ValueError):
    """Another process holds a lock that is not waited for; the message says what it is doing."""


@contextlib.contextmanager
def locked(path: str, *, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if missing) for the block. With `busy`,
    do not wait: raise `Busy(busy)` at once when another process holds it. The kernel releases it
    when its holder dies, so a killed process never leaves a stale lock."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
        except BlockingIOError:
            raise Busy(busy) from None
        yield


class DamagedFile(ValueError):
    """A file that should hold JSON and does not; the message names it and says what to do."""


def read_json(path: str, default=None):
    """The JSON document at `path`, or `default` when there is no such file. A damaged file raises
    `DamagedFile` (one line naming it) and is left as it is: results of hours are never replaced."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFile(f"{path} is damaged (not JSON: {error}); move it aside to start a new one") from None


def read_json_store(path: str, default):
    """A store many writers add measurements to (latency cache, calibrations): as `read_json`, but a
    damaged file is moved aside, with a warning naming where, and reading starts from `default`, so
    the next write cannot wipe what the file held."""
    try:
        return read_json(path, default)
    except DamagedFile:
        aside = f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):  # another process moved it first
            os.replace(path, aside)
            logging.getLogger(__name__).warning("%s was damaged (not JSON): moved aside to %s; starting a new one", path, aside)
        return default


# The names of the files runs are made of, in one place: every module takes them from here.
STUDY_DB = "study.db"  # runs/<study>/: the Optuna study (SQLite)
TRIALS_CSV = "trials.csv"  # runs/<study>/: every trial's figures
COMPARE_JSON = "compare.json"  # runs/<study>/: nas compare's records
WORKER_LOG = "worker.log"  # runs/<study>/ (or runs/): the workers' native output
NATIVE_LOG = "nas.log"  # runs/: the command's own native output (TensorFlow, oneDNN, LiteRT)
LATENCY_CACHE = "latency_cache.json"  # runs/: latencies across studies
CALIBRATION = "calibration.json"  # runs/: nas calibrate's measurements
PROVENANCE = "provenance.json"  # a retrained model's folder: where it came from
MODEL_CARD = "model_card"  # a retrained model's folder: .json and .md


def load_provenance(workdir: str) -> list[dict]:
    """Where a retrained model came from (a list: one model may be chosen from several places)."""
    document = read_json(os.path.join(workdir, PROVENANCE), [])
    return document if isinstance(document, list) else [document] if document else []


def code_version() -> str:
    """Which code produced a result: the package version, and the git commit (with '+dirty' for
    uncommitted changes) when running from a checkout. Recorded with every long run's figures."""
    import importlib.metadata
    import subprocess

    try:
        version = importlib.metadata.version("nas")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return version
    return f"{version}+git{commit}" + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
