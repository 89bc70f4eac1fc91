"""The model bundle: Xception weights plus the metadata needed to use them.

A bundle is a directory with `meta.json` and `weights.npz`. The pipeline refuses
a bundle whose metadata it does not understand rather than guessing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import BundleMismatch
from detector.faceset import CHUNK, chunks
from detector.runtime import RUNTIMES, Runner, keras_runner, load_onnx

log = logging.getLogger(__name__)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

BUNDLE_FORMAT = "verity-bundle/1"
SUPPORTED_ARCHITECTURES = ("xception",)
SUPPORTED_PREPROCESSING = ("xception",)
CLASS_ORDER = ["real", "fake"]
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "default"


@dataclass
class BundleMeta:
    name: str
    version: str
    input_size: int
    threshold: float = 0.5
    uncertain_margin: float = 0.1
    architecture: str = "xception"
    preprocessing: str = "xception"
    class_order: list[str] = field(default_factory=lambda: list(CLASS_ORDER))
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    parent: str | None = None
    created: str = ""
    weights_dtype: str = "float16"
    training: dict[str, Any] = field(default_factory=dict)
    # Platt scaling of the raw softmax, fitted on validation data: {"a": .., "b": ..}.
    calibration: dict[str, float] | None = None
    format: str = BUNDLE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleMeta:
        known = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise BundleMismatch(f"meta.json is missing required fields: {exc}") from exc

    def validate(self) -> None:
        problems = []
        if self.format != BUNDLE_FORMAT:
            problems.append(f"format is {self.format!r}, expected {BUNDLE_FORMAT!r}")
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            problems.append(f"architecture {self.architecture!r} is not supported")
        if self.preprocessing not in SUPPORTED_PREPROCESSING:
            problems.append(f"preprocessing {self.preprocessing!r} is not supported")
        if list(self.class_order) != CLASS_ORDER:
            problems.append(f"class order {self.class_order} must be {CLASS_ORDER}")
        if not (32 <= int(self.input_size) <= 1024):
            problems.append(f"input size {self.input_size} is out of range")
        if not (0.0 < float(self.threshold) < 1.0):
            problems.append(f"threshold {self.threshold} must be between 0 and 1")
        if problems:
            raise BundleMismatch(
                "This model bundle does not match the pipeline: " + "; ".join(problems)
            )


def build_xception(input_size: int, init_weights: str | None = None):
    """keras.applications.Xception with a 2-way softmax head (real, fake).

    Never downloads: `init_weights` is an optional local ImageNet (notop) file.
    """
    import keras

    base = keras.applications.Xception(
        include_top=False,
        weights=None,
        input_shape=(input_size, input_size, 3),
        pooling="avg",
    )
    if init_weights:
        base.load_weights(init_weights, skip_mismatch=True)
    x = keras.layers.Dropout(0.3, name="head_dropout")(base.output)
    out = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    return keras.Model(base.input, out, name="verity_xception")


def load_keras(path: Path, input_size: int):
    """An Xception at `input_size` with the bundle's weights; refuses weights that don't fit."""
    model = build_xception(input_size)
    with np.load(path / "weights.npz") as data:
        arrays = [data[f"w{i}"].astype("float32") for i in range(len(data.files))]
    expected = model.get_weights()
    if len(arrays) != len(expected) or any(
        a.shape != e.shape for a, e in zip(arrays, expected, strict=True)
    ):
        raise BundleMismatch(f"The weights in {path} do not fit an Xception at {input_size} px.")
    model.set_weights(arrays)
    return model


def read_meta(path: Path) -> BundleMeta:
    """A bundle folder's validated meta.json; refuses a folder that is not a whole bundle."""
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise BundleMismatch(f"No meta.json in {path}: this is not a Verity model bundle.")
    try:
        meta = BundleMeta.from_dict(json.loads(meta_file.read_text()))
    except json.JSONDecodeError as exc:
        raise BundleMismatch(f"meta.json in {path} is not valid JSON: {exc}") from exc
    meta.validate()
    if not (path / "weights.npz").exists():
        raise BundleMismatch(f"No weights.npz in {path}.")
    return meta


