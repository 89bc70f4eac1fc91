"""Self-blended images: pseudo-fakes made from real faces only.

Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022). A real
face is blended with a slightly altered copy of itself inside a soft face mask. The result
carries the traces every face swap shares (a blending boundary, a colour mismatch, a
resolution mismatch, a small misalignment) without the fingerprints of any one
generator, so a classifier trained on it generalises to manipulation methods it never saw.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from functools import cache

import cv2
import dlib
import numpy as np

from detector.faces import FaceDetector, models_file
from detector.faceset import FaceSet, FaceWriter

LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
# SBI draws the blend ratio from this list: full-strength blends half the time, and
# faint ones so the classifier cannot rely on an obvious boundary.
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


@cache
def default_predictor() -> dlib.shape_predictor:
    # ~100 MB to read: load once per process, not per image.
    return dlib.shape_predictor(str(models_file(LANDMARKS_FILE)))


@cache
def _face_detector() -> FaceDetector:
    return FaceDetector("hog", max_side=640)


def landmarks(img: np.ndarray, predictor: dlib.shape_predictor | None = None) -> np.ndarray | None:
    """The 68 landmarks of the largest face as an (68, 2) int32 array, or None."""
    boxes = _face_detector().detect(img)
    if not boxes:
        return None
    box = max(boxes, key=lambda b: b.width * b.height)
    predictor = predictor or default_predictor()
    shape = predictor(
        np.ascontiguousarray(img), dlib.rectangle(box.left, box.top, box.right, box.bottom)
    )
    return np.array([(p.x, p.y) for p in shape.parts()], np.int32)


def _odd(n: float) -> int:
    n = max(1, int(n))
    return n if n % 2 else n + 1


def face_mask(shape: tuple[int, int], points: np.ndarray | None, rng: random.Random) -> np.ndarray:
    """A float32 mask in [0, 1] of `shape` (h, w).

    1. The convex hull of the landmarks, or a centred ellipse when there are none
       (datasets of tight face crops where HOG finds nothing).
    2. Eroded or dilated by a random amount, so the boundary is not always on the jaw line.
    3. Blurred, re-thresholded and blurred again (as SBI does), so the blend fades over a
       random width; then scaled by a random blend ratio.
    """
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    if points is not None:
        cv2.fillConvexPoly(mask, cv2.convexHull(points.astype(np.int32)), 1)
        _, _, bw, bh = cv2.boundingRect(points.astype(np.int32))
        face = max(8, min(bw, bh))
    else:
        centre = (round(w / 2 + rng.uniform(-0.03, 0.03) * w), round(h * rng.uniform(0.5, 0.56)))
        axes = (round(w * rng.uniform(0.27, 0.34)), round(h * rng.uniform(0.34, 0.42)))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
        face = max(8, 2 * min(axes))

    # Kernel sizes relative to the face, so a 71 px crop and a 4K frame look alike.
    k = rng.randint(0, max(1, face // 12))
    if k:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        deformed = cv2.erode(mask, kernel) if rng.random() < 0.5 else cv2.dilate(mask, kernel)
        # Erosion can swallow a tiny face whole: keep the undeformed mask then.
        if deformed.any():
            mask = deformed

    m = mask.astype(np.float32)
    k1 = _odd(face * rng.uniform(0.03, 0.12))
    m = cv2.GaussianBlur(m, (k1, k1), 0)
    if m.max() > 0:
        m /= m.max()
    # Keep only the core that stayed at full strength, then fade again: the fade now
    # starts inside the hull, and its width differs from the first blur.
    # (A tolerance, not == 1: float rounding must not punch holes in the core.)
    m = (m >= 1 - 1e-3).astype(np.float32)
    if not m.any():
        m = mask.astype(np.float32)
    k2 = _odd(face * rng.uniform(0.03, 0.15))
    m = cv2.GaussianBlur(m, (k2, k2), rng.uniform(0.2, 0.6) * k2)
    if m.max() > 0:
        m /= m.max()
    return m * rng.choice(BLEND_RATIOS)


def _jitter_source(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """The altered copy: colour and brightness shift, then a resolution change (blur or
    down-and-up scaling, or sharpening), then a small scale and translation."""
    h, w = img.shape[:2]
    out = img.astype(np.float32)

    # Colour: a per-channel shift and a contrast/brightness change, like a different
    # camera or a generator that does not match the skin tone exactly.
    out += np.array([rng.uniform(-20, 20) for _ in range(3)], np.float32)
    out = out * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1) * 255
    hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] *= rng.uniform(0.8, 1.2)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)

    # Frequency: generators paste faces rendered at another resolution.
    choice = rng.random()
    if choice < 0.4:
        f = rng.uniform(0.25, 0.5)
        small = cv2.resize(
            out, (max(4, int(w * f)), max(4, int(h * f))), interpolation=cv2.INTER_AREA
        )
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    elif choice < 0.7:
        k = _odd(max(3, min(h, w) // 60))
        out = cv2.GaussianBlur(out, (k, k), 0)
    else:
        alpha = rng.uniform(0.2, 0.5)
        blurred = cv2.GaussianBlur(out, (0, 0), 1.0).astype(np.float32)
        out = np.clip(out + alpha * (out.astype(np.float32) - blurred), 0, 255).astype(np.uint8)

    # Geometry: landmarks are never exactly aligned between a face and its replacement.
    scale = rng.uniform(0.95, 1 / 0.95)
    tx = rng.uniform(-0.03, 0.03) * w
    ty = rng.uniform(-0.015, 0.015) * h
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
    matrix[:, 2] += (tx, ty)
    out = cv2.warpAffine(out, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def self_blend(
    img: np.ndarray, rng: random.Random, predictor: dlib.shape_predictor | None = None
) -> np.ndarray:
    """A pseudo-fake of an RGB uint8 face image: same shape, label fake.

    1. Find 68 landmarks (or fall back to a centred ellipse) and build a soft mask.
    2. Make the source: the same image with colour, frequency and geometric jitter.
    3. Blend the source into the untouched target inside the mask; outside it the output
       equals the input exactly, so only the face carries the manipulation.
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"self_blend expects an RGB uint8 image, got {img.dtype} {img.shape}")
    return blend_at(img, landmarks(img, predictor), rng)


