"""Link face boxes across sampled frames into tracks (one per person), and
interpolate boxes for the frames in between."""

from __future__ import annotations

from dataclasses import dataclass, field

from detector.faces import Box


@dataclass
class TrackState:
    id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)


MATCH_MIN = 0.1  # a box joins a track only if at least this similar to its last box
REACH = 1.6  # ...which, for boxes that no longer overlap, means centres this many widths apart


def _similar(a: Box, b: Box) -> float:
    """How alike two boxes in consecutive samples are: their IoU, or, when the face moved
    far between samples (samples of a long clip are a second or more apart), closeness of
    the centres in face widths, for boxes of comparable size.

    Closeness is 0.5 for the same centre and reaches MATCH_MIN at REACH widths.
    """
    iou = a.iou(b)
    wa, wb = max(a.width, 1), max(b.width, 1)
    if min(wa, wb) / max(wa, wb) < 0.5:
        return iou
    (ax, ay), (bx, by) = a.centre, b.centre
    dist = ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5 / max(wa, wb)
    slope = (0.5 - MATCH_MIN) / REACH
    return max(iou, 0.5 - slope * dist)


def link(detections: list[tuple[int, list[Box]]], max_gap: int = 4) -> list[list[int]]:
    """Assign a track id to every box.

    `detections` is [(frame_index, boxes)] in frame order. Greedy matching on
    similarity against each track's last box; a track not seen for `max_gap`
    samples is closed. Returns track ids parallel to each frame's boxes.
    """
    tracks: list[TrackState] = []
    last_seen: dict[int, int] = {}
    out: list[list[int]] = []
    for sample_no, (frame, boxes) in enumerate(detections):
        open_tracks = [t for t in tracks if sample_no - last_seen[t.id] <= max_gap]
        pairs = sorted(
            (
                (_similar(t.boxes[-1], box), ti, bi)
                for ti, t in enumerate(open_tracks)
                for bi, box in enumerate(boxes)
            ),
            reverse=True,
        )
        ids = [-1] * len(boxes)
        used: set[int] = set()
        for score, ti, bi in pairs:
            if score < MATCH_MIN or ti in used or ids[bi] != -1:
                continue
            used.add(ti)
            ids[bi] = open_tracks[ti].id
        for bi, box in enumerate(boxes):
            if ids[bi] == -1:
                t = TrackState(id=len(tracks))
                tracks.append(t)
                ids[bi] = t.id
            t = tracks[ids[bi]]
            t.frames.append(frame)
            t.boxes.append(box)
            last_seen[t.id] = sample_no
        out.append(ids)
    return out


def interpolate(frames: list[int], boxes: list[Box], hold: int) -> dict[int, Box]:
    """Boxes for every frame of a track: linear between samples, held `hold`
    frames beyond the first and last sample."""
    result: dict[int, Box] = {}
    for f, b in zip(frames, boxes, strict=True):
        result[f] = b
    pairs = list(zip(frames, boxes, strict=True))
    for (f0, b0), (f1, b1) in zip(pairs, pairs[1:], strict=False):
        span = f1 - f0
        for f in range(f0 + 1, f1):
            a = (f - f0) / span
            result[f] = Box(
                round(b0.left + (b1.left - b0.left) * a),
                round(b0.top + (b1.top - b0.top) * a),
                round(b0.right + (b1.right - b0.right) * a),
                round(b0.bottom + (b1.bottom - b0.bottom) * a),
            )
    for f in range(frames[0] - hold, frames[0]):
        result.setdefault(f, boxes[0])
    for f in range(frames[-1] + 1, frames[-1] + hold + 1):
        result.setdefault(f, boxes[-1])
    return result
