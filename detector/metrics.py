"""Classification metrics in plain NumPy (checked against hand-computed values in tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    return {
        "tp": int(np.sum((y_true == 1) & (y_pred == 1))),
        "tn": int(np.sum((y_true == 0) & (y_pred == 0))),
        "fp": int(np.sum((y_true == 0) & (y_pred == 1))),
        "fn": int(np.sum((y_true == 1) & (y_pred == 0))),
    }


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve: the share of (fake, real) pairs in which the fake scores
    higher, ties counting one half (the Mann-Whitney U statistic), from ranks in
    O(n log n) time and O(n) memory; None unless both classes are present."""
    return _auc_by_ranks(np.asarray(y_true).astype(int), np.asarray(scores, dtype=np.float64))


def _auc_by_ranks(y: np.ndarray, scores: np.ndarray) -> float | None:
    """Mann-Whitney U with ties as one half, from mid-ranks: a pair count without the
    n_pos x n_neg pair matrix (the bootstrap computes it a thousand times, and the full
    FaceForensics++ has about 10^10 pairs). `y` holds 0 and 1 only."""
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores), np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based, ties averaged
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


class _Clusters:
    """The members of each group, for resampling whole groups at a time."""

    def __init__(self, keys: np.ndarray, universe: np.ndarray) -> None:
        member_of = np.searchsorted(universe, keys)
        self.order = np.argsort(member_of, kind="stable")
        self.sizes = np.bincount(member_of, minlength=len(universe))
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    def take(self, picked: np.ndarray) -> np.ndarray:
        """Indices of every member of every picked group (with repeats), loop-free."""
        lengths = self.sizes[picked]
        offsets = np.repeat(self.starts[picked] - np.cumsum(lengths) + lengths, lengths)
        return self.order[offsets + np.arange(lengths.sum())]


