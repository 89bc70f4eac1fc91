from __future__ import annotations

import json

import numpy as np
import pytest

from detector.faces import Box, FaceDetector, square_crop
from detector.pipeline import Artifacts, Options, analyse_video
from detector.video import probe, sample_frames, sample_indices
from tests.media import astronaut, blank_clip, moving_frames, read_all, write_clip


def test_it_finds_the_astronaut_face_and_crops_it_square():
    img = astronaut()
    boxes = FaceDetector("hog").detect(img)
    # One face, where the photo has it (her face spans roughly x 175-265, y 75-170).
    assert len(boxes) == 1
    (box,) = boxes
    cx, cy = box.centre
    assert 200 < cx < 245 and 100 < cy < 145
    # The crop is a square 1.3x the box, centred on it, resized to the input size.
    crop = square_crop(img, box, 299)
    assert crop.shape == (299, 299, 3)
    side = int(max(box.width, box.height) * 1.3)
    x1, y1 = int(cx - side // 2), int(cy - side // 2)
    expected = img[y1 : y1 + side, x1 : x1 + side]
    small = square_crop(img, box, side)
    assert np.abs(small.astype(int) - expected.astype(int)).mean() < 1.0


def test_it_clips_the_crop_at_the_frame_edge():
    img = np.zeros((100, 100, 3), np.uint8)
    crop = square_crop(img, Box(70, 70, 100, 100), 64)
    assert crop.shape == (64, 64, 3)


def test_it_lets_each_decoded_frame_go_once_its_faces_are_cropped(
    tmp_path, tiny_bundle, monkeypatch
):
    import os
    import weakref

    import detector.video as video

    clip = write_clip(tmp_path / "c.mp4", moving_frames(48))
    alive: list[weakref.ref] = []
    most = 0
    to_sample = video._to_sample

    def counting(*a):
        nonlocal most
        s = to_sample(*a)
        alive.append(weakref.ref(s.image))
        most = max(most, sum(r() is not None for r in alive))
        return s

    monkeypatch.setattr(video, "_to_sample", counting)
    artifacts = Artifacts()
    report = analyse_video(clip, tiny_bundle, Options(frames=48, min_face=0), artifacts=artifacts)
    # Every frame was decoded, detected and kept in the report...
    assert len(alive) == 48 and len(report.frames) == 48
    assert all(len(f.faces) == 1 for f in report.frames) and len(artifacts.track_crops[0]) == 4
    assert artifacts.thumbnail is not None and artifacts.thumbnail.shape[0] == 180
    # ...but never more than two frames per detecting thread, plus the one being decoded,
    # were held at once (the whole clip was, before: 48 full frames).
    assert most <= 2 * min(os.cpu_count() or 1, 48) + 1


def test_it_samples_evenly_without_duplicates():
    assert sample_indices(300, 32)[:3] == [4, 14, 23]
    assert len(sample_indices(300, 32)) == 32
    assert sample_indices(5, 32) == [0, 1, 2, 3, 4]
    assert sample_indices(0, 32) == []


def test_it_analyses_a_clip_and_writes_a_browser_playable_video(astro_clip, tiny_bundle, tmp_path):
    out = tmp_path / "annotated.mp4"
    stages = []
    artifacts = Artifacts()
    report = analyse_video(
        astro_clip,
        tiny_bundle,
        on_progress=lambda s, f: stages.append((s, f)),
        output_video=out,
        artifacts=artifacts,
    )

    # Every sampled frame has the face, linked into one track.
    assert report.video.frame_count == 30
    assert len(report.frames) == 30
    assert all(len(f.faces) == 1 for f in report.frames)
    assert len(report.tracks) == 1 and report.tracks[0].faces == 30
    assert report.verdict.label in ("real", "fake", "uncertain")
    assert 0.0 <= report.verdict.fake_probability <= 1.0

    # The annotated video: H.264, yuv420p, every input frame, moov before mdat (faststart).
    n, _, info = read_all(out)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert n == 30
    head = out.read_bytes()
    assert head.index(b"moov") < head.index(b"mdat")

    # Progress went through each stage and ended at 100%.
    assert [s for s, _ in stages][0] == "reading" and stages[-1] == ("rendering", 1.0)
    assert artifacts.thumbnail is not None and 0 in artifacts.track_crops

    # The report serialises to JSON with the documented top-level fields.
    data = json.loads(json.dumps(report.to_dict()))
    assert {
        "schema_version",
        "verdict",
        "video",
        "frames",
        "tracks",
        "model",
        "timings",
    } <= data.keys()
    assert data["frames"][0]["faces"][0]["track_id"] == 0


def test_it_does_not_judge_faces_under_the_minimum_width(astro_clip, tiny_bundle, tmp_path):
    # The astronaut's face is about 100 px wide in this clip.
    judged = analyse_video(astro_clip, tiny_bundle, Options(frames=6, min_face=0))
    width = judged.tracks[0].box[2] - judged.tracks[0].box[0]
    assert judged.tracks[0].note == "" and judged.verdict.note == ""
    assert judged.options["min_face"] == 0

    # Set above it, the same face is shown and scored but neither called fake nor real,
    # and the clip says why.
    out = tmp_path / "small.mp4"
    small = analyse_video(
        astro_clip, tiny_bundle, Options(frames=6, min_face=width + 1), output_video=out
    )
    track = small.tracks[0]
    assert track.fake_probability == judged.tracks[0].fake_probability
    assert track.label == "uncertain" and f"{width} px wide" in track.note
    assert track.confidence == 0.0 and small.verdict.confidence == 0.0
    assert small.verdict.label == "uncertain"
    assert (
        small.verdict.note
        == f"Every face is under {width + 1} px wide: too small for the model to judge."
    )
    assert small.options["min_face"] == width + 1
    assert read_all(out)[0] == 30

    # At exactly its width it is judged again.
    assert (
        analyse_video(astro_clip, tiny_bundle, Options(frames=6, min_face=width)).tracks[0].note
        == ""
    )


def test_it_says_no_face_when_there_is_none(tmp_path, tiny_bundle):
    clip = blank_clip(tmp_path / "blank.mp4")
    report = analyse_video(clip, tiny_bundle)
    assert report.verdict.label == "no_face"
    assert report.tracks == []


def test_it_respects_rotation_metadata(tmp_path):
    from tests.media import moving_frames

    # A phone-style clip: stored landscape, displayed portrait.
    frames = [
        np.ascontiguousarray(np.rot90(f, k=1)) for f in moving_frames(5)
    ]  # stored rotated 90° CCW
    clip = write_clip(
        tmp_path / "rot.mp4", frames, rotation=-90
    )  # "rotate=90" (clockwise on display)
    info = probe(clip)
    assert info.rotation in (-90, 270)
    (first,) = sample_frames(clip, info, 1)[:1]
    assert first.image.shape[:2] == (480, 640)  # upright again
    assert len(FaceDetector().detect(first.image)) == 1


def test_it_reads_a_long_clip_by_seeking(tmp_path, monkeypatch):
    import detector.video as video
    from tests.media import moving_frames

    clip = write_clip(tmp_path / "long.mp4", moving_frames(60))
    monkeypatch.setattr(video, "SEQUENTIAL_MAX_FRAMES", 10)
    info = probe(clip)
    samples = sample_frames(clip, info, 8)
    assert len(samples) == 8
    assert [s.index for s in samples] == sample_indices(60, 8)


@pytest.mark.parametrize("k", [1, 3])
def test_it_handles_one_frame_clips(tmp_path, tiny_bundle, k):
    from tests.media import moving_frames

    clip = write_clip(tmp_path / "one.mp4", moving_frames(k))
    out = tmp_path / "one-out.mp4"
    report = analyse_video(clip, tiny_bundle, output_video=out)
    assert report.video.frame_count == k
    assert read_all(out)[0] == k


def test_it_boxes_faces_on_frames_between_samples(tmp_path, tiny_bundle):
    from detector.pipeline import AMBER, GREEN, RED, Options
    from detector.video import iter_frames
    from tests.media import moving_frames

    clip = write_clip(tmp_path / "sparse.mp4", moving_frames(60))
    out = tmp_path / "sparse-out.mp4"
    report = analyse_video(clip, tiny_bundle, Options(frames=6), output_video=out)
    sampled = {f.index for f in report.frames}
    colour = {"fake": RED, "real": GREEN}.get(report.tracks[0].label, AMBER)
    l, t, r, b = report.tracks[0].box
    # A frame that was never sampled still shows the box (interpolated), in the track's colour.
    for i, _t, img in iter_frames(out):
        if i in sampled or i < min(sampled) or i > max(sampled):
            continue
        edge = img[t - 10 : b + 10, l - 30 : r + 30].reshape(-1, 3).astype(int)
        close = np.abs(edge - np.array(colour)).sum(axis=1) < 60
        assert close.sum() > 50, f"no box drawn on frame {i}"
        break
    else:
        pytest.fail("no unsampled frame checked")


def test_it_detects_the_same_faces_on_strided_frames_every_time():
    # PyAV pads rows of odd widths, so frames arrive as strided arrays; dlib misread
    # those, and its scores changed from call to call.
    img = astronaut()
    padded = np.zeros((512, 576, 3), np.uint8)
    padded[:, :512] = img
    strided = padded[:, :512]
    assert not strided.flags["C_CONTIGUOUS"]
    det = FaceDetector()
    expected = [(b.to_list(), round(b.score, 4)) for b in det.detect(img)]
    for _ in range(3):
        assert [(b.to_list(), round(b.score, 4)) for b in det.detect(strided)] == expected


def test_it_draws_labels_on_yuv_frames_as_it_does_on_rgb():
    import cv2

    from detector.faces import Box
    from detector.pipeline import RED, _draw_yuv, _layout, _paint
    from detector.report import Track

    img = cv2.resize(astronaut(), (640, 480))
    h, w = img.shape[:2]
    yuv = cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420)
    track = Track(0, 0, 0, 1, fake_probability=0.9, label="fake", confidence=0.8, box=[])
    lab = _layout(Box(200, 100, 330, 240), track, 1.0, h, w, 0.5)
    # Drawn on the YUV planes (the render's fast path) and on RGB (the general path).
    _draw_yuv(yuv, w, h, lab)
    rgb = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420), cv2.COLOR_YUV2RGB_I420)
    _paint(rgb, lab)
    fast = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420).astype(int)
    # The same picture, up to the rounding of one colour conversion.
    assert np.abs(fast - rgb.astype(int)).mean() < 1.0
    # The box edge is red, and outside the label's patch nothing changed.
    l, t, r, b = lab.box
    assert np.abs(fast[(t + b) // 2, l] - np.array(RED)).sum() < 40
    x0, y0, x1, y1 = lab.bounds(h, w)
    untouched = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420), cv2.COLOR_YUV2RGB_I420)
    assert np.array_equal(fast[y1 + 2 :], untouched[y1 + 2 :].astype(int))


