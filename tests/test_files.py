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
