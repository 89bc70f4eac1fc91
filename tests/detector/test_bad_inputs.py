"""A corpus of bad inputs the tests make: each gives a typed error with a message a
person can act on, or an honest no_face verdict; none crashes."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from detector.errors import DetectorError, NotAVideo, NoVideoStream, UnreadableVideo
from detector.pipeline import analyse_video
from tests.media import astronaut, encode_all, moving_frames, write_clip


def _audio_only(path):
    c = av.open(str(path), "w")
    s = c.add_stream("aac", rate=44100)
    samples = np.zeros((1, 1024), np.float32)

    def frame(i: int) -> av.AudioFrame:
        f = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        f.sample_rate = 44100
        f.pts = i * 1024
        return f

    encode_all(c, s, (frame(i) for i in range(20)))
    return path


@pytest.fixture
def corpus(tmp_path):
    good = write_clip(tmp_path / "good.mp4", moving_frames(20))
    data = good.read_bytes()
    files = {}
    (files.setdefault("empty", tmp_path / "empty.mp4")).write_bytes(b"")
    (files.setdefault("text", tmp_path / "notes.mp4")).write_text("this is not a video\n" * 50)
    (files.setdefault("truncated", tmp_path / "truncated.mp4")).write_bytes(data[: len(data) // 3])
    cv2.imwrite(str(files.setdefault("still", tmp_path / "photo.jpg")), astronaut()[:, :, ::-1])
    files["audio"] = _audio_only(tmp_path / "audio.m4a")
    return files


@pytest.mark.parametrize(
    "name,error",
    [
        ("empty", UnreadableVideo),
        ("text", UnreadableVideo),
        ("truncated", UnreadableVideo),
        ("still", NotAVideo),
        ("audio", NoVideoStream),
    ],
)
def test_it_refuses_bad_inputs_with_a_clear_message(corpus, tiny_bundle, name, error):
    with pytest.raises(error) as info:
        analyse_video(corpus[name], tiny_bundle)
    # A sentence for people, and a stable code for machines.
    assert len(str(info.value)) > 15 and str(info.value)[0].isupper()
    assert info.value.code


def test_it_handles_an_8k_frame_by_detecting_on_a_smaller_copy(tmp_path, tiny_bundle):
    big = np.full((4320, 7680, 3), 90, np.uint8)
    face = cv2.resize(astronaut(), (2048, 2048))
    big[1000:3048, 3000:5048] = face
    clip = write_clip(tmp_path / "8k.mp4", [big], fps=1)
    out = tmp_path / "8k-out.mp4"
    report = analyse_video(clip, tiny_bundle, output_video=out)
    assert report.video.width == 7680
    assert len(report.tracks) == 1
    l, t, r, b = report.tracks[0].box
    # The box is mapped back to full-resolution coordinates.
    assert 3000 < l < r < 5048 and 1000 < t < b < 3048


def test_it_reports_no_face_for_a_dog(shared_data, tmp_path, tiny_bundle):
    img = cv2.imread(str(shared_data / "images" / "dogs.jpg"))[:, :, ::-1]
    h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
    clip = write_clip(
        tmp_path / "dogs.mp4", [np.ascontiguousarray(img[:h, :w])] * 3, fps=Fraction(1)
    )
    assert analyse_video(clip, tiny_bundle).verdict.label == "no_face"


def test_every_error_is_a_detector_error():
    assert issubclass(NotAVideo, DetectorError) and issubclass(NoVideoStream, DetectorError)