def _percentiles(values: list[float], level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def _keys(y: np.ndarray, groups) -> np.ndarray:
    return np.arange(len(y)).astype(str) if groups is None else np.asarray(groups).astype(str)


def _too_few_groups(y: np.ndarray, keys: np.ndarray) -> bool:
    # One clip of a class: every resample repeats it, and the interval would be a
    # zero-width lie.
    return min(len(np.unique(keys[y == c])) for c in (0, 1)) < 2


def _resampled_aucs(
    sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_boot: int, seed: int
) -> Iterator[tuple[float, ...]]:
    """The AUC of each (labels, scores, groups) set on `n_boot` resamples of the groups.

    Every resample draws groups once, from the union of all sets' groups, and applies
    the same draw to each set (a paired bootstrap when there are two); resamples where
    some set lacks a class are skipped.
    """
    universe = np.unique(np.concatenate([keys for _, _, keys in sets]))
    clusters = [_Clusters(keys, universe) for _, _, keys in sets]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        picked = rng.integers(0, len(universe), len(universe))
        aucs = []
        for (y, s, _), c in zip(sets, clusters, strict=True):
            idx = c.take(picked)
            aucs.append(_auc_by_ranks(y[idx], s[idx]))
        if all(a is not None for a in aucs):
            yield tuple(aucs)


def auc_interval(
    y_true,
    scores,
    groups=None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """A percentile bootstrap interval for the ROC AUC.

    With `groups` (e.g. the video each face came from), whole groups are resampled: faces
    of one clip are not independent, and resampling them one by one would give an
    interval far narrower than the evidence. None when a class has fewer than two
    groups, or when fewer than 1 resample in 2 holds both classes: too few to say
    anything.
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if len(y) == 0 or y.min() == y.max():
        return None
    keys = _keys(y, groups)
    if _too_few_groups(y, keys):
        return None
    aucs = [a for (a,) in _resampled_aucs([(y, s, keys)], n_boot, seed)]
    return _percentiles(aucs, level) if len(aucs) >= n_boot / 2 else None


def auc_difference(
    a: tuple[Any, Any, Any],
    b: tuple[Any, Any, Any],
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any] | None:
    """AUC of model A minus AUC of model B on the same clips, with a paired interval.

    `a` and `b` are (labels, scores, clip of each face); the two may hold different faces
    of the same clips (crops at two input sizes). Each resample draws clips once and
    scores both models on them, so what the clips share cancels out: an interval that
    excludes 0 means one model is better on clips like these, not only on these.
    """
    ya, sa, ka = np.asarray(a[0]).astype(int), np.asarray(a[1], np.float64), _keys(a[0], a[2])
    yb, sb, kb = np.asarray(b[0]).astype(int), np.asarray(b[1], np.float64), _keys(b[0], b[2])
    auc_a, auc_b = _auc_by_ranks(ya, sa), _auc_by_ranks(yb, sb)
    if auc_a is None or auc_b is None:
        return None
    out: dict[str, Any] = {"difference": auc_a - auc_b, "ci": None, "auc_a": auc_a, "auc_b": auc_b}
    if _too_few_groups(ya, ka) or _too_few_groups(yb, kb):
        return out
    diffs = [da - db for da, db in _resampled_aucs([(ya, sa, ka), (yb, sb, kb)], n_boot, seed)]
    if len(diffs) >= n_boot / 2:
        out["ci"] = list(_percentiles(diffs, level))
    return out


def mean_auc(
    sets: list[tuple[Any, Any, Any]],
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The mean of the ROC AUCs of independent sets (the folds of a cross-validation, each
    scored by its own model on its own held-out clips), with a percentile interval.

    `sets` are (labels, scores, clip of each face). Each resample draws every set's clips
    anew, independently of the others (the sets share no clip), and averages the sets'
    AUCs; with one set it is `auc_interval`. Returns {"mean", "aucs", "ci"}; "ci" is None
    when some set has fewer than two clips of a class, or when fewer than 1 resample in 2
    holds both classes in every set. None when some set lacks a class.
    """
    parsed = []
    for y, s, g in sets:
        yy = np.asarray(y).astype(int)
        parsed.append((yy, np.asarray(s, np.float64), _keys(yy, g)))
    aucs = [_auc_by_ranks(y, s) for y, s, _ in parsed]
    if any(a is None for a in aucs):
        return None
    out: dict[str, Any] = {"mean": float(np.mean(aucs)), "aucs": aucs, "ci": None}
    if any(_too_few_groups(y, k) for y, _, k in parsed):
        return out
    # One generator per set, seeded apart, so each set's draws match auc_interval's.
    draws = [_resampled_aucs([p], n_boot, seed + i) for i, p in enumerate(parsed)]
    means = []
    for _ in range(n_boot):
        picked = [next(d, None) for d in draws]
        if any(p is None for p in picked):
            break
        means.append(float(np.mean([p[0] for p in picked])))
    if len(means) >= n_boot / 2:
        out["ci"] = list(_percentiles(means, level))
    return out


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds descending."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = np.unique(scores)[::-1]
    p = max(1, int((y_true == 1).sum()))
    n = max(1, int((y_true == 0).sum()))
    tpr = np.array([((scores >= t) & (y_true == 1)).sum() / p for t in thresholds])
    fpr = np.array([((scores >= t) & (y_true == 0)).sum() / n for t in thresholds])
    return (
        np.concatenate([[0.0], fpr]),
        np.concatenate([[0.0], tpr]),
        np.concatenate([[np.inf], thresholds]),
    )


def binary_metrics(
    y_true, scores, threshold: float = 0.5, groups=None, n_boot: int = 1000
) -> dict[str, Any]:
    """Threshold metrics, the ROC AUC and its 95% bootstrap interval (resampling whole
    `groups` when given; `n_boot=0` skips the interval)."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    y_pred = (scores >= threshold).astype(int)
    c = confusion(y_true, y_pred)
    total = max(1, len(y_true))
    # None where undefined, not 0: recall without fakes, precision without a face called
    # fake, F1 with neither a fake nor a false alarm (an all-real set scored all real is
    # not a failure). F1 as 2TP / (2TP + FP + FN): 0 when fakes are there and none is caught.
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else None
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else None
    errors = c["fp"] + c["fn"]
    f1 = 2 * c["tp"] / (2 * c["tp"] + errors) if c["tp"] + errors else None
    tnr = c["tn"] / (c["tn"] + c["fp"]) if c["tn"] + c["fp"] else 0.0
    # With one class present, its own rate (not an average with a 0).
    rates = [r for r, n in ((recall, c["tp"] + c["fn"]), (tnr, c["tn"] + c["fp"])) if n]
    balanced = sum(rates) / len(rates) if rates else 0.0
    auc = roc_auc(y_true, scores)
    ci = auc_interval(y_true, scores, groups, n_boot) if auc is not None and n_boot else None
    return {
        "n": int(len(y_true)),
        "accuracy": (c["tp"] + c["tn"]) / total,
        "balanced_accuracy": balanced,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": auc,
        "roc_auc_ci": list(ci) if ci else None,
        "confusion": c,
        "threshold": threshold,
    }


def choose_threshold(y_true, scores) -> float:
    """The threshold that maximises balanced accuracy (Youden's J) on validation data."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if len(set(y_true.tolist())) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y_true, scores)
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1
    return float(np.clip(thr[best], 0.05, 0.95))
