"""analyse_video: one clip in, one Report (and optionally an annotated MP4) out."""

from __future__ import annotations

import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from detector import tracking, verdict
from detector.faces import Box, FaceDetector, lend, square_crop
from detector.model import ModelBundle
from detector.report import Face, FrameResult, Report, Track, Verdict
from detector.video import (
    H264Writer,
    SampledFrame,
    even_size,
    iter_raw_frames,
    iter_samples,
    probe,
    sample_indices,
    upright,
    yuv_planes,
)

ProgressFn = Callable[[str, float], None]

RED = (220, 38, 38)
GREEN = (22, 163, 74)
AMBER = (217, 119, 6)


@dataclass
class Artifacts:
    """Images a caller may want besides the report: a thumbnail and face crops per track."""

    thumbnail: np.ndarray | None = None
    track_crops: dict[int, list[np.ndarray]] = field(default_factory=dict)


@dataclass
class Options:
    frames: int = 32
    detector: str = "hog"
    # Tracks whose largest face box is narrower than this many px are not judged (see
    # verdict.track_label); 0 judges every face.
    min_face: int = verdict.DEFAULT_MIN_FACE
    annotate_max_side: int = 1920
    preset: str = "veryfast"


def _noop(stage: str, fraction: float) -> None:
    pass


# Share of the whole job each stage takes, for one overall progress fraction.
STAGES = {
    "reading": (0.0, 0.1),
    "detecting": (0.1, 0.45),
    "classifying": (0.45, 0.6),
    "rendering": (0.6, 1.0),
}


def _reporter(on_progress: ProgressFn) -> Callable[[str, float], None]:
    def report(stage: str, within: float) -> None:
        lo, hi = STAGES[stage]
        on_progress(stage, lo + (hi - lo) * min(1.0, max(0.0, within)))

    return report


