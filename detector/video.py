"""Video I/O with PyAV: probing, frame sampling and H.264 writing.

Frames are returned as RGB uint8 arrays, already turned upright when the
container carries rotation metadata (phone clips).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from detector.errors import NotAVideo, NoVideoStream, UnreadableVideo, VideoTooLarge

# Sequential decoding is cheaper than seeking for short clips; past this many
# frames we seek to each sample so that the cost does not grow with length.
SEQUENTIAL_MAX_FRAMES = 900
MAX_PIXELS = 7680 * 4320 * 2  # refuse anything bigger than twice 8K


@dataclass
class VideoInfo:
    duration: float
    fps: float
    width: int
    height: int
    rotation: int
    codec: str
    frame_count: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SampledFrame:
    index: int
    time: float
    image: np.ndarray  # RGB, upright


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise UnreadableVideo(f"File not found: {path.name}")
    if path.stat().st_size == 0:
        raise UnreadableVideo("The file is empty (0 bytes).")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise UnreadableVideo(
            "This file could not be read as a video. It may be damaged, incomplete, "
            "or not a video at all."
        ) from exc


STILL_IMAGE_FORMATS = (
    "image2",
    "png_pipe",
    "jpeg_pipe",
    "webp_pipe",
    "bmp_pipe",
    "gif",
    "tiff_pipe",
    "svg_pipe",
    "pgm_pipe",
    "ppm_pipe",
)


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    fmt = container.format.name or ""
    if any(f in fmt.split(",") for f in STILL_IMAGE_FORMATS) or fmt.endswith("_pipe"):
        raise NotAVideo("This is a still image, not a video. Verity analyses video clips.")
    if not container.streams.video:
        raise NoVideoStream(
            "This file has no video track (it may be audio only). Upload a video clip."
        )
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, as PyAV reports it)."""
    k = (round(rotation / 90)) % 4
    return np.ascontiguousarray(np.rot90(image, k=k)) if k else image


def _first_frame(container, stream) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise UnreadableVideo(
            "The video track could not be decoded. The file may be truncated or corrupted."
        ) from exc
    raise UnreadableVideo("The video track holds no decodable frame.")


def probe(path: str | Path) -> VideoInfo:
    """Read the clip's metadata and decode its first frame to prove it is readable."""
    with _open(path) as container:
        stream = _video_stream(container)
        first = _first_frame(container, stream)
        rotation = int(first.rotation or 0)
        w, h = first.width, first.height
        if w * h > MAX_PIXELS:
            raise VideoTooLarge(
                f"Frames of {w}x{h} pixels are larger than Verity accepts (up to 2x 8K)."
            )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = 0.0
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        frames = int(stream.frames or 0)
        if frames <= 0:
            frames = max(1, round(duration * fps)) if fps and duration else 1
        if fps <= 0:
            fps = frames / duration if duration > 0 else 25.0
        if duration <= 0:
            duration = frames / fps
        if abs(round(rotation / 90)) % 2 == 1:
            w, h = h, w
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        return VideoInfo(
            duration=round(duration, 4),
            fps=round(fps, 4),
            width=w,
            height=h,
            rotation=rotation,
            codec=codec,
            frame_count=frames,
        )


def sample_indices(frame_count: int, n: int) -> list[int]:
    """`n` evenly spaced frame indices, centred in their slices, without duplicates."""
    if frame_count <= 0 or n <= 0:
        return []
    if n >= frame_count:
        return list(range(frame_count))
    step = frame_count / n
    return sorted({min(frame_count - 1, int(step * i + step / 2)) for i in range(n)})


def sample_frames(path: str | Path, info: VideoInfo, n: int) -> list[SampledFrame]:
    """Decode about `n` evenly spaced frames.

    Short clips are decoded in one pass, converting only the wanted frames to
    arrays; long clips seek to the keyframe before each sample instead.
    """
    wanted = sample_indices(info.frame_count, n)
    if info.frame_count <= SEQUENTIAL_MAX_FRAMES:
        return _sample_sequential(path, wanted)
    return _sample_seeking(path, info, wanted)


