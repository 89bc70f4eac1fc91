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
    """Read the clip's metadata and decode its first frame to prove it is readable.

    Where the header gives no duration, the packets are counted.
    """
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
        duration = _header_duration(container, stream)
        frames = int(stream.frames or 0)
        codec = stream.codec_context.name if stream.codec_context else "unknown"
    if duration <= 0:
        # No duration in the header (a browser's MediaRecorder WebM, a live capture):
        # count the packets. Not when it has one: the web process probes every upload.
        counted, duration = _scan_packets(path)
        frames = frames if frames > 0 else counted
    if frames <= 0:
        frames = max(1, round(duration * fps)) if fps and duration else 1
    if fps <= 0:
        fps = frames / duration if duration > 0 else 25.0
    if duration <= 0:
        duration = frames / fps
    if abs(round(rotation / 90)) % 2 == 1:
        w, h = h, w
    return VideoInfo(
        duration=round(duration, 4),
        fps=round(fps, 4),
        width=w,
        height=h,
        rotation=rotation,
        codec=codec,
        frame_count=frames,
    )


def _header_duration(container: av.container.InputContainer, stream) -> float:
    """The duration the container declares, or 0.0 when it declares none."""
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def _scan_packets(path: str | Path) -> tuple[int, float]:
    """Count the video packets and find where the last one ends, without decoding.

    Returns (packets, seconds). Reading packets costs little next to decoding, and
    it is the only way to learn the length of a file written live (MediaRecorder
    WebM) whose header leaves the duration and frame count blank.
    """
    count, first, end = 0, None, None
    with _open(path) as container:
        stream = _video_stream(container)
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                count += 1
                if packet.pts is not None:
                    first = packet.pts if first is None else min(first, packet.pts)
                    stop = packet.pts + (packet.duration or 0)
                    end = stop if end is None else max(end, stop)
        except av.error.FFmpegError:
            pass  # a damaged tail: keep what was read
        start = stream.start_time if stream.start_time is not None else first
        if end is None or start is None or not stream.time_base:
            return count, 0.0
        return count, max(0.0, float((end - start) * stream.time_base))


def sample_indices(frame_count: int, n: int) -> list[int]:
    """`n` evenly spaced frame indices, centred in their slices, without duplicates."""
    if frame_count <= 0 or n <= 0:
        return []
    if n >= frame_count:
        return list(range(frame_count))
    step = frame_count / n
    return sorted({min(frame_count - 1, int(step * i + step / 2)) for i in range(n)})


def sample_frames(path: str | Path, info: VideoInfo, n: int) -> list[SampledFrame]:
    """Decode about `n` evenly spaced frames (all of them held at once: `iter_samples`
    hands them over one at a time)."""
    return list(iter_samples(path, info, n))


def iter_samples(path: str | Path, info: VideoInfo, n: int) -> Iterator[SampledFrame]:
    """Decode about `n` evenly spaced frames, yielding each as soon as it is decoded, so
    that a caller which keeps only what it needs of each (the pipeline keeps the face
    crops) holds one full frame at a time, not `n`.

    Short clips are decoded in one pass, converting only the wanted frames to
    arrays; long clips seek to the keyframe before each sample instead, unless
    the container cannot seek backward (MPEG-TS), which is found on the first
    seek that lands past its target; the rest is then decoded in one pass.
    Two samples closer than a frame apart land on one frame: it is yielded once.
    """
    wanted = sample_indices(info.frame_count, n)
    last = -1
    if info.frame_count > SEQUENTIAL_MAX_FRAMES:
        try:
            for s in _sample_seeking(path, info, wanted):
                if s.index > last:
                    last = s.index
                    yield s
            if last < 0:
                raise UnreadableVideo("No frame of the video could be decoded.")
            return
        except _SeekMissed:
            wanted = [i for i in wanted if i > last]
            if not wanted:
                return
    for s in _sample_sequential(path, wanted, last < 0):
        if s.index > last:
            last = s.index
            yield s


class _SeekMissed(Exception):
    """A seek landed past its target or on nothing: the container cannot seek backward."""


def _sample_sequential(path, wanted: list[int], any_frame: bool = True) -> Iterator[SampledFrame]:
    """The wanted frames, in one decoding pass. With `any_frame`, a clip that ends
    before the first wanted frame (its frame count was overestimated) yields its last."""
    wanted_set = set(wanted)
    last_wanted = wanted[-1] if wanted else -1
    yielded = False
    last: tuple[av.VideoFrame, int, float] | None = None
    with _open(path) as container:
        stream = _video_stream(container)
        start, tb = stream.start_time or 0, stream.time_base
        try:
            for i, frame in enumerate(container.decode(stream)):
                last = frame, i, _frame_time(frame, start, tb)
                if i in wanted_set:
                    yielded = True
                    yield _to_sample(*last)
                if i >= last_wanted:
                    break
        except av.error.FFmpegError:
            # A clip damaged part-way: keep what decoded; fail only if nothing did.
            if not yielded and last is None:
                raise UnreadableVideo("The video track could not be decoded.") from None
    if not yielded and last is not None and any_frame:
        # Frame count was overestimated (a short or VFR clip): use the last frame.
        yield _to_sample(*last)


