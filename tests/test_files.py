"""Files are complete or absent: a kill while writing leaves the previous file whole."""

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_a_checkpoint_is_complete_or_absent(tmp_path, monkeypatch):
    """Weights, optimizer state and run state are one file: a run stopped while writing the next
    checkpoint finds the previous one whole, and no half file beside it."""
    import search_spaces.files
    from trainers import full

    path = str(tmp_path / full.CHECKPOINT)
    full.save_checkpoint(path, state={"epochs_done": 1}, arrays={"w_0": np.ones(3)})

    def dies(*args):  # the written file was about to replace the old one
        raise KeyboardInterrupt

    monkeypatch.setattr(search_spaces.files.os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        full.save_checkpoint(path, state={"epochs_done": 2}, arrays={"w_0": np.zeros(3)})
    monkeypatch.undo()
    state, arrays = full.load_checkpoint(path)
    assert state == {"epochs_done": 1} and np.array_equal(arrays["w_0"], np.ones(3))
    assert sorted(os.listdir(tmp_path)) == [full.CHECKPOINT]


def test_a_lock_not_waited_for_says_who_holds_it(tmp_path):
    from search_spaces.files import Busy, locked

    path = str(tmp_path / "x.lock")
    with locked(path), pytest.raises(Busy, match=r"^someone trains here$"), locked(path, busy="someone trains here"):
        pass  # another open file of the same path is another holder, as another process's would be
    with locked(path, busy="free again"):  # released with its block
        pass


def test_a_folder_another_process_trains_in_is_refused_at_once(tmp_path, cifar_dir):
    """Two trainings in one folder would write one checkpoint: the second `nas retrain` stops at once
    with one line and exit 2, and writes no checkpoint."""
    from helpers import RETRAIN_ARCH, run_nas

    from search_spaces.files import locked
    from trainers.full import CHECKPOINT, TRAINING_LOCK

    out = tmp_path / "model"
    out.mkdir()
    with locked(str(out / TRAINING_LOCK)):  # held here as the first training's process holds it
        result = run_nas(
            "retrain", "--arch", RETRAIN_ARCH, "--epochs", "1", "--data-dir", str(cifar_dir), "--out", str(out), cwd=tmp_path
        )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"nas: error: {out} is being trained by another process; wait for it to finish (its result is then reused)"
    ]
    assert not (out / CHECKPOINT).exists()