def _sample_sequential(path, wanted: list[int]) -> list[SampledFrame]:
    wanted_set = set(wanted)
    last_wanted = wanted[-1] if wanted else -1
    out: list[SampledFrame] = []
    last: av.VideoFrame | None = None
    last_index = -1
    with _open(path) as container:
        stream = _video_stream(container)
        try:
            for i, frame in enumerate(container.decode(stream)):
                last, last_index = frame, i
                if i in wanted_set:
                    out.append(_to_sample(frame, i))
                if i >= last_wanted:
                    break
        except av.error.FFmpegError:
            # A clip damaged part-way: keep what decoded; fail only if nothing did.
            if not out and last is None:
                raise UnreadableVideo("The video track could not be decoded.") from None
    if not out and last is not None:
        # Frame count was overestimated (a short or VFR clip): use the last frame.
        out.append(_to_sample(last, last_index))
    return out


def _sample_seeking(path, info: VideoInfo, wanted: list[int]) -> list[SampledFrame]:
    out: list[SampledFrame] = []
    with _open(path) as container:
        stream = _video_stream(container)
        tb = stream.time_base
        start = stream.start_time or 0
        for idx in wanted:
            target_t = idx / info.fps
            target_pts = start + int(target_t / tb)
            try:
                container.seek(target_pts, stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.pts is None or frame.pts >= target_pts - int(0.5 / info.fps / tb):
                        t = float((frame.pts - start) * tb) if frame.pts is not None else target_t
                        out.append(_to_sample(frame, round(t * info.fps), t))
                        break
            except av.error.FFmpegError:
                continue
    if not out:
        raise UnreadableVideo("No frame of the video could be decoded.")
    # Seeking can land two samples on one frame: keep one of each.
    seen: set[int] = set()
    unique = []
    for s in out:
        if s.index not in seen:
            seen.add(s.index)
            unique.append(s)
    return unique


def _to_sample(frame: av.VideoFrame, index: int, time: float | None = None) -> SampledFrame:
    img = np.ascontiguousarray(upright(frame.to_ndarray(format="rgb24"), int(frame.rotation or 0)))
    t = time if time is not None else (float(frame.time) if frame.time is not None else 0.0)
    return SampledFrame(index=index, time=max(0.0, t), image=img)


def iter_raw_frames(path: str | Path) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """Every decoded frame of the clip as (index, time, frame), not yet converted."""
    with _open(path) as container:
        stream = _video_stream(container)
        start = stream.start_time or 0
        i = -1
        try:
            for frame in container.decode(stream):
                i += 1
                t = float((frame.pts - start) * stream.time_base) if frame.pts is not None else 0.0
                yield i, t, frame
        except av.error.FFmpegError:
            if i < 0:
                raise UnreadableVideo("The video track could not be decoded.") from None
            # Damaged tail: stop at the last good frame.


def iter_frames(path: str | Path) -> Iterator[tuple[int, float, np.ndarray]]:
    """Every frame of the clip, upright, as (index, time, RGB array)."""
    for i, t, frame in iter_raw_frames(path):
        yield i, t, upright(frame.to_ndarray(format="rgb24"), int(frame.rotation or 0))


def yuv_planes(yuv: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
    """Views of the Y, U and V planes of a packed yuv420p array (even width and height)."""
    flat = yuv.reshape(-1)
    n = width * height
    y = flat[:n].reshape(height, width)
    u = flat[n : n + n // 4].reshape(height // 2, width // 2)
    v = flat[n + n // 4 : n + n // 2].reshape(height // 2, width // 2)
    return y, u, v


class H264Writer:
    """Writes an H.264 (yuv420p, +faststart) MP4 that browsers play."""

    def __init__(
        self,
        path: str | Path,
        fps: float,
        width: int,
        height: int,
        preset: str = "veryfast",
        crf: int = 23,
    ) -> None:
        self.width = width - width % 2
        self.height = height - height % 2
        self.path = Path(path)
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._container = av.open(
            str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width = self.width
        self._stream.height = self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"preset": preset, "crf": str(crf)}
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[0] != self.height or rgb.shape[1] != self.width:
            rgb = rgb[: self.height, : self.width]
        self._encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))

    def write_yuv(self, yuv: np.ndarray) -> None:
        """A packed yuv420p frame of exactly the writer's size: no colour conversion."""
        self._encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p"))

    def _encode(self, frame: av.VideoFrame) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def even_size(width: int, height: int, max_side: int) -> tuple[int, int, float]:
    """Output size no larger than `max_side`, even on both sides, and its scale."""
    scale = min(1.0, max_side / max(width, height))
    w = max(2, int(math.floor(width * scale / 2) * 2))
    h = max(2, int(math.floor(height * scale / 2) * 2))
    return w, h, scale
