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
    for img in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


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
