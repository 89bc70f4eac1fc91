"""From per-face probabilities to honest track and clip verdicts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FAKE, REAL, UNCERTAIN, NO_FACE = "fake", "real", "uncertain", "no_face"


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


def track_probability(probs: Sequence[float]) -> float:
    """A track's fake probability: the mean of its faces' probabilities.

    The mean is robust to a single odd frame, unlike the max, and a manipulated
    face is usually manipulated throughout the clip.
    """
    if len(probs) == 0:
        raise ValueError("a track has at least one face")
    return float(np.clip(np.mean(np.asarray(probs, dtype=np.float64)), 0.0, 1.0))


def clip_verdict(
    track_probs: Sequence[float], threshold: float, margin: float
) -> tuple[str, float, float]:
    """(label, fake_probability, confidence) for a clip.

    One fake track makes the clip fake; no face at all is `no_face`, never real.
    """
    if len(track_probs) == 0:
        return NO_FACE, 0.0, 0.0
    labels = [label_for(p, threshold, margin) for p in track_probs]
    p_max = float(max(track_probs))
    if FAKE in labels:
        label = FAKE
    elif UNCERTAIN in labels:
        label = UNCERTAIN
    else:
        label = REAL
    return label, p_max, confidence_for(p_max, label)
