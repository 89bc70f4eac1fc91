"""scripts/train_default.py's face pool: the file that carries a recipe's training faces to
a machine without ../shared/data (a GPU machine), and back into the same face sets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from detector.training import FaceSet
from tests.detector.test_training import faces_with_blends

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_default.py"


@pytest.fixture(scope="module")
def train_default():
    spec = importlib.util.spec_from_file_location("train_default", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_pool_round_trips_labels_and_groups_exactly_and_faces_nearly(train_default, tmp_path):
    train_set = faces_with_blends(6, seed=1, prefix="tr")
    val_set = faces_with_blends(3, seed=2, prefix="va")
    val_set = FaceSet(
        val_set.x, val_set.y, val_set.sources, val_set.groups, np.array(["clip.mp4"] * 6)
    )
    path = tmp_path / "pool.npz"
    train_default.save_pool(path, train_set, val_set)
    got_train, got_val = train_default.load_pool(path, train_set.x.shape[1])

    for want, got in ((train_set, got_train), (val_set, got_val)):
        assert got.x.shape == want.x.shape and got.x.dtype == np.uint8
        for field in ("y", "sources", "groups", "video_ids"):
            assert getattr(got, field).tolist() == getattr(want, field).tolist()
        # JPEG at quality 95 without chroma subsampling: close to the original, in RGB order
        # (a channel swap would move the mean difference by tens of levels).
        diff = np.abs(got.x.astype(int) - want.x.astype(int))
        assert diff.mean() < 2.0
    assert got_train.fingerprint() == train_set.fingerprint()
    # Far smaller than the raw faces.
    assert path.stat().st_size < (train_set.x.nbytes + val_set.x.nbytes) / 3


def test_a_pool_of_another_input_size_is_refused(train_default, tmp_path):
    faces = faces_with_blends(2, seed=1, prefix="tr")
    path = tmp_path / "pool.npz"
    train_default.save_pool(path, faces, faces)
    with pytest.raises(ValueError, match="71 px faces, not 128 px"):
        train_default.load_pool(path, 128)