def _sample_seeking(path, info: VideoInfo, wanted: list[int]) -> Iterator[SampledFrame]:
    with _open(path) as container:
        stream = _video_stream(container)
        tb = stream.time_base
        start = stream.start_time or 0
        slack = int(0.5 / info.fps / tb)  # half a frame
        for idx in wanted:
            target_t = idx / info.fps
            frame = _decode_at(container, stream, start + int(target_t / tb), slack)
            if frame is not None:
                t = _frame_time(frame, start, tb, default=target_t)
                yield _to_sample(frame, round(t * info.fps), t)


def _decode_at(container, stream, target_pts: int, slack: int) -> av.VideoFrame | None:
    """The first frame at the target or after it, decoded from the keyframe before it;
    the clip's last frame when the target lies past it (a frame count estimated from a
    container duration that an audio track outlasts).

    None when that stretch of the clip is damaged. Raises _SeekMissed when the seek
    lands past the target or where nothing decodes, as MPEG-TS does: it seeks to
    the keyframe after the target, and a clip of one GOP has none.
    """
    try:
        container.seek(target_pts, stream=stream, backward=True, any_frame=False)
    except av.error.FFmpegError as exc:
        raise _SeekMissed from exc
    last = None
    try:
        for k, frame in enumerate(container.decode(stream)):
            if frame.pts is None:
                return frame
            if k == 0 and frame.pts > target_pts + slack:
                raise _SeekMissed
            if frame.pts >= target_pts - slack:
                return frame
            last = frame
    except av.error.FFmpegError:
        return None
    if last is None:
        raise _SeekMissed
    return last


def _frame_time(frame: av.VideoFrame, start: int, time_base, default: float = 0.0) -> float:
    """Seconds since the stream's first timestamp (MPEG-TS clocks rarely start at 0)."""
    return float((frame.pts - start) * time_base) if frame.pts is not None else default


def _to_sample(frame: av.VideoFrame, index: int, time: float) -> SampledFrame:
    img = np.ascontiguousarray(upright(frame.to_ndarray(format="rgb24"), int(frame.rotation or 0)))
    return SampledFrame(index=index, time=max(0.0, time), image=img)


def iter_raw_frames(path: str | Path) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """Every decoded frame of the clip as (index, time, frame), not yet converted."""
    with _open(path) as container:
        stream = _video_stream(container)
        start = stream.start_time or 0
        i = -1
        try:
            for frame in container.decode(stream):
                i += 1
                yield i, _frame_time(frame, start, stream.time_base), frame
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
    """Writes an H.264 (yuv420p, +faststart) MP4 that browsers play.

    A frame written with its source `time` (seconds from the start of the clip) is
    shown at that time, so the output keeps a variable-rate clip's timing and a page
    can seek it by the source's times; frames written without one follow at `fps`.
    """

    TICKS = 90_000  # the encoder's clock, per second: fine enough for any frame rate

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
        self._rate = rate
        self._container = av.open(
            str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width = self.width
        self._stream.height = self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"preset": preset, "crf": str(crf)}
        self._time_base = Fraction(1, self.TICKS)
        self._stream.codec_context.time_base = self._time_base
        self._stream.time_base = self._time_base
        self._last_pts: int | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray, time: float | None = None) -> None:
        if rgb.shape[0] != self.height or rgb.shape[1] != self.width:
            rgb = rgb[: self.height, : self.width]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self._encode(frame, time)

    def write_yuv(self, yuv: np.ndarray, time: float | None = None) -> None:
        """A packed yuv420p frame of exactly the writer's size: no colour conversion."""
        self._encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p"), time)

    def _at(self, n: int) -> int:
        """Where frame `n` of a constant-rate clip starts, in ticks."""
        return round(n * self.TICKS / self._rate)

    def _pts(self, time: float | None) -> int:
        if time is not None:
            pts = round(max(0.0, time) * self.TICKS)
        elif self._last_pts is None:
            pts = 0
        else:  # one frame after the last, however that one was timed
            pts = self._last_pts + self._at(self.frames) - self._at(self.frames - 1)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # timestamps must increase: two frames met on one tick
        self._last_pts = pts
        return pts

    def _encode(self, frame: av.VideoFrame, time: float | None) -> None:
        frame.pts = self._pts(time)
        frame.time_base = self._time_base
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
