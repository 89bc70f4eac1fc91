"""Datasets, face extraction, training and evaluation for the Xception classifier.

Everything here works on plain arrays and folders: no database, no web app.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from detector.faces import FaceDetector, square_crop
from detector.faceset import FaceSet, FaceWriter
from detector.metrics import auc_difference, binary_metrics, choose_threshold
from detector.model import BundleMeta, ModelBundle, build_xception, load_keras, read_meta

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp"}
VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm"}
FFPP_METHODS = (
    "Deepfakes",
    "Face2Face",
    "FaceSwap",
    "NeuralTextures",
    "FaceShifter",
    "DeepFakeDetection",
)
Progress = Callable[[int, int], None]


@dataclass
class Item:
    path: str
    label: int  # 0 real, 1 fake
    source: str  # e.g. "faces:mesonet" or "ffpp:Deepfakes"
    group: str  # items of one group (one video) never straddle splits
    kind: str = "image"  # image | video
    # The clip a face counts as for video-level scores and the intervals' resampling
    # (faces of one clip are not independent evidence); None: its own file.
    clip: str | None = None


# ---- sources ---------------------------------------------------------------------------


GroupBy = Literal["file", "video"]
_NUMBERED = re.compile(r"^(.+?)[_-]\d+$")


def image_groups(paths: list[Path], top: Path) -> list[str]:
    """One key per image under the folder `top`, shared by the frames of one video or the
    photos of one person: the subfolder of `top` it sits in, at any depth (top/<video>/...,
    top/<person>/<video>/...: everything of one person together), else its name without
    a trailing _<digits> or -<digits> (MesoNet's <video>_<frame>.jpg, LFW's
    <Name>_0001.jpg, ORL's s<person>_<n>.pgm).

    Where that leaves one key for several images directly in `top`, the numbers count
    files rather than frames (CIPLab's real_00001.jpg ...), and each image keeps its own.
    """
    keys = []
    for p in paths:
        rel = p.relative_to(top)
        if len(rel.parts) > 1:
            keys.append(rel.parts[0])
        else:
            m = _NUMBERED.match(p.stem)
            keys.append(m.group(1) if m else p.stem)
    flat = [i for i, p in enumerate(paths) if p.parent == top]
    if len(flat) > 1 and len({keys[i] for i in flat}) == 1:
        for i in flat:
            keys[i] = paths[i].stem
    return keys


def folder_items(
    root: str | Path, name: str | None = None, group_by: GroupBy = "file"
) -> list[Item]:
    """A folder with `real/` and `fake/` subfolders of images (or clips).

    `group_by` decides which items must share a split. "video": the frames of one video
    and the photos of one person, as `image_groups` finds them (a clip is its own
    group); "file", the default: every file its own group, which is how the shipped
    model's splits were drawn (scripts/train_default.py), so they stay reproducible.
    """
    if group_by not in ("file", "video"):
        raise ValueError(f"group_by must be 'file' or 'video', not {group_by!r}")
    root = Path(root)
    name = name or root.name
    items = []
    for label_name, label in (("real", 0), ("fake", 1)):
        d = root / label_name
        if not d.is_dir():
            continue
        files = [p for p in sorted(d.rglob("*")) if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS]
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
        keys = dict(zip(images, image_groups(images, d), strict=True))
        for p in files:
            group = f"{name}/{keys[p] if group_by == 'video' and p in keys else p.stem}"
            if p in keys:
                # Frames of one video count as one clip; "file": each image is its own.
                clip = f"{name}/{label_name}/{keys[p]}" if group_by == "video" else None
                items.append(Item(str(p), label, f"faces:{name}", group, clip=clip))
            else:
                items.append(Item(str(p), label, f"clips:{name}", group, "video"))
    if not items:
        raise ValueError(f"{root} has no images under real/ or fake/")
    return items


def ffpp_items(root: str | Path, compression: str = "c40") -> list[Item]:
    """The FaceForensics++ layout. A manipulated clip `A_B` shows A's scene with B's
    face, so A, B and every clip that involves either share one group: no identity
    appears on both sides of a split (connected components over the pairs)."""
    root = Path(root)
    raw: list[tuple[Path, int, str, list[str]]] = []
    orig = root / "original_sequences" / "youtube" / compression / "videos"
    for p in sorted(orig.glob("*.mp4")):
        raw.append((p, 0, "ffpp:original", [p.stem]))
    for method in FFPP_METHODS:
        d = root / "manipulated_sequences" / method / compression / "videos"
        for p in sorted(d.glob("*.mp4")):
            raw.append((p, 1, f"ffpp:{method}", p.stem.split("_")[:2]))
    if not raw:
        raise ValueError(
            f"{root} is not in the FaceForensics++ layout (no videos under original_sequences/ or manipulated_sequences/)"
        )
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _p, _l, _s, ids in raw:
        for other in ids[1:]:
            ra, rb = find(ids[0]), find(other)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return [Item(str(p), label, src, f"ffpp/{find(ids[0])}", "video") for p, label, src, ids in raw]


def csv_items(csv_path: str | Path) -> list[Item]:
    """A CSV of `path,label[,group]` rows (label real/fake or 0/1); relative paths are
    relative to the CSV. Rows with the same `group` (a video, a person) always share a
    split; a row without one is its own group. A header row (`path,label,...`) is
    optional."""
    csv_path = Path(csv_path)
    items = []
    with open(csv_path, newline="") as fh:
        for row in csv.reader(fh):
            if not row or row[0].strip().lower() == "path":
                continue
            if len(row) < 2:
                raise ValueError(f"{csv_path}: row {row!r} needs a path and a label")
            p = Path(row[0].strip())
            if not p.is_absolute():
                p = csv_path.parent / p
            lab = row[1].strip().lower()
            label = 1 if lab in ("fake", "1") else 0 if lab in ("real", "0") else None
            if label is None:
                raise ValueError(f"{csv_path}: label {row[1]!r} must be real/fake or 0/1")
            kind = "video" if p.suffix.lower() in VIDEO_EXTS else "image"
            group = row[2].strip() if len(row) > 2 else ""
            # Images of one group are frames of one video (or photos of one person).
            clip = f"csv/{('real', 'fake')[label]}/{group}" if group and kind == "image" else None
            items.append(
                Item(str(p), label, f"csv:{csv_path.stem}", f"csv/{group or p.stem}", kind, clip)
            )
    return items


def split_of(group: str, seed: int = 0, val: float = 0.15, test: float = 0.15) -> str:
    """Deterministic split by group hash: the same group always lands in one split."""
    h = int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if h < test:
        return "test"
    if h < test + val:
        return "val"
    return "train"


# ---- face extraction -------------------------------------------------------------------


def _largest_face_crop(
    img: np.ndarray, detector: FaceDetector, size: int, fallback: bool
) -> np.ndarray | None:
    boxes = detector.detect(img)
    if boxes:
        box = max(boxes, key=lambda b: b.width * b.height)
        return square_crop(img, box, size)
    if not fallback:
        return None
    # Face datasets ship tight crops that HOG often misses: use the centre square.
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return cv2.resize(img[y0 : y0 + s, x0 : x0 + s], (size, size), interpolation=cv2.INTER_AREA)


def read_image(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"unreadable image: {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def extract_faces(
    items: Iterable[Item],
    size: int,
    frames_per_video: int = 50,
    detector: FaceDetector | None = None,
    progress: Progress | None = None,
    detect_images: bool = True,
) -> FaceSet:
    """Crop one face per image and up to `frames_per_video` faces per clip.

    `detect_images=False` treats images as face crops already (aligned face datasets).
    """
    # Imported here: training on face arrays alone (e.g. on a GPU machine) needs no PyAV.
    from detector.video import probe, sample_frames

    items = list(items)
    detector = detector or FaceDetector("hog", max_side=640)
    # Crops go to disk as they come: memory stays flat however many faces there are.
    crops = FaceWriter(size)
    ys, srcs, groups, videos = [], [], [], []

    def keep(crop: np.ndarray, it: Item) -> None:
        crops.add(crop)
        ys.append(it.label)
        srcs.append(it.source)
        groups.append(it.group)
        videos.append(it.clip or it.path)

    for n, it in enumerate(items):
        try:
            if it.kind == "video":
                info = probe(it.path)
                for s in sample_frames(it.path, info, frames_per_video):
                    crop = _largest_face_crop(s.image, detector, size, fallback=False)
                    if crop is not None:
                        keep(crop, it)
            else:
                img = read_image(it.path)
                if detect_images:
                    crop = _largest_face_crop(img, detector, size, fallback=True)
                else:
                    crop = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
                keep(crop, it)
        except Exception as exc:  # noqa: BLE001 - one bad file must not end a long extraction
            print(f"skipped {it.path}: {exc}")
        if progress:
            progress(n + 1, len(items))
    return FaceSet(
        crops.array(),
        np.array(ys, int),
        np.array(srcs, str),
        np.array(groups, str),
        np.array(videos, str) if videos else None,
    )


# ---- augmentation ----------------------------------------------------------------------


def augment(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Forensic augmentations: flips, JPEG re-compression, blur, down-and-up scaling, colour."""
    out = img
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.3:
        s = out.shape[0]
        f = rng.uniform(0.4, 0.9)
        small = cv2.resize(
            out, (max(8, int(s * f)), max(8, int(s * f))), interpolation=cv2.INTER_AREA
        )
        out = cv2.resize(small, (s, s), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.2:
        k = rng.choice([3, 5])
        out = cv2.GaussianBlur(out, (k, k), 0)
    if rng.random() < 0.4:
        alpha = rng.uniform(0.8, 1.2)
        beta = rng.uniform(-20, 20)
        out = np.clip(out.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(
            ".jpg", np.ascontiguousarray(out), [cv2.IMWRITE_JPEG_QUALITY, rng.randint(30, 95)]
        )
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(out)


# ---- training --------------------------------------------------------------------------


GPU_INPUT_SIZE = 299  # Xception's own input size
CPU_INPUT_SIZE = 160  # trains about 4x faster than 299 on a CPU


def gpu_available() -> bool:
    """Whether the Keras backend in use sees a GPU (this imports the backend)."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a backend that cannot say has no usable GPU
        return False
    return False


def default_input_size() -> int:
    """299 px (Xception's own) where a GPU trains it, 160 px on a CPU."""
    return GPU_INPUT_SIZE if gpu_available() else CPU_INPUT_SIZE


@dataclass
class TrainConfig:
    input_size: int = 160
    epochs: int = 5
    batch_size: int = 16
    learning_rate: float = 1e-3
    patience: int = 3
    seed: int = 1337
    steps_per_epoch: int | None = None
    init_weights: str | None = None
    fine_tune_from: str | None = None
    augment: bool = True
    average_every: int | None = None
    # How much each source's faces count in the loss, by source name or prefix (see
    # `face_weights`); sources not named count 1.
    source_weights: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.average_every is not None and self.average_every < 1:
            raise ValueError(f"average_every must be 1 or more, not {self.average_every}")
        for source, w in self.source_weights.items():
            if not (np.isfinite(w) and w >= 0):
                raise ValueError(f"the weight of source {source!r} must be 0 or more, not {w}")


def _covers(key: str, source: str) -> bool:
    return source == key or source.startswith(key + ":")


def face_weights(sources: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """Each face's source weight: that of the longest key equal to its source or a prefix of
    it ending at a ':' ("ffpp" covers "ffpp:Deepfakes", "sbi:faces:lfw" only LFW's
    self-blends); 1 where no key matches."""
    names, inverse = np.unique(np.asarray(sources, dtype=str), return_inverse=True)
    per_name = np.ones(len(names), dtype=np.float64)
    for i, name in enumerate(names.tolist()):
        keys = [k for k in weights if _covers(k, name)]
        if keys:
            per_name[i] = weights[max(keys, key=len)]
    return per_name[inverse.reshape(-1)]


def class_factors(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-class multipliers that balance the classes by their total source weight: each
    class then carries half of the whole weight (with every weight 1, the usual
    n / (2 n_class)). A class present only with weight 0 is refused."""
    totals = np.array([w[y == c].sum() for c in (0, 1)])
    for c, name in ((0, "real"), (1, "fake")):
        if (y == c).any() and totals[c] == 0:
            raise ValueError(f"every {name} training face has weight 0: nothing {name} to learn")
    return np.array([totals.sum() / (2 * t) if t else 1.0 for t in totals])


def check_source_weights(weights: dict[str, float], sources: np.ndarray) -> None:
    """A weight for a source the training faces do not have is a typo, not a no-op."""
    present = sorted(set(sources.tolist()))
    for key in weights:
        if not any(_covers(key, s) for s in present):
            raise ValueError(
                f"no training face comes from source {key!r}; the sources are " + ", ".join(present)
            )


def weighted_class_factors(
    weights: dict[str, float], y: np.ndarray, sources: np.ndarray
) -> np.ndarray:
    """`class_factors` of the faces (`y`, `sources`) under `weights`, after checking that
    every weighted source is there: what `train` runs before its first step."""
    check_source_weights(weights, sources)
    return class_factors(y, face_weights(sources, weights))


def planned_faces(train_set: FaceSet, fresh_blends: bool) -> tuple[np.ndarray, np.ndarray]:
    """(labels, sources) of the faces a run will train on, known before any blend is made:
    `train_set`, plus with fresh blends one fake `sbi:<source>` per real face (as
    sbi.FreshBlends names them)."""
    if not fresh_blends:
        return train_set.y, train_set.sources
    reals = train_set.sources[train_set.y == 0]
    return (
        np.concatenate([train_set.y, np.ones(len(reals), dtype=train_set.y.dtype)]),
        np.concatenate([train_set.sources, np.char.add("sbi:", reals.astype(str))]),
    )


def initial_model(config: TrainConfig):
    """The network a run starts from: a fresh Xception at the run's input size, or its
    parent's weights when fine-tuning.

    The parent may work at another input size: Xception is convolutional up to a global
    average pool, so every weight keeps its shape whatever the input size ("train small,
    then fine-tune large"). BatchNorm statistics shift with scale; training re-estimates
    them on the training faces before it calibrates, as it does for every run.
    """
    if config.fine_tune_from:
        # One Xception, built at this run's size with the parent's weights (not one at the
        # parent's size too, and not first with weights that would be overwritten).
        path = Path(config.fine_tune_from)
        read_meta(path)
        return load_keras(path, config.input_size)
    return build_xception(config.input_size, config.init_weights)


class WeightAverage:
    """A running, uniform average of a model's weights along its training run: stochastic
    weight averaging (Izmailov et al., UAI 2018), sampled densely as in SWAD (Cha et al.,
    NeurIPS 2021), which finds flatter minima that hold up better on unseen domains.

    Kept in float64 so that hundreds of snapshots add no rounding drift. BatchNorm moving
    statistics are averaged too, which is meaningless for them; training re-estimates them
    on the averaged weights (precise BN) before it calibrates.
    """

    def __init__(self, mean: list[np.ndarray] | None = None, count: int = 0) -> None:
        self.mean, self.count = mean, count

    def add(self, weights: list[np.ndarray]) -> None:
        self.count += 1
        if self.mean is None:
            self.mean = [np.array(w, dtype=np.float64) for w in weights]
            return
        for m, w in zip(self.mean, weights, strict=True):
            m += (np.asarray(w, dtype=np.float64) - m) / self.count

    def weights(self) -> list[np.ndarray]:
        if self.mean is None:
            raise ValueError("no weights were averaged")
        return [m.astype(np.float32) for m in self.mean]

    def save(self, path: Path) -> None:
        if self.mean is None:
            return
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, *self.mean, count=self.count)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> WeightAverage:
        if not path.exists():
            return cls()
        with np.load(path) as z:
            n = len(z.files) - 1
            return cls([z[f"arr_{i}"] for i in range(n)], int(z["count"]))


class ScalarLog:
    """TensorBoard scalars through TensorBoard's own event writer, not tf.summary: training
    then runs on any Keras backend (TensorFlow here; JAX or PyTorch on a GPU machine)."""

    def __init__(self, logdir: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(str(logdir))

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))]
        )
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def close(self) -> None:
        self._writer.close()


class BatchPlan:
    """Which faces make batch i of an epoch, and the random draws that augment them.

    Both depend on (seed, epoch, i) alone, so a run resumed at epoch k trains on exactly
    the batches the uninterrupted run would have, and with `steps_per_epoch` shorter than
    the data, each epoch draws a new sample instead of repeating the first one.
    Batches are padded to a fixed size so that Keras traces one graph only.
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool, epoch: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.batches = int(np.ceil(n / batch_size))
        self.start(epoch)

    def start(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = np.arange(self.n)
        if self.shuffle:
            np.random.default_rng([self.seed, epoch]).shuffle(self.order)

    def indices(self, i: int) -> np.ndarray:
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        if len(idx) < self.batch_size:
            idx = np.concatenate([idx, self.order[: self.batch_size - len(idx)]])
        return idx

    def rng(self, i: int) -> random.Random:
        return random.Random(f"{self.seed}:{self.epoch}:{i}")


def _write_json(path: Path, data: Any) -> None:
    """Written beside, then renamed into place: a reader never sees half a file."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data))
    partial.replace(path)


# A run's files in its work folder, by name or pattern (average*.npz includes the partial
# average-k.tmp.npz), besides data.json and tensorboard/.
RUN_FILES = (
    "state.json",
    "state.json.tmp",
    "data.json.tmp",
    "best.keras",
    "best.partial.keras",
    "last*.keras",
    "average*.npz",
)


def run_fingerprint(
    train_set: FaceSet, val_set: FaceSet, config: TrainConfig, fresh: bool = False
) -> dict[str, Any]:
    """What a run in a work folder trains, as `data.json` records it: its faces (by
    group and label, `FaceSet.fingerprint`), their crop size, and every setting that
    changes the weights an epoch produces. Not `epochs` (asking for more extends a
    run), `patience` (when to stop) or `extra` (a record only)."""
    settings = {
        k: getattr(config, k)
        for k in (
            "input_size",
            "batch_size",
            "learning_rate",
            "seed",
            "steps_per_epoch",
            "init_weights",
            "fine_tune_from",
            "augment",
            "average_every",
            "source_weights",
        )
    }
    run = {
        "train": train_set.fingerprint(),
        "validation": val_set.fingerprint(),
        "crop": list(train_set.x.shape[1:]),
        "fresh_faces": fresh,
        "config": settings,
    }
    return json.loads(json.dumps(run))  # as data.json reads back


def _same_run(data_file: Path, run: dict[str, Any]) -> bool:
    """Whether the run recorded in data_file is `run`. What an older version did not record
    (no data.json at all, or only the data fingerprints) is not held against it."""
    if not data_file.exists():
        return True
    saved = json.loads(data_file.read_text())
    return all(saved[k] == v for k, v in run.items() if k in saved)


def _clear_run(work: Path) -> None:
    """Delete a previous run's state, checkpoints and averages (and partial files), and
    its TensorBoard logs, before a fresh run starts in `work`."""
    for pattern in RUN_FILES:
        for p in work.glob(pattern):
            p.unlink(missing_ok=True)
    shutil.rmtree(work / "tensorboard", ignore_errors=True)


def _fit(
    model: Any,
    train_set: FaceSet,
    val_set: FaceSet,
    config: TrainConfig,
    work: Path,
    initial_epoch: int,
    history: dict[str, list[float]],
    factors: np.ndarray,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    fresh: Callable[[int], FaceSet] | None = None,
) -> WeightAverage | None:
    """The epochs from `initial_epoch` on: train, validate, checkpoint, stop early.

    A plain loop over train_on_batch, not model.fit: fed by a PyDataset (or any Python
    generator through tf.data), a Keras 3 training step on TensorFlow runs at half the
    speed, its buffers faulted in afresh each step (about a million page faults a step at
    128 px); bench/training.py measures both.

    After every epoch k it writes `last-k.keras` (and `average-k.npz`), then `state.json`
    (epoch, history and those file names) atomically, then deletes epoch k-1's files: a
    crash at any point leaves a state.json whose files match it, so a rerun resumes
    exactly there. `best.keras` whenever the validation loss improves; TensorBoard scalars
    under `tensorboard/`. Stops once the validation loss has not improved for
    `config.patience` epochs, counted over the whole history, resumed epochs included.

    With `config.average_every` = N, the weights after every N-th step of the whole run
    are averaged, saved with each epoch so that a resumed run continues the same average;
    the average is returned (None without averaging).

    Each face counts in the loss by its source's weight (`config.source_weights`) times its
    class's factor (`factors`, from `class_factors`); validation loss stays unweighted.
    """
    from detector.model import preprocess

    bs = config.batch_size
    writers = {split: ScalarLog(work / "tensorboard" / split) for split in ("train", "validation")}
    state_file = work / "state.json"
    every = config.average_every or 0
    average = None
    if every:
        average = WeightAverage()
        if initial_epoch:
            # Runs from before the files were named by epoch kept one average.npz.
            saved = json.loads(state_file.read_text()).get("average", "average.npz")
            average = WeightAverage.load(work / saved)
    for epoch in range(initial_epoch, config.epochs):
        losses = history.get("val_loss", [])
        if losses and len(losses) - 1 - int(np.argmin(losses)) >= config.patience:
            break
        # With `fresh`, each epoch adds its own newly made faces (as many every epoch).
        data = train_set if fresh is None else FaceSet.concat([train_set, fresh(epoch)])
        plan = BatchPlan(len(data), bs, config.seed, shuffle=True, epoch=epoch)
        weight = face_weights(data.sources, config.source_weights) * factors[data.y]
        steps = min(plan.batches, config.steps_per_epoch or plan.batches)
        sums = {"loss": 0.0, "accuracy": 0.0}
        for i in range(steps):
            idx = plan.indices(i)
            rng = plan.rng(i)
            x = np.stack([augment(data.x[j], rng) if config.augment else data.x[j] for j in idx])
            # train_on_batch reports this batch alone (its metrics are reset per call).
            batch = model.train_on_batch(
                preprocess(x), data.y[idx], sample_weight=weight[idx], return_dict=True
            )
            for k in sums:
                sums[k] += float(batch[k])
            if average is not None and (epoch * steps + i + 1) % every == 0:
                average.add(model.get_weights())
        # Means over the epoch's batches, as fit reports them.
        logs = {k: v / steps for k, v in sums.items()}
        logs.update(_validate(model, val_set, bs))
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        for split, prefix in (("train", ""), ("validation", "val_")):
            for name in ("loss", "accuracy"):
                writers[split].scalar(f"epoch_{name}", logs[prefix + name], step=epoch)
        if logs["val_loss"] <= min(history["val_loss"]):
            # Renamed into place: a kill mid-save never leaves a broken best.keras.
            partial = work / "best.partial.keras"
            model.save(partial)
            partial.replace(work / "best.keras")
        state = {"epoch": epoch + 1, "history": history, "checkpoint": f"last-{epoch + 1}.keras"}
        model.save(work / state["checkpoint"])
        if average is not None:
            state["average"] = f"average-{epoch + 1}.npz"
            average.save(work / state["average"])
        _write_json(state_file, state)
        # Only now are the previous epoch's files stale.
        for old in [*work.glob("last*.keras"), *work.glob("average*.npz")]:
            if old.name not in (state["checkpoint"], state.get("average")):
                old.unlink(missing_ok=True)
        if on_epoch:
            on_epoch(epoch + 1, logs)
    for w in writers.values():
        w.close()
    return average


def _validate(model: Any, data: FaceSet, batch_size: int) -> dict[str, float]:
    """Unweighted cross-entropy and accuracy over every validation face once (the last
    batch is padded to the fixed size, and the padding is not counted)."""
    from detector.model import preprocess

    plan = BatchPlan(len(data), batch_size, 0, shuffle=False)
    probs = np.concatenate(
        [
            np.asarray(model.predict_on_batch(preprocess(data.x[plan.indices(i)])))
            for i in range(plan.batches)
        ]
    )[: len(data)]
    p_true = np.clip(probs[np.arange(len(data)), data.y], 1e-7, 1 - 1e-7)
    return {
        "val_loss": float(-np.mean(np.log(p_true))),
        "val_accuracy": float(np.mean(probs.argmax(axis=1) == data.y)),
    }


def _seed_everything(seed: int) -> None:
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def train(
    train_set: FaceSet,
    val_set: FaceSet,
    config: TrainConfig,
    work_dir: str | Path,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    name: str = "verity-xception",
    version: str | None = None,
    fresh: Callable[[int], FaceSet] | None = None,
) -> tuple[ModelBundle, dict[str, Any]]:
    """Train, checkpoint on validation loss, stop early, choose the threshold on
    validation data; returns the bundle and the training history.

    Resumable: if `work_dir/state.json` and the checkpoint it names exist, training
    continues from its epoch.
    `fresh`, if given, adds faces made anew for each epoch (`fresh(epoch)`, the same
    number every epoch: e.g. sbi.FreshBlends) to `train_set`.
    """
    import keras

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)
    s = config.input_size
    if train_set.x.shape[1] != s:
        raise ValueError(f"faces were extracted at {train_set.x.shape[1]} px but input size is {s}")

    state_file = work / "state.json"
    initial_epoch = 0
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    # A run resumes only what it started: the same data (a retried site run gathers its
    # sources again, and labelled clips may have come or gone meanwhile) and settings.
    run = run_fingerprint(train_set, val_set, config, fresh is not None)
    data_file = work / "data.json"
    # Runs from before the checkpoints were named by epoch kept one last.keras.
    checkpoint = work / state.get("checkpoint", "last.keras")
    if state and not _same_run(data_file, run):
        log.warning("%s holds a run on other data or settings: training afresh", work)
        state = {}
    if state and checkpoint.exists():
        model = keras.models.load_model(checkpoint)
        initial_epoch = state["epoch"]
        # Recorded in full: a run from an older version may lack some of it.
        _write_json(data_file, run)
    else:
        # Nothing of an earlier run may outlive this point: killed before its first
        # epoch ends, this run must not resume that one's checkpoint when rerun.
        _clear_run(work)
        _write_json(data_file, run)
        model = initial_model(config)
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )

    first = fresh(0) if fresh is not None else None
    epoch_faces = None
    if fresh is not None:
        # Epoch 0's faces are made once: for the class balance here and for training.
        def epoch_faces(epoch: int) -> FaceSet:
            return first if epoch == 0 else fresh(epoch)

    pool = train_set if first is None else FaceSet.concat([train_set, first])
    factors = weighted_class_factors(config.source_weights, pool.y, pool.sources)

    history: dict[str, list[float]] = dict(state.get("history", {})) if initial_epoch else {}
    average = _fit(
        model,
        train_set,
        val_set,
        config,
        work,
        initial_epoch,
        history,
        factors,
        on_epoch,
        epoch_faces,
    )
    losses = history.get("val_loss", [])
    chosen_epoch: int | None = len(losses) or None  # the last epoch's weights, if any
    if average is not None and average.count:
        # The run's averaged weights ship, not its best checkpoint.
        model.set_weights(average.weights())
        chosen_epoch = None
    elif (work / "best.keras").exists():
        model = keras.models.load_model(work / "best.keras")
        # best.keras is rewritten on ties: the last epoch with the lowest loss.
        chosen_epoch = len(losses) - int(np.argmin(losses[::-1])) if losses else None
    faces_per_epoch = len(train_set) + (len(first) if first is not None else 0)
    batches = int(np.ceil(faces_per_epoch / config.batch_size))

    meta = BundleMeta(
        name=name,
        version=version or datetime.now(UTC).strftime("%Y%m%d-%H%M%S"),
        input_size=s,
        data_fingerprint=train_set.fingerprint(),
        parent=config.fine_tune_from,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        training={
            "input_size": s,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "seed": config.seed,
            "steps_per_epoch": config.steps_per_epoch,  # the cap asked for (None: none)
            # What the run did: `epochs` and `steps_per_epoch` above are what it was asked.
            "steps_run_per_epoch": min(batches, config.steps_per_epoch or batches),
            "epochs_run": len(losses),
            # The epoch whose weights ship (None: the weight average of the run ships).
            "chosen_epoch": chosen_epoch,
            "augment": config.augment,
            "keras_backend": keras.backend.backend(),
            **(
                {"average_every": config.average_every, "averaged_snapshots": average.count}
                if average is not None
                else {}
            ),
            **({"source_weights": config.source_weights} if config.source_weights else {}),
            "train_faces": int(len(train_set)),
            **({"fresh_faces_per_epoch": len(first)} if first is not None else {}),
            "val_faces": int(len(val_set)),
            **config.extra,
        },
    )
    bundle = ModelBundle(meta, model)
    finalize(
        bundle,
        pool,
        val_set,
        seed=config.seed,
    )
    return bundle, history


def recalibrate_batchnorm(
    model, data: FaceSet, batches: int = 60, batch_size: int = 16, seed: int = 0
) -> None:
    """Re-estimate BatchNorm moving statistics with the final weights ("precise BN").

    Trained from scratch on a short schedule, the moving averages lag far behind the
    weights, which squeezes inference-mode outputs towards one value. Forward passes in
    training mode with a fast momentum fix that without changing any weight.
    """
    import keras

    from detector.model import preprocess

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.9
    rng = np.random.default_rng(seed)
    # Enough batches for the 0.9 momentum to forget the stale averages (0.9^60 < 0.002),
    # but no more passes than the data justifies on tiny sets.
    if batches is None:
        batches = int(min(60, max(6, np.ceil(2 * len(data) / batch_size))))
    for _ in range(batches):
        idx = rng.choice(len(data), size=batch_size, replace=len(data) < batch_size)
        model(preprocess(data.x[idx]), training=True)
    for bn, m in zip(bns, saved, strict=True):
        bn.momentum = m


def fit_platt(y: np.ndarray, p: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """Platt scaling: p' = sigmoid(a * logit(p) + b), fitted by Newton's method on
    validation data, so that the reported confidence means what it says.

    Uses Platt's smoothed targets and a small ridge so that a separable validation set
    gives a steep but finite slope (capped), never an overflow.
    """
    y = np.asarray(y, dtype=np.float64)
    n_pos, n_neg = float((y == 1).sum()), float((y == 0).sum())
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    z = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
    a, b = 1.0, 0.0
    ridge = 1e-3 * len(y)
    for _ in range(iters):
        q = 1 / (1 + np.exp(-np.clip(a * z + b, -50, 50)))
        g = np.array([np.sum((q - t) * z) + ridge * (a - 1), np.sum(q - t)])
        w = q * (1 - q) + 1e-9
        h = np.array(
            [[np.sum(w * z * z) + ridge, np.sum(w * z)], [np.sum(w * z), np.sum(w)]]
        ) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    a = float(np.clip(a, 0.05, 20.0))
    return a, float(np.clip(b, -20.0, 20.0))


def finalize(bundle: ModelBundle, train_set: FaceSet, val_set: FaceSet, seed: int = 0) -> None:
    """After training: precise BN, Platt calibration and the threshold, all from data the
    weights were not fitted on except BN statistics (training faces)."""
    recalibrate_batchnorm(bundle.model, train_set, seed=seed)
    if bundle.meta.weights_dtype == "float16":
        # Fit calibration and threshold on exactly the weights that will ship.
        bundle.model.set_weights(
            [w.astype(np.float16).astype(np.float32) for w in bundle.model.get_weights()]
        )
    bundle.meta.calibration = None
    bundle._run = None  # the weights changed: trace again
    raw = bundle.predict(val_set.x)
    if len(set(val_set.y.tolist())) == 2:
        a, b = fit_platt(val_set.y, raw)
        bundle.meta.calibration = {"a": a, "b": b}
    scores = bundle.predict(val_set.x)
    bundle.meta.threshold = choose_threshold(val_set.y, scores)
    bundle.meta.metrics = {"validation": evaluate_scores(val_set, scores, bundle.meta.threshold)}


# ---- evaluation ------------------------------------------------------------------------


def clip_scores(data: FaceSet, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Video-level scores: (label, mean score of its faces, video id) for each clip,
    ordered by video id."""
    groups: dict[tuple[str, str, int], list[float]] = {}
    for g, src, y, p in zip(
        data.video_ids.tolist(),
        data.sources.tolist(),
        data.y.tolist(),
        np.asarray(scores).tolist(),
        strict=True,
    ):
        groups.setdefault((g, src, y), []).append(p)
    keys = sorted(groups)
    return (
        np.array([k[2] for k in keys], dtype=int),
        np.array([float(np.mean(groups[k])) for k in keys]),
        np.array([k[0] for k in keys]),
    )


def evaluate_scores(data: FaceSet, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Frame-level and video-level metrics, overall and per source, each ROC AUC with a
    95% bootstrap interval."""
    # Faces of one clip are not independent: AUC intervals resample whole clips.
    out: dict[str, Any] = {"frame": binary_metrics(data.y, scores, threshold, data.video_ids)}
    vy, vs, clips = clip_scores(data, scores)
    if len(clips) < len(data):  # some clip has more than one face
        out["video"] = binary_metrics(vy, vs, threshold)
    per_source = {}
    for src in sorted(set(data.sources.tolist())):
        m = data.sources == src
        per_source[src] = binary_metrics(data.y[m], scores[m], threshold, data.video_ids[m])
    out["per_source"] = per_source
    return out


def compare_scores(data: FaceSet, scores: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """Is one model better than another on these faces? ROC AUC of `scores` minus that of
    `baseline`, with a paired 95% interval over clips (`metrics.auc_difference`): overall,
    and for each fake source against all the real faces.

    Each entry is auc_difference's {"difference", "ci", "auc_a", "auc_b"}, or None where
    a class is missing.
    """
    real = data.y == 0
    out: dict[str, Any] = {"overall": _paired(data, scores, baseline, np.ones(len(data), bool))}
    out["per_fake_source"] = {
        src: _paired(data, scores, baseline, real | (data.sources == src))
        for src in sorted(set(data.sources[~real].tolist()))
    }
    return out


def _paired(data: FaceSet, a: np.ndarray, b: np.ndarray, m: np.ndarray) -> dict[str, Any] | None:
    y, clips = data.y[m], data.video_ids[m]
    return auc_difference((y, a[m], clips), (y, b[m], clips))


def save_curves(
    history: dict[str, list[float]],
    scores_y: tuple[np.ndarray, np.ndarray] | None,
    out_dir: str | Path,
) -> list[Path]:
    """accuracy.png, loss.png and roc.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from detector.metrics import roc_curve

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key in ("accuracy", "loss"):
        if key not in history:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label="train")
        if f"val_{key}" in history:
            ax.plot(
                range(1, len(history[f"val_{key}"]) + 1),
                history[f"val_{key}"],
                marker="o",
                label="validation",
            )
        ax.set_xlabel("epoch"), ax.set_ylabel(key), ax.legend(), ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / f"{key}.png", dpi=100)
        plt.close(fig)
        written.append(out_dir / f"{key}.png")
    if scores_y is not None:
        y, sc = scores_y
        fpr, tpr, _ = roc_curve(y, sc)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr), ax.plot([0, 1], [0, 1], "--", color="grey")
        (
            ax.set_xlabel("false positive rate"),
            ax.set_ylabel("true positive rate"),
            ax.set_title("ROC"),
        )
        fig.tight_layout()
        fig.savefig(out_dir / "roc.png", dpi=100)
        plt.close(fig)
        written.append(out_dir / "roc.png")
    return written