def test_video_labels_claim_confidence_only_for_judged_faces():
    from detector.pipeline import _label_text

    assert _label_text("fake", 0.88, 0.88, 0.64) == "Fake 88%"
    assert _label_text("real", 0.07, 0.93, 0.64) == "Real 93%"
    # Uncertain: no percentage, and the lean is taken against the model's threshold, not 0.5:
    # 0.60 is under a 0.64 threshold, so it leans real, as the result page says.
    assert _label_text("uncertain", 0.60, 0.60, 0.64) == "Uncertain, leans real"
    assert _label_text("uncertain", 0.70, 0.70, 0.64) == "Uncertain, leans fake"
    assert _label_text("uncertain", 0.70, 0.0, 0.64, small=True) == "Too small"


def test_detectors_are_built_once_per_process_and_never_lent_twice_at_once():
    from detector.faces import lend

    with lend("hog", 640, 2) as first:
        assert len({id(d) for d in first}) == 2
        # Lent out: a concurrent borrower gets detectors of its own.
        with lend("hog", 640, 1) as other:
            assert id(other[0]) not in {id(d) for d in first}
    with lend("hog", 640, 3) as again:
        # Returned ones are reused (no 0.25 s rebuild), and more are built when needed.
        assert {id(d) for d in first + other} <= {id(d) for d in again}
        assert all(d.mode == "hog" and d.max_side == 640 for d in again)
    # A pooled detector finds what a fresh one finds.
    with lend() as (det,):
        assert [b.to_list() for b in det.detect(astronaut())] == [
            b.to_list() for b in FaceDetector().detect(astronaut())
        ]


