"""A command that runs TensorFlow in its own process keeps the terminal for its own lines: the native
libraries' start-up chatter (TensorFlow, oneDNN, LiteRT, absl) goes to runs/nas.log instead. (Worker
processes send theirs to the study's worker.log: `nas.worker`.)"""

from __future__ import annotations

import logging
import os
import sys

from search_spaces.files import NATIVE_LOG


def redirect_native_output(runs_dir: str) -> None:
    """Point file descriptor 2 (where C++ libraries write) at runs/nas.log, keeping Python's
    sys.stderr, and so this command's own messages, on the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        os.makedirs(runs_dir, exist_ok=True)
        log_fd = os.open(os.path.join(runs_dir, NATIVE_LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return  # an unwritable log is no reason to fail the command: the chatter stays visible
    terminal = os.dup(2)
    sys.stderr.flush()
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    os.dup2(log_fd, 2)
    os.close(log_fd)
    for name in ("absl", "tensorflow", "keras"):  # their Python warnings are the same chatter
        logging.getLogger(name).setLevel(logging.ERROR)
