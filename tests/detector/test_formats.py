"""Containers and codecs beyond MP4/H.264, variable frame rate, and the CNN detector."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from detector.faces import FaceDetector
from detector.pipeline import analyse_video
from tests.media import astronaut, moving_frames, read_all, write_clip


@pytest.mark.parametrize(
    "name,codec,pix_fmt",
    [
        ("clip.mov", "libx264", "yuv420p"),
        ("clip.mkv", "libx264", "yuv420p"),
        ("clip.avi", "mpeg4", "yuv420p"),
        ("clip.webm", "libvpx-vp9", "yuv420p"),
    ],
)
def test_it_reads_common_containers(tmp_path, tiny_bundle, name, codec, pix_fmt):
    clip = write_clip(tmp_path / name, moving_frames(10), codec=codec, pix_fmt=pix_fmt)
    out = tmp_path / "out.mp4"
    report = analyse_video(clip, tiny_bundle, output_video=out)
    assert len(report.tracks) == 1
    assert read_all(out)[0] == 10


def test_it_handles_variable_frame_rate(tmp_path, tiny_bundle):
    path = tmp_path / "vfr.mp4"
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=Fraction(30))
    s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
    s.codec_context.time_base = Fraction(1, 1000)
    t = 0
    for i, img in enumerate(moving_frames(20)):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = t, Fraction(1, 1000)
        t += 20 if i % 2 else 60  # alternating 50 fps and ~17 fps
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    out = tmp_path / "out.mp4"
    report = analyse_video(path, tiny_bundle, output_video=out)
    assert len(report.frames) >= 15 and len(report.tracks) == 1
    assert read_all(out)[0] == 20
    times = [f.time for f in report.frames]
    assert times == sorted(times)


def test_the_cnn_detector_finds_the_face_too():
    boxes = FaceDetector("cnn", max_side=512).detect(astronaut())
    assert len(boxes) == 1
    cx, cy = boxes[0].centre
    assert 190 < cx < 255 and 90 < cy < 160


def test_it_tracks_two_people_separately(tmp_path, tiny_bundle):
    face = astronaut()[40:220, 130:310]
    frames = []
    for i in range(10):
        canvas = np.full((400, 900, 3), 80, np.uint8)
        canvas[100:280, 50 + i : 230 + i] = face
        canvas[120:300, 600 - i : 780 - i] = face[:, ::-1]
        frames.append(canvas)
    report = analyse_video(write_clip(tmp_path / "two.mp4", frames), tiny_bundle)
    # Two tracks, one per person, each seen in every sampled frame.
    assert len(report.tracks) == 2
    assert all(t.faces == 10 for t in report.tracks)
    assert {f.faces[0].track_id for f in report.frames} | {
        f.faces[1].track_id for f in report.frames
    } == {0, 1}
