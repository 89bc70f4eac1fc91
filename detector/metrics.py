"""Classification metrics in plain NumPy (checked against hand-computed values in tests)."""

from __future__ import annotations

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
    """Area under the ROC curve via the rank statistic (ties count one half)."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = scores[y_true == 1], scores[y_true == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _auc_by_ranks(y: np.ndarray, scores: np.ndarray) -> float | None:
    """The same statistic as roc_auc (Mann-Whitney U with ties as one half), in
    O(n log n): the bootstrap computes it a thousand times."""
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores), np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based, ties averaged
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


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
    keys = np.arange(len(y)) if groups is None else np.asarray(groups)
    _, member_of = np.unique(keys, return_inverse=True)
    if min(len(np.unique(member_of[y == c])) for c in (0, 1)) < 2:
        return None  # one clip of a class: every resample repeats it, a zero-width lie
    order = np.argsort(member_of, kind="stable")
    sizes = np.bincount(member_of)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n_boot):
        picked = rng.integers(0, len(sizes), len(sizes))
        lengths = sizes[picked]
        # Indices of every member of every picked group, without a Python loop.
        offsets = np.repeat(starts[picked] - np.cumsum(lengths) + lengths, lengths)
        idx = order[offsets + np.arange(lengths.sum())]
        auc = _auc_by_ranks(y[idx], s[idx])
        if auc is not None:
            aucs.append(auc)
    if len(aucs) < n_boot / 2:
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(aucs, [tail, 100 - tail])
    return float(lo), float(hi)


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
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    tnr = c["tn"] / (c["tn"] + c["fp"]) if c["tn"] + c["fp"] else 0.0
    auc = roc_auc(y_true, scores)
    return {
        "n": int(len(y_true)),
        "accuracy": (c["tp"] + c["tn"]) / total,
        # With one class present, the mean of its own rate (not an average with a 0).
        "balanced_accuracy": (recall + tnr) / 2
        if (c["tp"] + c["fn"]) and (c["tn"] + c["fp"])
        else (recall if c["tp"] + c["fn"] else tnr),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": auc,
        "roc_auc_ci": list(auc_interval(y_true, scores, groups, n_boot) or [])
        if auc is not None and n_boot
        else None,
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
