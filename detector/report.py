"""The analysis report: plain dataclasses, serialised to a versioned JSON schema.

Schema (version 1):
    schema_version   "1"
    verdict          {label: real|fake|uncertain|no_face, fake_probability, threshold,
                      uncertain_margin, confidence, note}
    video            {duration, fps, width, height, rotation, codec, frame_count}
    frames           [{index, time, faces: [{box: [l, t, r, b], fake_probability, track_id}]}]
    tracks           [{id, first_frame, last_frame, faces, fake_probability, label, confidence,
                       box, note}]
    model            {name, version, input_size, runtime: onnx|keras}
    options          {frames, detector, min_face}
    timings          {stage: seconds, ..., total}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from detector.video import VideoInfo

SCHEMA_VERSION = "1"


@dataclass
class Face:
    box: list[int]
    fake_probability: float
    track_id: int = -1


@dataclass
class FrameResult:
    index: int
    time: float
    faces: list[Face] = field(default_factory=list)


@dataclass
class Track:
    id: int
    first_frame: int
    last_frame: int
    faces: int
    fake_probability: float
    label: str
    confidence: float
    box: list[int]  # a representative box (the largest)
    note: str = ""  # why the track was not judged (too small), else ""


@dataclass
class Verdict:
    label: str  # real | fake | uncertain | no_face
    fake_probability: float
    threshold: float
    uncertain_margin: float
    confidence: float
    note: str = ""  # which faces the verdict left out (too small), else ""


@dataclass
class Report:
    verdict: Verdict
    video: VideoInfo
    frames: list[FrameResult]
    tracks: list[Track]
    model: dict[str, Any]
    options: dict[str, Any]
    timings: dict[str, float]
    schema_version: str = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
