"""From per-face probabilities to honest track and clip verdicts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FAKE, REAL, UNCERTAIN, NO_FACE = "fake", "real", "uncertain", "no_face"

# Faces narrower than this (px: the width of a track's largest box) are not judged by default: on
# real faces under 80 px wide in group photos the shipped model calls half of them Fake, and
# the same faces shrunk to 80 px or less are called Fake more often still, while its AUC on
# face manipulations falls (scripts/face_size_study.py; the model card's "Small faces").
DEFAULT_MIN_FACE = 80


def label_for(p: float, threshold: float, margin: float) -> str:
    """Fake above the band, real below it, uncertain within `margin` of the threshold."""
    if p >= threshold + margin:
        return FAKE
    if p < threshold - margin:
        return REAL
    return UNCERTAIN


def confidence_for(p: float, label: str) -> float:
    """How sure the label is, in [0, 1]: P(fake) for fake, P(real) for real."""
    if label == FAKE:
        return p
    if label == REAL:
        return 1.0 - p
    if label == UNCERTAIN:
        return max(p, 1.0 - p)
    return 0.0


def uncertain_text(p: float, threshold: float) -> str:
    """How an uncertain verdict is worded on the video and in the history: it claims no
    confidence (a bare "70%" read as "70% sure") and says which side of the threshold the
    score falls, as the result page does."""
    return f"Uncertain, leans {'fake' if p >= threshold else 'real'}"


def track_probability(probs: Sequence[float]) -> float:
    """A track's fake probability: the mean of its faces' probabilities.

    The mean is robust to a single odd frame, unlike the max, and a manipulated
    face is usually manipulated throughout the clip.
    """
    if len(probs) == 0:
        raise ValueError("a track has at least one face")
    return float(np.clip(np.mean(np.asarray(probs, dtype=np.float64)), 0.0, 1.0))


def track_label(p: float, threshold: float, margin: float, width: int, min_face: int) -> str:
    """A track's label: as `label_for`, except that a track whose largest face box is narrower
    than `min_face` px is too small to judge and stays uncertain (0 turns this off)."""
    if width < min_face:
        return UNCERTAIN
    return label_for(p, threshold, margin)


def small_face_note(width: int, min_face: int) -> str:
    """Why a track was not judged, or "" when it was."""
    if width >= min_face:
        return ""
    return f"This face is {width} px wide, under the {min_face} px the model needs to judge it."


def clip_note(widths: Sequence[int], min_face: int) -> str:
    """What the clip verdict left out because it was too small, or ""."""
    small = sum(1 for w in widths if w < min_face)
    if small == 0:
        return ""
    if small == len(widths):
        return f"Every face is under {min_face} px wide: too small for the model to judge."
    faces = "face was" if small == 1 else "faces were"
    return f"{small} {faces} under {min_face} px wide and not judged."


def clip_verdict(
    track_probs: Sequence[float],
    threshold: float,
    margin: float,
    widths: Sequence[int] | None = None,
    min_face: int = 0,
) -> tuple[str, float, float]:
    """(label, fake_probability, confidence) for a clip.

    One fake track makes the clip fake; no face at all is `no_face`, never real. Given each
    track's largest box (`widths`), only tracks at least `min_face` px wide decide; a clip
    whose faces are all narrower is uncertain.
    """
    if len(track_probs) == 0:
        return NO_FACE, 0.0, 0.0
    if widths is None:
        widths = [min_face] * len(track_probs)
    judged = [p for p, w in zip(track_probs, widths, strict=True) if w >= min_face]
    if not judged:  # nothing was judged, so nothing is claimed: confidence 0
        return UNCERTAIN, float(max(track_probs)), 0.0
    labels = [label_for(p, threshold, margin) for p in judged]
    p_max = float(max(judged))
    if FAKE in labels:
        label = FAKE
    elif UNCERTAIN in labels:
        label = UNCERTAIN
    else:
        label = REAL
    return label, p_max, confidence_for(p_max, label)