def preprocess(crops: np.ndarray) -> np.ndarray:
    """Xception's preprocess_input: RGB uint8 -> float32 in [-1, 1].

    The same arithmetic as keras.applications.xception.preprocess_input (x / 127.5 - 1),
    in numpy so that inference on ONNX Runtime never has to import Keras.
    """
    x = np.array(crops, dtype=np.float32)  # a copy, from an array or a FaceRows
    x /= np.float32(127.5)
    x -= np.float32(1.0)
    return x


class ModelBundle:
    """A loaded classifier. Load once per process; `predict` is thread-compatible.

    `runtime` picks what runs the network: "keras" (the reference), "onnx" (ONNX Runtime,
    only once verified against Keras within 1e-3; see detector.runtime) or "auto" (ONNX
    Runtime when it is installed and verified, Keras otherwise). `self.runtime` says
    which one was chosen.
    """

    def __init__(
        self,
        meta: BundleMeta,
        model=None,
        path: Path | None = None,
        batch_size: int = 16,
        runtime: str = "keras",
    ):
        self.meta = meta
        self._model = model
        self.path = path
        self.batch_size = batch_size
        self.runtime = "keras"
        self.runtime_record: dict[str, Any] = {}
        self._run: Runner | None = None
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
        if runtime != "keras":
            try:
                self._run, self.runtime_record = load_onnx(
                    path, self.input_size, batch_size, lambda: self.model
                )
                self.runtime = "onnx"
            except Exception as exc:  # noqa: BLE001 - "auto" falls back to the reference
                if runtime == "onnx":
                    raise
                log.warning("using the Keras runtime: %s", exc)

    @property
    def input_size(self) -> int:
        return int(self.meta.input_size)

    @property
    def model(self):
        """The Keras model, built from the bundle's weights on first use."""
        if self._model is None:
            if self.path is None:
                raise BundleMismatch("This bundle has neither a Keras model nor a folder.")
            self._model = load_keras(self.path, int(self.meta.input_size))
        return self._model

    @classmethod
    def load(
        cls, path: str | Path | None = None, batch_size: int = 16, runtime: str = "keras"
    ) -> ModelBundle:
        path = Path(path) if path else DEFAULT_BUNDLE
        meta = read_meta(path)
        # Keras builds the model now (checking the weights fit); the ONNX path defers it
        # to a first export, so a cached export loads without TensorFlow.
        model = load_keras(path, int(meta.input_size)) if runtime == "keras" else None
        return cls(meta, model, path, batch_size, runtime)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        dtype = self.meta.weights_dtype
        weights = {f"w{i}": w.astype(dtype) for i, w in enumerate(self.model.get_weights())}
        np.savez_compressed(path / "weights.npz", **weights)
        (path / "meta.json").write_text(json.dumps(self.meta.to_dict(), indent=2) + "\n")
        self.path = path
        return path

    def _runner(self) -> Runner:
        if self._run is None:
            self._run = keras_runner(self.model, self.input_size, self.batch_size)
        return self._run

    def warm_up(self) -> None:
        self.predict(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))

    def predict(self, crops: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
        """Fake probability for each RGB uint8 crop of shape (n, s, s, 3).

        `crops` may be anything that slices into arrays (a memory-mapped file, a FaceRows):
        they are read and preprocessed `chunk` at a time, so scoring a large set needs
        memory for one chunk of float32 inputs, not for the whole set.
        """
        if len(crops) == 0:
            return np.zeros((0,), np.float32)
        fake = CLASS_ORDER.index("fake")
        probs = [self._runner()(preprocess(c))[:, fake] for c in chunks(crops, chunk)]
        return self.calibrate(np.concatenate(probs))

    def calibrate(self, p: np.ndarray) -> np.ndarray:
        cal = self.meta.calibration
        if not cal:
            return p
        z = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
        return (1 / (1 + np.exp(-(cal["a"] * z + cal["b"])))).astype(np.float32)
