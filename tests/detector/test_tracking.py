"""Linking faces across samples into tracks, and the clip verdict the tracks make."""

from __future__ import annotations

import copy

from detector.faces import Box
from detector.pipeline import Options, analyse_video
from detector.tracking import link


def _face(x: int, y: int = 100, w: int = 100) -> Box:
    return Box(x, y, x + w, y + w)


def test_a_face_that_moves_most_of_its_width_between_samples_stays_one_track():
    # Samples of a long clip are a second or more apart: a walking face no longer
    # overlaps itself much (IoU 0.03 at 95 px a sample), but it is the same person.
    steps = [[_face(95 * i)] for i in range(6)]
    assert link(list(enumerate(steps))) == [[0]] * 6


def test_faces_side_by_side_keep_their_own_tracks_as_they_drift():
    samples = [[_face(40 * i), _face(300 + 40 * i)] for i in range(6)]
    assert link(list(enumerate(samples))) == [[0, 1]] * 6
    # Given in the other order on one frame, each still joins its own track.
    samples[3] = samples[3][::-1]
    assert link(list(enumerate(samples)))[3] == [1, 0]


def test_a_face_far_from_every_track_or_of_another_size_starts_its_own():
    far = link([(0, [_face(0)]), (1, [_face(200)])])
    assert far == [[0], [1]]  # two widths apart: someone else
    nested = link([(0, [_face(0, w=200)]), (1, [Box(150, 150, 190, 190)])])
    assert nested == [[0], [1]]  # a small face beside a large one's centre


def test_the_clip_label_agrees_with_its_tracks_at_the_band_edges(astro_clip, tiny_bundle):
    """Tracks are labelled from their exact probability; the clip must be too, not from
    the probability rounded for the report (which can cross a band edge)."""
    report = analyse_video(astro_clip, tiny_bundle, Options(frames=6, min_face=0))
    assert len(report.tracks) == 1
    p = float(report.tracks[0].fake_probability)  # rounded to 5 places
    margin = tiny_bundle.meta.uncertain_margin
    # Band edges just where the rounding crosses them: the upper one at the rounded value
    # (an exact value rounded up lies below it), the lower one a hair above it (an exact
    # value rounded down lies above it). Whichever way it was rounded, one case splits.
    for threshold in (p - margin, p + 1e-12 + margin):
        bundle = copy.copy(tiny_bundle)
        bundle.meta = copy.copy(tiny_bundle.meta)
        bundle.meta.threshold = threshold
        again = analyse_video(astro_clip, bundle, Options(frames=6, min_face=0))
        (track,) = again.tracks
        assert again.verdict.label == track.label, threshold