def analyse_video(
    path: str | Path,
    bundle: ModelBundle,
    options: Options | None = None,
    on_progress: ProgressFn | None = None,
    output_video: str | Path | None = None,
    detector: FaceDetector | None = None,
    artifacts: Artifacts | None = None,
) -> Report:
    """Analyse one clip.

    1. Probe the clip and decode `options.frames` evenly spaced frames, one at a time.
    2. Detect faces (dlib) on each as it is decoded, crop 1.3x squares, let the frame go;
       link the faces into tracks.
    3. Classify the crops in fixed-size batches.
    4. Aggregate into track and clip verdicts.
    5. If `output_video` is given, render every frame with boxes and labels (H.264).

    `on_progress(stage, fraction)` may raise (e.g. Cancelled) to stop the job.
    """
    options = options or Options()
    progress = _reporter(on_progress or _noop)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t = time.perf_counter()
    progress("reading", 0.0)
    info = probe(path)
    timings["read"] = time.perf_counter() - t
    progress("reading", 1.0)

    # Decoding, detection and cropping stream: each frame is let go once its faces are
    # cropped, so memory holds a few full frames whatever the clip's size and sample count.
    t = time.perf_counter()
    size = bundle.input_size
    expected = max(1, len(sample_indices(info.frame_count, options.frames)))
    samples, read_s = _scan(
        iter_samples(path, info, options.frames),
        expected,
        detector,
        options.detector,
        size,
        progress,
        thumb_height=THUMB_HEIGHT if artifacts is not None else 0,
    )
    detections = [(s.index, s.boxes) for s in samples]
    track_ids = tracking.link(detections)
    timings["read"] += read_s
    timings["detect"] = time.perf_counter() - t - read_s

    t = time.perf_counter()
    crops = [crop for s in samples for crop in s.crops]
    probs = bundle.predict(np.stack(crops)) if crops else np.zeros((0,), np.float32)
    timings["classify"] = time.perf_counter() - t
    progress("classifying", 1.0)

    frames: list[FrameResult] = []
    per_track: dict[int, list[tuple[int, Box, float]]] = {}
    placed: dict[int, list[tuple[int, float, Box]]] = {}  # where the render draws them
    k = 0
    for s, ids in zip(samples, track_ids, strict=True):
        boxes = s.boxes
        fr = FrameResult(index=s.index, time=round(s.time, 4))
        for box, tid in zip(boxes, ids, strict=True):
            p = float(probs[k])
            k += 1
            fr.faces.append(Face(box=box.to_list(), fake_probability=round(p, 5), track_id=tid))
            per_track.setdefault(tid, []).append((s.index, box, p))
            placed.setdefault(tid, []).append((s.index, s.time, box))
        frames.append(fr)

    meta = bundle.meta
    tracks: list[Track] = []
    track_ps: list[float] = []  # unrounded: the clip's label must agree with its tracks'
    for tid, items in sorted(per_track.items()):
        p = verdict.track_probability([x[2] for x in items])
        track_ps.append(p)
        biggest = max(items, key=lambda x: x[1].width * x[1].height)[1]
        label = verdict.track_label(
            p, meta.threshold, meta.uncertain_margin, biggest.width, options.min_face
        )
        note = verdict.small_face_note(biggest.width, options.min_face)
        tracks.append(
            Track(
                id=tid,
                first_frame=items[0][0],
                last_frame=items[-1][0],
                faces=len(items),
                fake_probability=round(p, 5),
                label=label,
                # A face too small to judge claims nothing: confidence 0.
                confidence=0.0 if note else round(verdict.confidence_for(p, label), 5),
                box=biggest.to_list(),
                note=note,
            )
        )
    widths = [t.box[2] - t.box[0] for t in tracks]
    label, p_clip, conf = verdict.clip_verdict(
        track_ps,
        meta.threshold,
        meta.uncertain_margin,
        widths,
        options.min_face,
    )
    clip = Verdict(
        label=label,
        fake_probability=round(p_clip, 5),
        threshold=meta.threshold,
        uncertain_margin=meta.uncertain_margin,
        confidence=round(conf, 5),
        note=verdict.clip_note(widths, options.min_face),
    )

    if artifacts is not None and samples:
        artifacts.thumbnail = samples[len(samples) // 2].thumbnail
        k = 0
        for ids in track_ids:
            for tid in ids:
                lst = artifacts.track_crops.setdefault(tid, [])
                if len(lst) < 4 and (len(lst) == 0 or k % 3 == 0):
                    lst.append(crops[k])
                k += 1

    if output_video is not None:
        t = time.perf_counter()
        render_annotated(
            path,
            info,
            [(s.index, s.time) for s in samples],
            placed,
            tracks,
            output_video,
            options,
            progress,
            threshold=meta.threshold,
        )
        timings["render"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all
    return Report(
        verdict=clip,
        video=info,
        frames=frames,
        tracks=tracks,
        model={
            "name": meta.name,
            "version": meta.version,
            "input_size": meta.input_size,
            "runtime": bundle.runtime,
        },
        options={
            "frames": options.frames,
            "detector": options.detector,
            "min_face": options.min_face,
        },
        timings={k: round(v, 4) for k, v in timings.items()},
    )


THUMB_HEIGHT = 180


@dataclass
class _Scanned:
    """What the pipeline keeps of a sampled frame once its faces are cropped."""

    index: int
    time: float
    boxes: list[Box]
    crops: list[np.ndarray]
    thumbnail: np.ndarray | None


def _thumbnail(rgb: np.ndarray, height: int) -> np.ndarray:
    width = max(2, round(rgb.shape[1] * height / rgb.shape[0]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _scan(
    samples: Iterator[SampledFrame],
    expected: int,
    detector: FaceDetector | None,
    mode: str,
    size: int,
    progress,
    thumb_height: int = 0,
) -> tuple[list[_Scanned], float]:
    """Detect faces on each sampled frame as it is decoded, on all cores, and crop them.

    Returns what is kept of each frame (its boxes, its `size` px crops, a thumbnail when
    `thumb_height`) and the seconds spent decoding. At most two frames per detecting
    thread are in flight, so a 4K clip sampled 300 times holds a handful of frames, not
    300 (`bench/sample_memory.py`).

    dlib releases the GIL, so threads scale (1.8x on 2 cores), and decoding overlaps
    detection. Each thread borrows its own detector from the process's pool
    (`faces.lend`; a caller's own detector is used by one of them); results are
    identical to a sequential run (tests/detector/test_formats.py checks two people on
    a frame whose rows PyAV pads, the case that once made dlib's scores wander).
    """
    workers = max(1, min(os.cpu_count() or 1, expected))
    if detector is not None:
        mode = detector.mode
    max_side = detector.max_side if detector is not None else FaceDetector.DEFAULT_MAX_SIDE
    need = workers - (detector is not None)
    out: list[_Scanned] = []
    read_s = 0.0
    with lend(mode, max_side, need) as lent:
        spare: queue.SimpleQueue[FaceDetector] = queue.SimpleQueue()
        for det in ([detector] if detector is not None else []) + lent:
            spare.put(det)

        def run(sample: SampledFrame) -> list[Box]:
            det = spare.get()
            try:
                return det.detect(sample.image)
            finally:
                spare.put(det)

        def finish(sample: SampledFrame, boxes: list[Box]) -> None:
            out.append(
                _Scanned(
                    index=sample.index,
                    time=sample.time,
                    boxes=boxes,
                    crops=[square_crop(sample.image, box, size) for box in boxes],
                    thumbnail=_thumbnail(sample.image, thumb_height) if thumb_height else None,
                )
            )
            # Progress (and with it the cancellation check) from the calling thread only.
            progress("detecting", len(out) / expected)

        pending: deque[tuple[SampledFrame, Future[list[Box]]]] = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="detect") as pool:
            try:
                while True:
                    t = time.perf_counter()
                    sample = next(samples, None)
                    read_s += time.perf_counter() - t
                    if sample is None:
                        break
                    pending.append((sample, pool.submit(run, sample)))
                    if len(pending) >= 2 * workers:
                        done, fut = pending.popleft()
                        finish(done, fut.result())
                while pending:
                    done, fut = pending.popleft()
                    finish(done, fut.result())
            finally:
                for _, fut in pending:
                    fut.cancel()
    progress("detecting", 1.0)
    return out, read_s


def samples_spacing(frames: list[int]) -> int:
    """The average gap between sampled frames, in frames."""
    if len(frames) < 2:
        return 15
    return max(1, (frames[-1] - frames[0]) // (len(frames) - 1))


def time_slot(t: float, fps: float) -> int:
    """The frame a time falls on at the clip's average rate: where the render draws.

    A sample's `index` does not serve: a long clip's samples are numbered this way (they
    are found by seeking), a short clip's in decode order, and in a variable-rate clip
    the two differ. Decoded frames and samples both carry their times, so both are
    placed by time; in a constant-rate clip the slot is the decode index.
    """
    return round(t * fps)


def _label_text(label: str, p: float, conf: float, threshold: float, small: bool = False) -> str:
    """What the video shows above a face. Fake and Real carry their confidence; an uncertain
    face claims none (`verdict.uncertain_text`)."""
    if small:
        return "Too small"
    if label == "uncertain":
        return verdict.uncertain_text(p, threshold)
    name = {"fake": "Fake", "real": "Real"}[label]
    return f"{name} {round(conf * 100)}%"


def render_annotated(
    path,
    info,
    samples: list[tuple[int, float]],
    per_track: dict[int, list[tuple[int, float, Box]]],
    tracks: list[Track],
    output_video,
    options: Options,
    progress,
    *,
    threshold: float,
) -> int:
    """Write every frame with each face boxed and labelled; returns frames written.

    `samples` are the (index, time) of every sampled frame, `per_track` a track's
    (index, time, box) of each face. Faces are drawn by time (`time_slot`), and each frame
    is written at its source time, so that the video keeps a variable-rate clip's timing
    and the result page can seek it by a frame's time. A clip whose frames carry no
    timestamps (a raw H.264 stream) is drawn in decode order, as it was sampled, and
    written at its average rate.
    """
    by_id = {t.id: t for t in tracks}

    def boxes_by(timed: bool) -> dict[int, list[tuple[Box, Track]]]:
        def at(index: int, t: float) -> int:
            return time_slot(t, info.fps) if timed else index

        hold = max(1, samples_spacing([at(i, t) for i, t in samples]) // 2)
        out: dict[int, list[tuple[Box, Track]]] = {}
        for tid, items in per_track.items():
            frames = [at(i, t) for i, t, _ in items]
            boxes = [b for _, _, b in items]
            for f, b in tracking.interpolate(frames, boxes, hold=hold).items():
                out.setdefault(f, []).append((b, by_id[tid]))
        return out

    boxes_at: dict[int, list[tuple[Box, Track]]] | None = None
    timed = True
    slot = -1
    w, h, scale = even_size(info.width, info.height, options.annotate_max_side)
    total = max(1, info.frame_count)
    with H264Writer(output_video, info.fps, w, h, preset=options.preset) as writer:
        for i, t, frame in iter_raw_frames(path):
            if boxes_at is None:
                timed = frame.pts is not None
                boxes_at = boxes_by(timed)
            has_time = timed and frame.pts is not None
            # A frame without a timestamp in a timed clip: drawn like the one before it.
            slot = time_slot(t, info.fps) if has_time else (slot if timed else i)
            when = t if has_time else None
            rotation = int(frame.rotation or 0) % 360
            if rotation == 0 and frame.width == w and frame.height == h:
                # The common case: draw on the decoder's own YUV planes. Converting every
                # frame to RGB and back cost about 1.8 s of a 10 s 720p clip's 2.7 s render.
                yuv = frame.to_ndarray(format="yuv420p")
                for box, track in boxes_at.get(slot, []):
                    _draw_yuv(yuv, w, h, _layout(box, track, scale, h, w, threshold))
                writer.write_yuv(yuv, when)
            else:  # rotated, odd-sized or downscaled frames go through RGB
                img = upright(frame.to_ndarray(format="rgb24"), rotation)
                if img.shape[1] != w or img.shape[0] != h:
                    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
                for box, track in boxes_at.get(slot, []):
                    _paint(img, _layout(box, track, scale, h, w, threshold))
                writer.write(img, when)
            if i % 10 == 0:
                progress("rendering", i / total)
    progress("rendering", 1.0)
    return writer.frames


@dataclass
class _Label:
    """Where one face's box and label go, in output-frame pixels."""

    box: tuple[int, int, int, int]
    colour: tuple[int, int, int]
    thick: int
    text: str
    scale: float
    tag: tuple[int, int, int, int]  # the filled rectangle behind the text
    origin: tuple[int, int]

    def bounds(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Everything drawn lies inside this even-aligned rectangle (x0, y0, x1, y1)."""
        m = self.thick + 2
        x0 = min(self.box[0], self.tag[0]) - m
        y0 = min(self.box[1], self.tag[1]) - m
        x1 = max(self.box[2], self.tag[2]) + m
        y1 = max(self.box[3], self.tag[3]) + m
        x0, y0 = max(0, x0) // 2 * 2, max(0, y0) // 2 * 2
        x1, y1 = min(width, (x1 + 1) // 2 * 2), min(height, (y1 + 1) // 2 * 2)
        return x0, y0, x1, y1


def _layout(
    box: Box, track: Track, scale: float, height: int, width: int, threshold: float
) -> _Label:
    colour = {"fake": RED, "real": GREEN}.get(track.label, AMBER)
    l, t, r, b = (round(v * scale) for v in box.to_list())
    thick = max(2, round(min(height, width) / 300))
    text = _label_text(
        track.label, track.fake_probability, track.confidence, threshold, bool(track.note)
    )
    fs = max(0.5, min(height, width) / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, thick)
    y = t - 4 if t - th - base - 4 > 0 else b + th + base + 4
    tag = (l, y - th - base, l + tw + 6, y + base // 2)
    return _Label((l, t, r, b), colour, thick, text, fs, tag, (l + 3, y - base // 2))


def _paint(img: np.ndarray, lab: _Label, dx: int = 0, dy: int = 0) -> None:
    """Draw a label on an RGB image whose top-left corner is at (dx, dy) of the frame."""
    l, t, r, b = lab.box
    cv2.rectangle(img, (l - dx, t - dy), (r - dx, b - dy), lab.colour, lab.thick)
    x0, y0, x1, y1 = lab.tag
    cv2.rectangle(img, (x0 - dx, y0 - dy), (x1 - dx, y1 - dy), lab.colour, -1)
    cv2.putText(
        img,
        lab.text,
        (lab.origin[0] - dx, lab.origin[1] - dy),
        cv2.FONT_HERSHEY_SIMPLEX,
        lab.scale,
        (255, 255, 255),
        lab.thick - 1 or 1,
        cv2.LINE_AA,
    )


def _draw_yuv(yuv: np.ndarray, width: int, height: int, lab: _Label) -> None:
    """Draw on a packed yuv420p frame: only the patch around the label goes through RGB."""
    x0, y0, x1, y1 = lab.bounds(height, width)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    y, u, v = yuv_planes(yuv, width, height)
    py = y[y0:y1, x0:x1]
    pu = u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    pv = v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    ph, pw = py.shape
    i420 = np.concatenate([py.ravel(), pu.ravel(), pv.ravel()]).reshape(ph * 3 // 2, pw)
    rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    _paint(rgb, lab, x0, y0)
    back = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    for plane, drawn in zip((py, pu, pv), yuv_planes(back, pw, ph), strict=True):
        plane[:] = drawn
