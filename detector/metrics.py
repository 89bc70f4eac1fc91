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


def binary_metrics(y_true, scores, threshold: float = 0.5) -> dict[str, Any]:
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
