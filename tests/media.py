"""Media the tests make themselves, from scikit-image's public-domain astronaut photo
(Eileen Collins, NASA), so a fresh clone needs no shared data."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512x512 RGB, one frontal face


def moving_frames(
    n: int, width: int = 640, height: int = 480, face_scale: float = 1.0
) -> list[np.ndarray]:
    """The astronaut drifting a few pixels per frame across a grey canvas."""
    src = astronaut()
    if face_scale != 1.0:
        src = cv2.resize(src, None, fx=face_scale, fy=face_scale, interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        canvas = np.full((height, width, 3), 90, np.uint8)
        dx = (i * 2) % 40
        h = min(src.shape[0], height)
        w = min(src.shape[1], width - dx)
        canvas[:h, dx : dx + w] = src[:h, :w]
        frames.append(canvas)
    return frames


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    fps: int = 25,
    codec: str = "libx264",
    rotation: int | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    container = av.open(str(path), mode="w")
    stream = container.add_stream(codec, rate=Fraction(fps))
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = pix_fmt
    if rotation is not None:
        stream.set_display_rotation(rotation)
    encode_all(container, stream, (av.VideoFrame.from_ndarray(f, format="rgb24") for f in frames))
    return path


def encode_all(container, stream, frames) -> None:
    """Encode and mux every frame (video or audio), flush the encoder, close the file."""
    for frame in frames:
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def astronaut_clip(path: Path, n: int = 30, **kw) -> Path:
    return write_clip(path, moving_frames(n), **kw)


def blank_clip(path: Path, n: int = 10) -> Path:
    rng = np.random.default_rng(0)
    frames = [
        np.clip(rng.normal(120, 20, (240, 320, 3)), 0, 255).astype(np.uint8) for _ in range(n)
    ]
    return write_clip(path, frames)


def read_all(path: Path) -> tuple[int, av.video.stream.VideoStream | None, dict]:
    """Decode every frame; returns (frames, stream codec name, info)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {
            "codec": s.codec_context.name,
            "pix_fmt": s.codec_context.pix_fmt,
            "width": s.width,
            "height": s.height,
        }
        n = sum(1 for _ in c.decode(s))
    return n, None, info


def face_folder(root: Path, n: int = 6, size: int = 128, seed: int = 0) -> Path:
    """A training set in the real/ and fake/ layout: n crops jittered around the
    astronaut's face, and for each an altered copy (the middle of the face enlarged,
    mirrored, recoloured and blended back in) under the same name, so that a crop and
    its fake share a group and never straddle splits."""
    import random

    rng = random.Random(seed)
    img = astronaut()
    (root / "real").mkdir(parents=True, exist_ok=True)
    (root / "fake").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    c, r = size // 2, size // 4
    mask = np.clip(1.5 - np.hypot((xx - c) / r, (yy - c) / (1.2 * r)), 0, 1)[..., None]
    for i in range(n):
        side = rng.randint(150, 210)
        cx, cy = 220 + rng.randint(-12, 12), 125 + rng.randint(-12, 12)
        y0, x0 = max(0, cy - side // 2), max(0, cx - side // 2)
        crop = cv2.resize(
            img[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_AREA
        )
        zoom = cv2.resize(crop[c - r : c + r, c - r : c + r], (size, size))[:, ::-1]
        shift = np.array([rng.randint(15, 35), -rng.randint(5, 20), -rng.randint(5, 20)])
        zoom = np.clip(zoom.astype(np.float32) + shift, 0, 255)
        fake = (crop * (1 - mask) + zoom * mask).astype(np.uint8)
        for label, face in (("real", crop), ("fake", fake)):
            cv2.imwrite(
                str(root / label / f"face{i:02d}.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
            )
    return root