SPEED = 120  # px per second: the astronaut's drift in the variable-rate clip


def vfr_clip(path, fast: int = 40, slow: int = 20):
    """The astronaut drifting right at SPEED px/s, her place a function of time: `fast`
    frames at 50 fps, then `slow` at 12.5 fps (as phones record), timed in ms."""
    from fractions import Fraction

    import av

    src = astronaut()
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=Fraction(25))
    stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
    stream.codec_context.time_base = Fraction(1, 1000)
    ms = 0
    for i in range(fast + slow):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        dx = round(SPEED * ms / 1000)
        w = min(512, 640 - dx)
        canvas[:, dx : dx + w] = src[:480, :w]
        frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
        frame.pts, frame.time_base = ms, Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
        ms += 20 if i < fast else 80
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def decoded(path) -> list[tuple[float, np.ndarray]]:
    from detector.video import iter_frames

    return [(t, img) for _, t, img in iter_frames(path)]


@pytest.mark.parametrize("seek", [True, False], ids=["seeking", "sequential"])
def test_it_boxes_a_variable_rate_clip_where_the_face_is_and_keeps_its_timing(
    tmp_path, tiny_bundle, monkeypatch, seek
):
    import detector.video as video
    from detector.pipeline import AMBER, GREEN, RED

    clip = vfr_clip(tmp_path / "vfr.mp4")
    if seek:  # long clips are sampled by seeking, and samples numbered by time
        monkeypatch.setattr(video, "SEQUENTIAL_MAX_FRAMES", 10)
    out = tmp_path / "vfr-out.mp4"
    report = analyse_video(clip, tiny_bundle, Options(frames=6), output_video=out)
    assert len(report.tracks) == 1 and all(len(f.faces) == 1 for f in report.frames)
    source, annotated = decoded(clip), decoded(out)
    # Samples found by seeking are numbered by time, not by their place in decode order.
    position = {round(t, 3): k for k, (t, _) in enumerate(source)}
    numbered = [f.index == position[round(f.time, 3)] for f in report.frames]
    assert not all(numbered) if seek else all(numbered)

    # (ii) Each frame is shown at its source time, which the result page seeks to.
    assert len(annotated) == len(source) == 60
    for (ts, _), (ta, _) in zip(source, annotated, strict=True):
        assert abs(ta - ts) < 0.01, f"source frame at {ts:.2f} s shown at {ta:.2f} s"

    # (i) Between the first and the last sample, every frame has the box where the face
    # is at that frame's time (the face's left edge moves by SPEED px/s).
    colour = np.array({"fake": RED, "real": GREEN}.get(report.tracks[0].label, AMBER))
    offset = np.median([f.faces[0].box[0] - SPEED * f.time for f in report.frames])
    first, last = report.frames[0].time, report.frames[-1].time
    checked = 0
    for (t, before), (_, after) in zip(source, annotated, strict=True):
        if not first <= t <= last:
            continue
        # Box pixels: the track's colour in the output, not in the source (the photo
        # has red in it).
        near = np.abs(after.astype(int) - colour).sum(axis=2) < 60
        drawn = near & (np.abs(before.astype(int) - colour).sum(axis=2) >= 60)
        columns = np.flatnonzero(drawn.sum(axis=0) > 40)  # the box's upright edges
        assert columns.size, f"no box drawn on the frame at {t:.2f} s"
        expected = offset + SPEED * t
        assert abs(columns[0] - expected) < 14, (
            f"box at x={columns[0]} on the frame at {t:.2f} s; the face is at x={expected:.0f}"
        )
        checked += 1
    assert checked > 30