def blend_at(img: np.ndarray, points: np.ndarray | None, rng: random.Random) -> np.ndarray:
    """self_blend with the face's 68 landmarks already found (None: the ellipse fallback)."""
    mask = face_mask(img.shape[:2], points, rng)[..., None]
    source = _jitter_source(img, rng).astype(np.float32)
    target = img.astype(np.float32)
    blended = source * mask + target * (1 - mask)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def self_blended_set(
    real: FaceSet,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> FaceSet:
    """One self-blended fake per real face in `real` (its fakes are ignored).

    Each fake keeps the group of its original, so a split by group puts a face and its
    blend on the same side and nothing leaks between training and validation.
    """
    rng = random.Random(seed)
    predictor = default_predictor()
    idx = np.flatnonzero(real.y == 0)

    def made() -> Iterator[np.ndarray]:
        for n, i in enumerate(idx):
            yield self_blend(real.x[i], rng, predictor)
            if progress:
                progress(n + 1, len(idx))

    return _as_fakes(real.subset(idx), made())


def _as_fakes(real: FaceSet, blends: Iterable[np.ndarray]) -> FaceSet:
    """The blends of the real faces `real`, one each in order, labelled fake in their groups.
    Each blend is spilled to disk as it is made, so a set of any size fits in memory."""
    writer = FaceWriter(real.x.shape[1] if real.x.ndim == 4 else None)
    for blend in blends:
        writer.add(blend)
    if writer.count != len(real):
        raise ValueError(f"{writer.count} blends for {len(real)} real faces")
    return FaceSet(
        writer.array(),
        np.ones(len(real), dtype=real.y.dtype),
        np.array([f"sbi:{src}" for src in real.sources.tolist()], dtype=str),
        real.groups.copy(),
        np.array([f"sbi:{v}" for v in real.video_ids.tolist()], dtype=str),
    )


class FreshBlends:
    """Self-blends made anew for every epoch, as SBI itself trains: the classifier never
    sees the same pseudo-fake twice, so it cannot memorise a fixed set of blends.

    Landmarks are found once (or given: `points[i]` for real face i, None where no face
    was found); each epoch's blends depend on (seed, epoch) alone, so a resumed run makes
    the blends the uninterrupted run would have. `fresh(epoch)` is a FaceSet of one blend
    per real face.
    """

    def __init__(
        self, real: FaceSet, seed: int, points: list[np.ndarray | None] | None = None
    ) -> None:
        self.real = real.subset(real.y == 0)
        if points is None:
            predictor = default_predictor()
            points = [landmarks(x, predictor) for x in self.real.x]
        if len(points) != len(self.real):
            raise ValueError(f"{len(points)} landmark sets for {len(self.real)} real faces")
        self.points, self.seed = points, seed

    def __len__(self) -> int:
        return len(self.real)

    def __call__(self, epoch: int) -> FaceSet:
        rng = random.Random(f"sbi:{self.seed}:{epoch}")
        blends = (blend_at(x, p, rng) for x, p in zip(self.real.x, self.points, strict=True))
        return _as_fakes(self.real, blends)
