"""scripts/train_default.py's face pool: the file that carries a recipe's training faces to
a machine without ../shared/data (a GPU machine), and back into the same face sets."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from detector import sbi
from detector.training import FaceSet
from tests.detector.test_training import faces_with_blends
from tests.media import astronaut

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
    got_train, got_val, fresh = train_default.load_pool(path, train_set.x.shape[1])
    assert fresh is None

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


def test_a_pool_carries_the_real_faces_and_landmarks_for_fresh_blends(train_default, tmp_path):
    faces = faces_with_blends(3, seed=1, prefix="tr")
    reals = faces.subset(faces.y == 0)
    points = [None, np.full((68, 2), 30, np.int32), None]
    fresh = sbi.FreshBlends(reals, seed=9, points=points)
    path = tmp_path / "pool.npz"
    train_default.save_pool(path, reals, faces, fresh)
    _, _, got = train_default.load_pool(path, reals.x.shape[1])

    assert got.seed == 9 and len(got) == 3
    assert got.real.groups.tolist() == reals.groups.tolist()
    assert got.points[0] is None and got.points[2] is None
    assert np.array_equal(got.points[1], points[1])
    # On the far side it blends without searching for landmarks again.
    assert got(0).y.tolist() == [1, 1, 1]


def test_false_alarms_count_real_faces_by_the_verdict_rules(train_default):
    class Scored:  # only the counting is under test here: the scores are given
        meta = SimpleNamespace(threshold=0.5, uncertain_margin=0.1)

        def predict(self, x):
            return np.array([0.1, 0.45, 0.55, 0.7, 0.9, 0.3])

    sources = np.array(["small"] * 3 + ["large"] * 3)
    faces = FaceSet(np.zeros((6, 4, 4, 3), np.uint8), np.zeros(6, int), sources, sources)
    r = train_default.false_alarms(Scored(), {"photos": faces})["photos"]
    # Fake above 0.6 (0.7, 0.9), Real below 0.4 (0.1, 0.3), Uncertain in between.
    assert (r["n"], r["fake"], r["uncertain"], r["real"]) == (6, 2 / 6, 2 / 6, 2 / 6)
    assert r["above_threshold"] == 3 / 6 and r["median_score"] == pytest.approx(0.5)
    assert r["per_source"]["small"]["fake"] == 0 and r["per_source"]["small"]["real"] == 1 / 3
    assert r["per_source"]["large"]["fake"] == 2 / 3


def test_every_face_of_a_photo_is_a_real_face_sized_by_its_box(train_default, tmp_path):
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    faces = train_default.every_face([path], 71)
    assert faces.x.shape == (1, 71, 71, 3) and faces.y.tolist() == [0]
    assert faces.sources[0] in (
        "images:photos, face under 80 px",
        "images:photos, face 80 px and over",
    )
    assert faces.groups.tolist() == ["photos/astronaut.png"]


def test_a_run_records_the_command_it_was_run_with(train_default, monkeypatch, tmp_path):
    # The interpreter relative to the working directory, the script's own arguments, and
    # the Keras backend when one was chosen (a GPU run on JAX says so).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_default.sys, "executable", str(tmp_path / ".venv/bin/python"))
    monkeypatch.setattr(train_default.sys, "argv", ["scripts/train_default.py", "--pool", "a b"])
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    expected = "PYTHONPATH=. .venv/bin/python scripts/train_default.py --pool 'a b'"
    assert train_default.invocation() == expected
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(train_default.sys, "executable", "/usr/bin/python3")
    assert train_default.invocation() == (
        "KERAS_BACKEND=jax PYTHONPATH=. python3 scripts/train_default.py --pool 'a b'"
    )


def test_two_folds_scores_each_clip_by_its_mean_and_each_method_against_the_originals():
    spec = importlib.util.spec_from_file_location("two_folds", SCRIPT.parent / "two_folds.py")
    two_folds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(two_folds)
    sources = ["ffpp:original"] * 4 + ["ffpp:Deepfakes"] * 2 + ["ffpp:FaceSwap"] * 2
    videos = ["o1", "o1", "o2", "o2", "d1", "d1", "s1", "s1"]
    data = FaceSet(
        np.zeros((8, 4, 4, 3), np.uint8),
        np.array([0, 0, 0, 0, 1, 1, 1, 1]),
        np.array(sources),
        np.array(["ffpp/469"] * 8),
        np.array(videos),
    )
    scores = np.array([0.1, 0.3, 0.6, 0.8, 0.9, 0.7, 0.2, 0.4])
    rows = two_folds.fold_rows(data, scores)
    assert list(rows) == ["per face", "per video", "Deepfakes, per face", "FaceSwap, per face"]
    vy, vs, clips = rows["per video"]
    assert clips.tolist() == ["d1", "o1", "o2", "s1"]
    assert vy.tolist() == [1, 0, 0, 1] and vs == pytest.approx([0.8, 0.2, 0.7, 0.3])
    y, s, c = rows["FaceSwap, per face"]
    assert y.tolist() == [0, 0, 0, 0, 1, 1] and s.tolist() == [0.1, 0.3, 0.6, 0.8, 0.2, 0.4]
    assert c.tolist() == ["o1", "o1", "o2", "o2", "s1", "s1"]
