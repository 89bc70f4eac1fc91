"""Property-based tests (hypothesis) for the upload validator, the display names and
the verdict aggregation."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.verdict import (
    FAKE,
    NO_FACE,
    REAL,
    UNCERTAIN,
    clip_note,
    clip_verdict,
    confidence_for,
    label_for,
    small_face_note,
    track_label,
    track_probability,
)
from tests.media import moving_frames, write_clip
from webapp.analyses.submit import safe_display_name
from webapp.analyses.validation import RejectedUpload, sniff_container, validate_upload

# A loaded machine is slow, not wrong: no per-example deadline.
NO_DEADLINE = settings(deadline=None)
CONTAINERS = {"mp4", "matroska", "avi", "flv", "mpegts", "mpeg", None}

# --- The upload validator -------------------------------------------------------


@NO_DEADLINE
@given(st.binary(max_size=1024))
def test_it_never_raises_on_arbitrary_bytes(head):
    # Any bytes at all: a container name or None, never an exception.
    assert sniff_container(head) in CONTAINERS


# Real clips in each container the site accepts, encoded here with PyAV.
REAL_CLIPS = {
    "clip.mp4": ("libx264", "mp4"),
    "clip.mov": ("mpeg4", "mp4"),
    "clip.mkv": ("mpeg4", "matroska"),
    "clip.webm": ("libvpx", "matroska"),
    "clip.avi": ("mpeg4", "avi"),
    "clip.flv": ("flv", "flv"),
    "clip.ts": ("mpeg4", "mpegts"),
    "clip.mpg": ("mpeg1video", "mpeg"),
}


@pytest.fixture(scope="module")
def real_heads(tmp_path_factory) -> dict[str, tuple[bytes, str]]:
    folder = tmp_path_factory.mktemp("containers")
    frames = moving_frames(6, 160, 120)
    heads = {}
    for name, (codec, kind) in REAL_CLIPS.items():
        path = write_clip(Path(folder / name), frames, codec=codec)
        heads[name] = (path.read_bytes()[:512], kind)
    return heads


def test_it_accepts_real_containers(real_heads):
    for name, (head, kind) in real_heads.items():
        assert sniff_container(head) == kind, name
        assert validate_upload(io.BytesIO(head + b"\x00" * 100), 612, 10_000) == kind


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tail=st.binary(max_size=600), name=st.sampled_from(sorted(REAL_CLIPS)))
def test_it_judges_a_real_container_by_its_head_alone(real_heads, tail, name):
    # Whatever follows the first bytes of a real clip, the verdict is the same.
    head, kind = real_heads[name]
    cut = 200 if kind != "mpegts" else 512
    assert sniff_container((head[:cut] + tail)[:512]) == kind


MARKUP = st.sampled_from(
    [
        "<!doctype html><html>",
        "<html>",
        "<?xml version='1.0'?>",
        '<svg xmlns="http://www.w3.org/2000/svg">',
        "{",
        "",
        "\ufeff",
        "  \n\t<body>",
    ]
)
# Text as people write it: any character but control ones, whitespace included.
TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Cc"], include_characters="\t\n\r\f\v"),
    max_size=600,
)


@NO_DEADLINE
@given(prefix=MARKUP, body=TEXT)
def test_it_rejects_text_html_and_svg(prefix, body):
    # Text is never a video, even when "ftyp" or "G" happen to sit where a container's
    # magic bytes would.
    data = (prefix + body).encode("utf-8")
    assert sniff_container(data[:512]) is None
    if data:
        with pytest.raises(RejectedUpload):
            validate_upload(io.BytesIO(data), len(data), 10_000)


@NO_DEADLINE
@given(body=TEXT)
def test_it_rejects_text_dressed_as_a_container(body):
    for magic in ("abcdftypisom", "FLV", "G" + "x" * 187 + "G"):
        assert sniff_container((magic + body).encode()[:512]) is None


@NO_DEADLINE
@given(st.text(max_size=400))
def test_it_makes_every_display_name_safe(name):
    # Any name a client sends: no folders, nothing unprintable, 1 to 200 characters.
    shown = safe_display_name(name)
    assert 0 < len(shown) <= 200
    assert "/" not in shown and "\\" not in shown and shown.isprintable()


# --- The verdict ----------------------------------------------------------------

PROB = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
THRESHOLD = st.floats(min_value=0.01, max_value=0.99, allow_nan=False)
MARGIN = st.floats(min_value=0.0, max_value=0.3, allow_nan=False)


@NO_DEADLINE
@given(p=PROB, t=THRESHOLD, m=MARGIN)
def test_it_labels_a_probability_by_the_band_around_the_threshold(p, t, m):
    label = label_for(p, t, m)
    # Fake at or above the band, real below it, uncertain inside it.
    assert (label == FAKE) == (p >= t + m)
    assert (label == REAL) == (p < t - m)
    assert (label == UNCERTAIN) == (t - m <= p < t + m)
    assert 0.0 <= confidence_for(p, label) <= 1.0


@NO_DEADLINE
@given(tracks=st.lists(PROB, max_size=8), t=THRESHOLD, m=MARGIN)
def test_it_aggregates_tracks_into_an_honest_clip_verdict(tracks, t, m):
    label, p, confidence = clip_verdict(tracks, t, m)
    # No face iff no track: a clip without faces is never called real.
    assert (label == NO_FACE) == (not tracks)
    # Fake iff some track is at or above the band: one fake face makes a fake clip.
    assert (label == FAKE) == any(x >= t + m for x in tracks)
    # Real only if every track is below the band.
    if label == REAL:
        assert all(x < t - m for x in tracks)
    # Probabilities and confidence are in [0, 1]; the clip's is its worst track's.
    assert 0.0 <= p <= 1.0 and 0.0 <= confidence <= 1.0
    if tracks:
        assert p == max(tracks)


@NO_DEADLINE
@given(tracks=st.lists(PROB, min_size=1, max_size=6), i=st.integers(0, 5), t=THRESHOLD, m=MARGIN)
def test_it_never_clears_a_clip_when_a_face_looks_more_fake(tracks, i, t, m):
    # Raising one track's probability never turns a fake clip into a non-fake one.
    before = clip_verdict(tracks, t, m)[0]
    raised = list(tracks)
    raised[i % len(raised)] = 1.0
    if before == FAKE:
        assert clip_verdict(raised, t, m)[0] == FAKE


@NO_DEADLINE
@given(st.lists(PROB, min_size=1, max_size=50))
def test_it_averages_a_track_within_its_faces(probs):
    p = track_probability(probs)
    assert 0.0 <= p <= 1.0
    assert min(probs) - 1e-9 <= p <= max(probs) + 1e-9


WIDTH = st.integers(min_value=1, max_value=400)


@NO_DEADLINE
@given(
    tracks=st.lists(st.tuples(PROB, WIDTH), max_size=8),
    t=THRESHOLD,
    m=MARGIN,
    min_face=st.integers(0, 200),
)
def test_it_judges_a_clip_on_the_faces_big_enough_to_judge(tracks, t, m, min_face):
    probs, widths = [p for p, _ in tracks], [w for _, w in tracks]
    label, _, confidence = clip_verdict(probs, t, m, widths, min_face)
    big = [p for p, w in tracks if w >= min_face]
    # The verdict is the one the big faces alone give; only small faces is uncertain.
    if not tracks:
        assert label == NO_FACE
    elif big:
        assert label == clip_verdict(big, t, m)[0]
    else:
        # Nothing judged, nothing claimed.
        assert label == UNCERTAIN and confidence == 0.0
    # A small track is never called fake or real, and says why; a big one is as before.
    for p, w in tracks:
        small = w < min_face
        assert track_label(p, t, m, w, min_face) == (UNCERTAIN if small else label_for(p, t, m))
        assert bool(small_face_note(w, min_face)) == small
    # The clip's note is there iff some face was left out.
    assert bool(clip_note(widths, min_face)) == (len(big) < len(tracks))
    # 0 judges every face: the verdict without widths.
    assert clip_verdict(probs, t, m, widths, 0)[0] == clip_verdict(probs, t, m)[0]
