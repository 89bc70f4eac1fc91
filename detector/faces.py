"""Face detection (dlib) and the FaceForensics++ square crop."""

from __future__ import annotations

import importlib.util
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from detector.errors import DetectorError

CROP_SCALE = 1.3
MIN_FACE_FRACTION = 0.03  # boxes smaller than 3% of the short side are noise at this scale
MIN_FACE_PIXELS = 20
# HOG's scores below this are mostly textures that look like faces (badges, patterns).
MIN_HOG_SCORE = 0.3


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int
    score: float = 1.0

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def centre(self) -> tuple[float, float]:
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.right, other.right) - max(self.left, other.left))
        iy = max(0, min(self.bottom, other.bottom) - max(self.top, other.top))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    def to_list(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]


def models_file(name: str) -> Path:
    """Locate a .dat file shipped by face-recognition-models without importing it
    (its __init__ imports pkg_resources, which current setuptools removed)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError(
            "face-recognition-models is not installed; it ships dlib's model files."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.exists():
        raise DetectorError(f"dlib model file missing: {path}")
    return path


class FaceDetector:
    """dlib HOG (default, fast) or MMOD CNN (accurate, ~70x slower on CPU).

    Detection runs on a copy no larger than `max_side`, and boxes are mapped back,
    so 4K and 8K frames cost the same as 720p.
    """

    DEFAULT_MAX_SIDE = 1280

    def __init__(self, mode: str = "hog", max_side: int = DEFAULT_MAX_SIDE) -> None:
        if mode not in ("hog", "cnn"):
            raise ValueError(f"unknown face detector {mode!r}: use 'hog' or 'cnn'")
        self.mode = mode
        self.max_side = max_side
        if mode == "hog":
            self._hog = dlib.get_frontal_face_detector()
        else:
            self._cnn = dlib.cnn_face_detection_model_v1(
                str(models_file("mmod_human_face_detector.dat"))
            )

    def clone(self) -> FaceDetector:
        """A new detector of the same kind (about 0.25 s for HOG: prefer `lend`)."""
        return FaceDetector(self.mode, self.max_side)

    def upsample_for(self, width: int, height: int) -> int:
        # HOG finds faces of ~80 px and up; small frames need one upsampling pass.
        return 1 if max(width, height) <= 720 else 0

    def detect(self, rgb: np.ndarray) -> list[Box]:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        work = rgb
        if scale < 1.0:
            work = cv2.resize(
                rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        up = self.upsample_for(work.shape[1], work.shape[0])
        boxes: list[Box] = []
        if self.mode == "hog":
            # HOG on grey is about 25% faster than on RGB (where dlib takes the strongest
            # channel's gradient) and found the same faces on every clip in shared/data.
            # cvtColor also hands dlib a contiguous array: it misreads strided ones (PyAV
            # pads rows to 64-byte multiples), and its scores then change between calls.
            grey = work if work.ndim == 2 else cv2.cvtColor(work[..., :3], cv2.COLOR_RGB2GRAY)
            rects, scores, _ = self._hog.run(np.ascontiguousarray(grey), up, 0.0)
            found = [(r, sc) for r, sc in zip(rects, scores, strict=True) if sc >= MIN_HOG_SCORE]
        else:
            found = [(d.rect, d.confidence) for d in self._cnn(np.ascontiguousarray(work), up)]
        for rect, score in found:
            box = Box(
                max(0, round(rect.left() / scale)),
                max(0, round(rect.top() / scale)),
                min(w, round(rect.right() / scale)),
                min(h, round(rect.bottom() / scale)),
                float(score),
            )
            if plausible(box, w, h):
                boxes.append(box)
        return boxes


_POOLS: dict[tuple[str, int], queue.SimpleQueue[FaceDetector]] = {}
_POOLS_LOCK = threading.Lock()


@contextmanager
def lend(
    mode: str = "hog", max_side: int = FaceDetector.DEFAULT_MAX_SIDE, n: int = 1
) -> Iterator[list[FaceDetector]]:
    """Borrow `n` detectors of one kind from this process's pool, one per thread.

    Building a dlib HOG detector deserialises its model (about 0.25 s here), which was
    a tenth of a warm 720p clip's time when every clip built two. Detectors are built on
    first need and kept; each one is lent to one borrower at a time, so threads never
    share one.
    """
    with _POOLS_LOCK:
        pool = _POOLS.setdefault((mode, max_side), queue.SimpleQueue())
    taken: list[FaceDetector] = []
    try:
        for _ in range(n):
            try:
                taken.append(pool.get_nowait())
            except queue.Empty:
                taken.append(FaceDetector(mode, max_side))
        yield taken
    finally:
        for det in taken:
            pool.put(det)


def plausible(box: Box, width: int, height: int) -> bool:
    """Drop tiny boxes and boxes that are mostly outside the frame or far from square."""
    side = min(box.width, box.height)
    if side < max(MIN_FACE_PIXELS, MIN_FACE_FRACTION * min(width, height)):
        return False
    ratio = box.width / box.height if box.height else 0
    return 0.5 <= ratio <= 2.0


def square_crop(rgb: np.ndarray, box: Box, size: int, scale: float = CROP_SCALE) -> np.ndarray:
    """The FaceForensics++ crop: a square `scale` times the face box, centred on it,
    clipped to the frame, resized to `size`."""
    h, w = rgb.shape[:2]
    side = int(max(box.width, box.height) * scale)
    cx, cy = box.centre
    x1 = max(int(cx - side // 2), 0)
    y1 = max(int(cy - side // 2), 0)
    side = min(w - x1, h - y1, side)
    crop = rgb[y1 : y1 + side, x1 : x1 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)
