"""The ONNX Runtime path: used only when it gives Keras's probabilities within 1e-3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector import runtime
from detector.errors import RuntimeUnavailable
from detector.faces import FaceDetector, square_crop
from detector.model import DEFAULT_BUNDLE, BundleMeta, ModelBundle, build_xception, preprocess
from tests.media import SHARED, astronaut

ROOT = Path(__file__).resolve().parents[2]


def face_crops(size: int) -> np.ndarray:
    """Real face crops as the pipeline makes them, plus the degradations clips carry."""
    img = astronaut()
    (box,) = FaceDetector("hog").detect(img)
    crops = [square_crop(img, box, size, scale=s) for s in (1.1, 1.3, 1.6)]
    crops.append(crops[1][:, ::-1])
    ok, jpeg = cv2.imencode(".jpg", crops[1], [cv2.IMWRITE_JPEG_QUALITY, 30])
    crops.append(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED))
    crops.append(cv2.GaussianBlur(crops[1], (5, 5), 2))
    folder = SHARED / "faces" / "mesonet" / "fake"
    if folder.exists():  # faces the model was trained on the like of, when present
        for f in sorted(folder.iterdir())[:10]:
            rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            crops.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(crops)


@pytest.fixture(scope="module")
def cache(shipped_onnx) -> Path:
    return runtime.cache_dir()


def test_it_gives_the_shipped_models_probabilities_within_1e_3(shipped_onnx, cache):
    keras = ModelBundle.load(DEFAULT_BUNDLE, runtime="keras")
    assert (shipped_onnx.runtime, keras.runtime) == ("onnx", "keras")
    # The trained, calibrated model: the same fake probability for every real crop.
    crops = face_crops(keras.input_size)
    a, b = keras.predict(crops), shipped_onnx.predict(crops)
    assert np.abs(a - b).max() <= 1e-3, np.abs(a - b).max()
    # Scores that differ between crops: the comparison is not between two constants.
    assert np.ptp(a) > 1e-3
    # The export was checked and its record kept beside it.
    record = cache / "onnx" / f"{runtime.bundle_key(DEFAULT_BUNDLE)}.json"
    assert json.loads(record.read_text())["max_abs_diff"] <= runtime.PARITY_TOLERANCE
    # Batches that are not a multiple of the batch size, and the empty batch.
    assert np.abs(shipped_onnx.predict(crops[:3]) - a[:3]).max() <= 1e-3
    assert shipped_onnx.predict(crops[:0]).shape == (0,)


def test_it_loads_a_verified_export_without_tensorflow(shipped_onnx, cache):
    code = (
        "import sys, json; from detector.model import ModelBundle;"
        "b = ModelBundle.load(None, runtime='auto'); b.warm_up();"
        "print(json.dumps([b.runtime, 'tensorflow' in sys.modules, 'keras' in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "VERITY_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["onnx", False, False]


def test_it_refuses_an_export_that_disagrees_with_keras(tmp_path, monkeypatch):
    path = tmp_path / "tiny"
    ModelBundle(BundleMeta(name="t", version="1", input_size=71), build_xception(71)).save(path)
    monkeypatch.setenv("VERITY_CACHE_DIR", str(tmp_path / "cache"))
    # No difference meets a negative tolerance (zero would not do: an untrained model's
    # two runtimes can agree exactly): the export must be refused.
    monkeypatch.setattr(runtime, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(RuntimeUnavailable, match="disagrees with Keras"):
        ModelBundle.load(path, runtime="onnx")
    # Nothing unverified is cached for a later process to trust.
    assert not list((tmp_path / "cache").glob("onnx/*.onnx"))


def test_a_crashed_export_child_means_keras_not_an_export_in_the_worker(tmp_path, monkeypatch):
    path = tmp_path / "tiny"
    ModelBundle(BundleMeta(name="t", version="1", input_size=71), build_xception(71)).save(path)
    monkeypatch.setenv("VERITY_CACHE_DIR", str(tmp_path / "cache"))
    # The child is killed as the kernel's OOM killer would kill it.
    monkeypatch.setattr(
        runtime, "EXPORT_COMMAND", [sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"]
    )
    with pytest.raises(RuntimeUnavailable, match="killed by signal 9"):
        ModelBundle.load(path, runtime="onnx")
    bundle = ModelBundle.load(path, runtime="auto")
    assert bundle.runtime == "keras"
    # The serving process did not export it itself after the child died.
    assert not list((tmp_path / "cache").glob("onnx/*"))


def test_it_falls_back_to_keras_when_onnx_is_unavailable(tmp_path, monkeypatch):
    path = tmp_path / "tiny"
    ModelBundle(BundleMeta(name="t", version="1", input_size=71), build_xception(71)).save(path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    bundle = ModelBundle.load(path, runtime="auto")
    assert bundle.runtime == "keras"
    assert bundle.predict(np.zeros((2, 71, 71, 3), np.uint8)).shape == (2,)
    with pytest.raises(RuntimeUnavailable, match="not installed"):
        ModelBundle.load(path, runtime="onnx")


def test_it_keys_the_cache_on_the_bundles_contents(tmp_path):
    path = tmp_path / "b"
    meta = BundleMeta(name="t", version="1", input_size=71)
    ModelBundle(meta, build_xception(71)).save(path)
    first = runtime.bundle_key(path)
    assert runtime.bundle_key(path) == first
    ModelBundle(meta, build_xception(71)).save(path)  # retrained: new weights, same folder
    assert runtime.bundle_key(path) != first


def test_it_preprocesses_exactly_as_keras_does():
    from keras.applications.xception import preprocess_input

    crops = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(preprocess(crops), preprocess_input(crops.astype("float32")))


def test_it_keeps_only_the_newest_exports(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.onnx").write_bytes(b"x")
        (tmp_path / f"{i}.json").write_text("{}")
        os.utime(tmp_path / f"{i}.onnx", (1000 + i, 1000 + i))
    runtime.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3.json", "3.onnx", "4.json", "4.onnx"]


def test_it_pre_exports_from_the_command_line_only_once(shipped_onnx, cache):
    exported = cache / "onnx" / f"{runtime.bundle_key(DEFAULT_BUNDLE)}.onnx"
    before = exported.stat().st_mtime_ns
    out = subprocess.run(
        [sys.executable, "-m", "detector.runtime", str(DEFAULT_BUNDLE)],
        cwd=ROOT,
        env={**os.environ, "VERITY_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    # `make run` and deployments call this: it reports the verified export and, since
    # one exists, does not convert the model again.
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["max_abs_diff"] <= runtime.PARITY_TOLERANCE
    assert exported.stat().st_mtime_ns == before


def test_a_damaged_cache_record_means_export_again_not_a_failure(tmp_path):
    # A record cut short (a full disk, from before records were renamed into place) or
    # removed by another process's prune reads as "not exported", never as an error.
    onnx, record = tmp_path / "k.onnx", tmp_path / "k.json"
    onnx.write_bytes(b"x")
    for text in ('{"max_abs_diff": 1e-', "", "[]"):
        record.write_text(text)
        assert runtime._verified((onnx, record), 1e-3) is None
    record.write_text(json.dumps({"max_abs_diff": 1e-5}))
    assert runtime._verified((onnx, record), 1e-3) == {"max_abs_diff": 1e-5}
    record.unlink()
    assert runtime._verified((onnx, record), 1e-3) is None


def test_pruning_tolerates_exports_another_process_removed(tmp_path, monkeypatch):
    for i in range(3):
        (tmp_path / f"{i}.onnx").write_bytes(b"x")
        os.utime(tmp_path / f"{i}.onnx", (1000 + i, 1000 + i))
    real_glob = Path.glob

    def glob_then_vanish(self, pattern):
        found = list(real_glob(self, pattern))
        (tmp_path / "0.onnx").unlink()  # pruned by another process meanwhile
        return found

    monkeypatch.setattr(Path, "glob", glob_then_vanish)
    runtime.prune(tmp_path, keep=1)
    assert [p.name for p in real_glob(tmp_path, "*.onnx")] == ["2.onnx"]
