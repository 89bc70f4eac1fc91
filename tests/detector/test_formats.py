"""Containers and codecs beyond MP4/H.264, variable frame rate, and the CNN detector."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from detector import video
from detector.faces import FaceDetector
from detector.pipeline import analyse_video
from tests.media import astronaut, encode_all, moving_frames, read_all, write_clip


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


def counting_clip(path, n: int, codec: str = "libx264", gop: int = 250, first_pts: int = 0, **kw):
    """n small frames at 25 fps whose grey level is twice their index, so that a
    decoded frame tells which one it is; `kw` goes to av.open (format, options)."""
    c = av.open(str(path), "w", **kw)
    s = c.add_stream(codec, rate=Fraction(25))
    s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
    s.codec_context.time_base = Fraction(1, 25)
    if codec == "libx264":
        s.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
    else:
        s.options = {"deadline": "realtime", "cpu-used": "8"}

    def frame(i: int) -> av.VideoFrame:
        f = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 2 * i, np.uint8), format="rgb24")
        f.pts = first_pts + i
        return f

    encode_all(c, s, (frame(i) for i in range(n)))
    return path


def test_it_measures_a_webm_recorded_live(tmp_path):
    # A browser's MediaRecorder leaves the duration and frame count blank.
    path = counting_clip(
        tmp_path / "live.webm", 60, codec="libvpx-vp9", format="webm", options={"live": "1"}
    )
    with av.open(str(path)) as c:
        assert c.duration is None and not c.streams.video[0].frames
    info = video.probe(path)
    assert abs(info.frame_count - 60) <= 1
    assert info.duration == pytest.approx(2.4, abs=0.05)

    # So the clip is judged on many frames, not on its first one alone.
    assert len(video.sample_frames(path, info, 32)) == 32


@pytest.mark.parametrize("ext", ["ts", "mp4"])
@pytest.mark.parametrize("gop", [30, 1000], ids=["gops", "one-gop"])
def test_it_samples_long_clips_at_the_wanted_frames(tmp_path, monkeypatch, ext, gop):
    path = counting_clip(tmp_path / f"long.{ext}", 120, gop=gop)
    monkeypatch.setattr(video, "SEQUENTIAL_MAX_FRAMES", 50)
    passes = []
    sequential = video._sample_sequential
    monkeypatch.setattr(video, "_sample_sequential", lambda *a: passes.append(1) or sequential(*a))
    info = video.probe(path)
    wanted = video.sample_indices(info.frame_count, 8)
    samples = video.sample_frames(path, info, 8)

    # Every wanted frame, and the right one: its grey level gives its index.
    assert info.frame_count == 120
    assert [s.index for s in samples] == wanted
    assert [round(s.time, 2) for s in samples] == [round(i / 25, 2) for i in wanted]
    for s in samples:
        assert abs(int(s.image[60, 80, 0]) - 2 * s.index) <= 6

    # MP4 seeks; MPEG-TS, which seeks only forward, is decoded in one pass.
    assert len(passes) == (1 if ext == "ts" else 0)


def test_a_frame_count_past_the_video_end_keeps_seeking(tmp_path, monkeypatch):
    """An MKV's duration is the container's, which an audio track can outlast: the frame
    count then runs past the last frame. The samples past it take the last frame; the clip
    is not decoded again in one pass as if it could not seek."""
    path = tmp_path / "audio-longer.mkv"
    c = av.open(str(path), "w", format="matroska")
    v = c.add_stream("libx264", rate=Fraction(25))
    v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
    v.options = {"x264-params": "keyint=30:min-keyint=30:scenecut=0"}
    a = c.add_stream("aac", rate=16000)
    for i in range(120):
        img = np.full((120, 160, 3), 2 * i, np.uint8)
        c.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
    c.mux(v.encode())
    for k in range(int(7.0 * 16000 / 1024)):  # 7 s of silence against 4.8 s of video
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        frame.sample_rate, frame.pts = 16000, k * 1024
        c.mux(a.encode(frame))
    c.mux(a.encode())
    c.close()
    monkeypatch.setattr(video, "SEQUENTIAL_MAX_FRAMES", 50)
    passes = []
    sequential = video._sample_sequential
    monkeypatch.setattr(video, "_sample_sequential", lambda *a: passes.append(1) or sequential(*a))
    info = video.probe(path)
    assert info.frame_count > 150  # the container's duration, not the video's
    samples = video.sample_frames(path, info, 8)
    assert passes == []
    assert samples[-1].index == 119 and len(samples) >= 5
    early = [i for i in video.sample_indices(info.frame_count, 8) if i < 120]
    assert [s.index for s in samples[: len(early)]] == early


@pytest.mark.parametrize("threshold", [900, 10], ids=["sequential", "seeking"])
def test_it_times_frames_from_the_start_of_the_clip(tmp_path, monkeypatch, threshold):
    # A recording whose clock reads one hour at its first frame.
    path = counting_clip(tmp_path / "late.ts", 20, gop=10, first_pts=25 * 3600)
    monkeypatch.setattr(video, "SEQUENTIAL_MAX_FRAMES", threshold)
    info = video.probe(path)
    samples = video.sample_frames(path, info, 4)
    assert [s.index for s in samples] == video.sample_indices(20, 4)
    assert [round(s.time, 2) for s in samples] == [round(s.index / 25, 2) for s in samples]
    assert [round(t, 2) for _, t, _ in video.iter_raw_frames(path)][:2] == [0.0, 0.04]