def test_the_writer_shows_frames_at_their_times_or_at_its_rate(tmp_path):
    import av

    from detector.video import H264Writer

    def written(times: list[float | None]) -> tuple[list[float], float]:
        out = tmp_path / "w.mp4"
        with H264Writer(out, 25, 64, 48) as writer:
            for k, t in enumerate(times):
                writer.write(np.full((48, 64, 3), k * 20, np.uint8), t)
        with av.open(str(out)) as c:
            s = c.streams.video[0]
            assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
            shown = [float(f.pts * s.time_base) for f in c.decode(s)]
            duration = float(s.duration * s.time_base)
        assert out.read_bytes().index(b"moov") < out.read_bytes().index(b"mdat")
        return shown, duration

    # Untimed: one frame every 1/25 s, as before, the last lasting one frame too.
    shown, duration = written([None] * 10)
    assert shown == pytest.approx([k / 25 for k in range(10)]) and duration == pytest.approx(0.4)
    # Timed: at the given times; two on one time are kept apart by a tick; an untimed
    # frame follows the last one at the writer's rate.
    shown, _ = written([0.0, 0.5, 0.5, 1.25, None])
    assert shown == pytest.approx([0.0, 0.5, 0.5 + 1 / 90_000, 1.25, 1.29], abs=1e-6)
