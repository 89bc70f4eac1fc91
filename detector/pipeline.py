"""analyse_video: one clip in, one Report (and optionally an annotated MP4) out."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from detector import tracking, verdict
from detector.faces import Box, FaceDetector, square_crop
from detector.model import ModelBundle
from detector.report import Face, FrameResult, Report, Track, Verdict
from detector.video import H264Writer, even_size, iter_frames, probe, sample_frames

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

    1. Probe the clip and decode `options.frames` evenly spaced frames.
    2. Detect faces (dlib) on each, link them into tracks.
    3. Crop 1.3x squares, classify them in fixed-size batches.
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
    samples = sample_frames(path, info, options.frames)
    timings["read"] = time.perf_counter() - t
    progress("reading", 1.0)

    t = time.perf_counter()
    detections = _detect_all(samples, detector or FaceDetector(options.detector), progress)
    track_ids = tracking.link(detections)
    timings["detect"] = time.perf_counter() - t

    t = time.perf_counter()
    size = bundle.input_size
    crops = [
        square_crop(s.image, box, size)
        for s, (_, boxes) in zip(samples, detections, strict=True)
        for box in boxes
    ]
    probs = bundle.predict(np.stack(crops)) if crops else np.zeros((0,), np.float32)
    timings["classify"] = time.perf_counter() - t
    progress("classifying", 1.0)

    frames: list[FrameResult] = []
    per_track: dict[int, list[tuple[int, Box, float]]] = {}
    k = 0
    for s, (_, boxes), ids in zip(samples, detections, track_ids, strict=True):
        fr = FrameResult(index=s.index, time=round(s.time, 4))
        for box, tid in zip(boxes, ids, strict=True):
            p = float(probs[k])
            k += 1
            fr.faces.append(Face(box=box.to_list(), fake_probability=round(p, 5), track_id=tid))
            per_track.setdefault(tid, []).append((s.index, box, p))
        frames.append(fr)

    meta = bundle.meta
    tracks: list[Track] = []
    for tid, items in sorted(per_track.items()):
        p = verdict.track_probability([x[2] for x in items])
        label = verdict.label_for(p, meta.threshold, meta.uncertain_margin)
        biggest = max(items, key=lambda x: x[1].width * x[1].height)[1]
        tracks.append(
            Track(
                id=tid,
                first_frame=items[0][0],
                last_frame=items[-1][0],
                faces=len(items),
                fake_probability=round(p, 5),
                label=label,
                confidence=round(verdict.confidence_for(p, label), 5),
                box=biggest.to_list(),
            )
        )
    label, p_clip, conf = verdict.clip_verdict(
        [t.fake_probability for t in tracks], meta.threshold, meta.uncertain_margin
    )
    clip = Verdict(
        label=label,
        fake_probability=round(p_clip, 5),
        threshold=meta.threshold,
        uncertain_margin=meta.uncertain_margin,
        confidence=round(conf, 5),
    )

    if artifacts is not None and samples:
        mid = samples[len(samples) // 2].image
        th = 180
        artifacts.thumbnail = cv2.resize(
            mid, (max(2, round(mid.shape[1] * th / mid.shape[0])), th), interpolation=cv2.INTER_AREA
        )
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
            path, info, per_track, tracks, samples_spacing(samples), output_video, options, progress
        )
        timings["render"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_all
    return Report(
        verdict=clip,
        video=info,
        frames=frames,
        tracks=tracks,
        model={"name": meta.name, "version": meta.version, "input_size": meta.input_size},
        options={"frames": options.frames, "detector": options.detector},
        timings={k: round(v, 4) for k, v in timings.items()},
    )


def _detect_all(samples, detector: FaceDetector, progress) -> list[tuple[int, list[Box]]]:
    """Detect on every sampled frame, on all cores.

    dlib releases the GIL, so threads scale (1.8x on 2 cores). Each thread borrows its
    own detector object, all built here on the calling thread; results are identical
    to a sequential run (tests/detector/test_formats.py checks two people on
    a frame whose rows PyAV pads, the case that once made dlib's scores wander).
    """
    workers = max(1, min(os.cpu_count() or 1, len(samples)))
    spare: queue.SimpleQueue[FaceDetector] = queue.SimpleQueue()
    spare.put(detector)
    for _ in range(workers - 1):
        spare.put(detector.clone())

    def run(sample) -> list[Box]:
        det = spare.get()
        try:
            return det.detect(sample.image)
        finally:
            spare.put(det)

    out: list[tuple[int, list[Box]]] = []
    with ThreadPoolExecutor(workers, thread_name_prefix="detect") as pool:
        for i, (s, boxes) in enumerate(zip(samples, pool.map(run, samples), strict=True)):
            out.append((s.index, boxes))
            # Progress (and with it the cancellation check) from the calling thread only.
            progress("detecting", (i + 1) / len(samples))
    return out


def samples_spacing(samples) -> int:
    if len(samples) < 2:
        return 15
    return max(1, (samples[-1].index - samples[0].index) // (len(samples) - 1))


def _label_text(label: str, p: float, conf: float) -> str:
    name = {"fake": "Fake", "real": "Real", "uncertain": "Fake?" if p >= 0.5 else "Real?"}[label]
    return f"{name} {round(conf * 100)}%"


def render_annotated(
    path,
    info,
    per_track: dict[int, list[tuple[int, Box, float]]],
    tracks: list[Track],
    spacing: int,
    output_video,
    options: Options,
    progress,
) -> int:
    """Write every frame with each face boxed and labelled; returns frames written."""
    by_id = {t.id: t for t in tracks}
    boxes_at: dict[int, list[tuple[Box, Track]]] = {}
    for tid, items in per_track.items():
        frames = [x[0] for x in items]
        boxes = [x[1] for x in items]
        for f, b in tracking.interpolate(frames, boxes, hold=max(1, spacing // 2)).items():
            boxes_at.setdefault(f, []).append((b, by_id[tid]))
    w, h, scale = even_size(info.width, info.height, options.annotate_max_side)
    total = max(1, info.frame_count)
    with H264Writer(output_video, info.fps, w, h, preset=options.preset) as writer:
        for i, _t, img in iter_frames(path):
            if img.shape[1] != w or img.shape[0] != h:
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            else:
                img = img.copy()
            for box, track in boxes_at.get(i, []):
                _draw(img, box, track, scale)
            writer.write(img)
            if i % 10 == 0:
                progress("rendering", i / total)
    progress("rendering", 1.0)
    return writer.frames


def _draw(img: np.ndarray, box: Box, track: Track, scale: float) -> None:
    colour = {"fake": RED, "real": GREEN}.get(track.label, AMBER)
    l, t, r, b = (round(v * scale) for v in box.to_list())
    thick = max(2, round(min(img.shape[:2]) / 300))
    cv2.rectangle(img, (l, t), (r, b), colour, thick)
    text = _label_text(track.label, track.fake_probability, track.confidence)
    fs = max(0.5, min(img.shape[:2]) / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, thick)
    y = t - 4 if t - th - base - 4 > 0 else b + th + base + 4
    cv2.rectangle(img, (l, y - th - base), (l + tw + 6, y + base // 2), colour, -1)
    cv2.putText(
        img,
        text,
        (l + 3, y - base // 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        fs,
        (255, 255, 255),
        thick - 1 or 1,
        cv2.LINE_AA,
    )
