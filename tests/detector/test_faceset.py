"""Face datasets on disk: spilled while extracting, mapped when loaded, viewed when split.

The full FaceForensics++ at 50 faces per clip is 67 GB of 299 px crops, so nothing on the
way from extraction to training may hold, or copy, the whole set. These tests check the
structure that guarantees it (what is mapped, what is a view) and that every path gives
exactly the crops an in-memory set would. `bench/face_memory.py` measures the memory.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from detector import training
from detector.faceset import FaceRows, FaceSet, FaceWriter, load_npz
from detector.model import ModelBundle
from detector.training import TrainConfig, train
from tests.detector.test_training import SIZE, faces_with_blends, fast_batchnorm_recalibration

rng = np.random.default_rng(0)


def crops(n: int, size: int = 6) -> np.ndarray:
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def face_set(x: np.ndarray, prefix: str = "g") -> FaceSet:
    n = len(x)
    return FaceSet(
        x,
        np.arange(n) % 2,
        np.array([f"src{i % 3}" for i in range(n)]),
        np.array([f"{prefix}/{i // 2}" for i in range(n)]),
        np.array([f"{prefix}/clip{i // 2}.mp4" for i in range(n)]),
    )


# ---- FaceRows: numpy's indexing, without the copy ---------------------------------------


def test_face_rows_index_like_the_array_they_stand_for():
    a, b = crops(7), crops(5)
    want = np.concatenate([a[[6, 0, 3, 3]], b[1:4], a[:2]])
    rows = FaceRows.concat(
        [FaceRows.of(a).take([6, 0, 3, 3]), FaceRows.of(b).take(slice(1, 4)), a[:2]]
    )
    # Every kind of index numpy takes gives what it would give on the joined array.
    assert rows.shape == want.shape and len(rows) == len(want) and rows.dtype == np.uint8
    assert rows.nbytes == want.nbytes and rows.ndim == 4
    for i in (0, 3, -1, np.int64(5)):
        assert np.array_equal(rows[i], want[i])
    mask = np.arange(len(want)) % 3 == 0
    for key in (slice(None), slice(2, 7), slice(None, None, -2), mask, [8, 0, 4, 4, 1]):
        assert np.array_equal(rows[key], want[key])
    assert np.array_equal(np.asarray(rows), want)
    assert np.array_equal(np.asarray(rows, np.float32), want.astype(np.float32))
    assert np.array_equal(rows.astype(int), want.astype(int))
    assert all(np.array_equal(r, w) for r, w in zip(rows, want, strict=True))
    # A view of a view points at the original arrays: a and b, each listed once.
    sub = rows.take(mask)
    assert np.array_equal(sub[:], want[mask])
    assert len(rows.parts) == 3 and rows.parts[0] is a and rows.parts[1] is b


def test_face_rows_refuse_crops_of_another_size():
    with pytest.raises(ValueError, match="cannot join"):
        FaceRows.concat([crops(2, 6), crops(2, 8)])


# ---- FaceWriter: crops go to disk as they are made --------------------------------------


def test_the_writer_maps_what_it_wrote_and_refuses_a_crop_of_another_shape():
    x = crops(9)
    writer = FaceWriter()
    for c in x:
        writer.add(c)
    with pytest.raises(ValueError, match="crop of 8 px in a set of 6 px"):
        writer.add(crops(1, 8)[0])
    with pytest.raises(ValueError, match="s x s x 3"):
        writer.add(np.zeros((6, 6), np.uint8))
    got = writer.array()
    assert isinstance(got, np.memmap) and not got.flags.writeable
    assert np.array_equal(got, x)
    # No crops: an empty array of the right shape, not an error.
    assert FaceWriter(5).array().shape == (0, 5, 5, 3)


def test_extraction_spills_its_crops_to_a_mapped_file(tmp_path):
    import cv2

    root = tmp_path / "set"
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
    x = crops(6, 40)
    for i, c in enumerate(x):
        cv2.imwrite(str(root / ("real" if i % 2 else "fake") / f"{i}.png"), c[..., ::-1].copy())
    faces = training.extract_faces(training.folder_items(root), 40, detect_images=False)
    assert isinstance(faces.x, np.memmap) and faces.x.shape == (6, 40, 40, 3)
    # Items come real first, then fake; each crop is its image (PNG: lossless).
    order = [1, 3, 5, 0, 2, 4]
    assert np.array_equal(faces.x, x[order])
    assert faces.y.tolist() == [0, 0, 0, 1, 1, 1]


# ---- .npz files: mapped on load, streamed on save ---------------------------------------


def test_a_saved_set_loads_mapped_and_splits_into_views(tmp_path):
    data = face_set(crops(12))
    path = data.save(tmp_path / "faces")  # like np.savez, .npz is added
    assert path == tmp_path / "faces.npz"
    assert not list(tmp_path.glob(".*partial"))
    loaded = FaceSet.load(path)
    assert isinstance(loaded.x, np.memmap)
    assert np.array_equal(loaded.x, data.x)
    for a in ("y", "sources", "groups", "videos"):
        assert getattr(loaded, a).tolist() == getattr(data, a).tolist()
    # A split is row numbers into the mapped file, not a copy of it.
    train_part = loaded.subset(loaded.y == 0)
    assert isinstance(train_part.x, FaceRows) and train_part.x.parts[0] is loaded.x
    assert np.array_equal(train_part.x[:], data.x[data.y == 0])
    # Joining mapped sets (two files, or a file and in-memory blends) copies nothing either.
    other = FaceSet.load(face_set(crops(4), "h").save(tmp_path / "other.npz"))
    extra = face_set(crops(3), "m")
    joined = FaceSet.concat([train_part, other, extra])
    assert isinstance(joined.x, FaceRows)
    assert all(p is q for p, q in zip(joined.x.parts, [loaded.x, other.x, extra.x], strict=True))
    assert np.array_equal(joined.x[:], np.concatenate([data.x[data.y == 0], other.x, extra.x]))
    assert joined.groups.tolist() == [
        *data.groups[data.y == 0].tolist(),
        *other.groups.tolist(),
        *extra.groups.tolist(),
    ]


def test_a_set_of_views_saves_as_the_crops_it_stands_for(tmp_path):
    data = FaceSet.load(face_set(crops(10)).save(tmp_path / "a.npz"))
    picked = FaceSet.concat([data.subset(np.array([9, 2, 2])), data.subset(data.y == 1)])
    again = FaceSet.load(picked.save(tmp_path / "b.npz"))
    assert np.array_equal(again.x, picked.x[:])
    assert again.groups.tolist() == picked.groups.tolist()
    # The file is an ordinary npz: numpy alone reads it.
    with np.load(tmp_path / "b.npz") as z:
        assert np.array_equal(z["x"], picked.x[:])
        assert z["videos"].tolist() == picked.videos.tolist()
    with zipfile.ZipFile(tmp_path / "b.npz") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_it_reads_face_sets_written_by_numpy_itself(tmp_path):
    x = crops(5)
    fields = dict(y=np.zeros(5, int), sources=np.array(["s"] * 5), groups=np.array(["g"] * 5))
    # np.savez (what earlier versions of Verity wrote, without videos): mapped.
    np.savez(tmp_path / "plain.npz", x=x, **fields)
    plain = FaceSet.load(tmp_path / "plain.npz")
    assert isinstance(plain.x, np.memmap) and np.array_equal(plain.x, x)
    assert plain.videos is None and plain.video_ids.tolist() == ["g"] * 5
    # np.savez_compressed: the bytes are not in the file as they are in memory, so read whole.
    np.savez_compressed(tmp_path / "small.npz", x=x, **fields)
    small = FaceSet.load(tmp_path / "small.npz")
    assert not isinstance(small.x, np.memmap) and np.array_equal(small.x, x)
    # An empty set loads as an empty array of crops.
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 6, 6, 3), np.uint8), **fields)
    assert load_npz(tmp_path / "empty.npz")["x"].shape == (0, 6, 6, 3)


def test_saving_over_the_file_a_set_is_mapped_from_keeps_both_whole(tmp_path):
    path = face_set(crops(6)).save(tmp_path / "f.npz")
    loaded = FaceSet.load(path)
    before = np.array(loaded.x)
    # Written beside and renamed: the old mapping still reads the old file's bytes.
    smaller = loaded.subset(np.array([5, 0]))
    smaller.save(path)
    assert np.array_equal(loaded.x, before)
    assert np.array_equal(FaceSet.load(path).x, before[[5, 0]])


# ---- scoring and training on mapped sets -------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bundle() -> ModelBundle:
    import keras

    from detector.model import BundleMeta, build_xception

    keras.utils.set_random_seed(0)
    meta = BundleMeta(name="tiny", version="0", input_size=SIZE, threshold=0.5)
    return ModelBundle(meta, build_xception(SIZE))


def test_scoring_reads_a_chunk_at_a_time_and_gives_the_same_scores(tmp_path, tiny_bundle):
    data = face_set(crops(11, SIZE))
    mapped = FaceSet.load(data.save(tmp_path / "f.npz"))
    view = mapped.subset(np.arange(11)[::-1])
    whole = tiny_bundle.predict(data.x)
    assert np.allclose(tiny_bundle.predict(mapped.x, chunk=4), whole, atol=1e-6)
    assert np.allclose(tiny_bundle.predict(view.x, chunk=3), whole[::-1], atol=1e-6)


def test_a_run_on_a_mapped_set_trains_on_the_batches_an_in_memory_run_would(tmp_path):
    import keras

    blends = faces_with_blends(8, seed=1, prefix="tr")  # its blends are mapped
    data = FaceSet(np.asarray(blends.x), blends.y, blends.sources, blends.groups)
    val_set = faces_with_blends(2, seed=2, prefix="va")
    loaded = FaceSet.load(data.save(tmp_path / "train.npz"))
    mapped = FaceSet.concat([loaded.subset(loaded.y == 0), loaded.subset(loaded.y == 1)])
    in_memory = FaceSet.concat([data.subset(data.y == 0), data.subset(data.y == 1)])
    assert isinstance(mapped.x, FaceRows) and isinstance(in_memory.x, np.ndarray)

    def batches(train_set: FaceSet, work) -> list[np.ndarray]:
        seen: list[np.ndarray] = []
        real_step = keras.Model.train_on_batch

        def recording_step(self, x, y=None, **kw):
            seen.append(np.array(x))
            return real_step(self, x, y, **kw)

        config = TrainConfig(input_size=SIZE, epochs=1, batch_size=8, steps_per_epoch=2, seed=3)
        with fast_batchnorm_recalibration(), pytest.MonkeyPatch.context() as mp:
            mp.setattr(keras.Model, "train_on_batch", recording_step)
            bundle, _ = train(train_set, val_set, config, work)
        assert bundle.meta.threshold is not None
        return seen

    # Same seed, same faces in the same order: the same augmented batches, bit for bit.
    got, want = batches(mapped, tmp_path / "a"), batches(in_memory, tmp_path / "b")
    assert len(got) == len(want) == 2
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_self_blends_must_number_one_per_real_face():
    from detector.sbi import _as_fakes

    reals = FaceSet(
        np.zeros((2, 8, 8, 3), np.uint8),
        np.zeros(2, int),
        np.array(["faces:a", "faces:a"]),
        np.array(["g0", "g1"]),
    )
    with pytest.raises(ValueError, match="1 blends for 2 real faces"):
        _as_fakes(reals, [np.zeros((8, 8, 3), np.uint8)])
    assert len(_as_fakes(reals, [np.zeros((8, 8, 3), np.uint8)] * 2)) == 2
