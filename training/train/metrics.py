"""Validation figures of a run: findings AUROC and decision thresholds.

AUROC is the Mann-Whitney statistic (ties count half), per finding with both classes in the
split; the macro mean is over those findings.
"""

from __future__ import annotations

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve, or ``None`` when one class is missing."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    order = np.argsort(np.concatenate([positives, negatives]), kind="mergesort")
    values = np.concatenate([positives, negatives])[order]
    ranks = np.empty(len(values))
    start = 0
    while start < len(values):  # average ranks of ties
        end = start
        while end + 1 < len(values) and values[end + 1] == values[start]:
            end += 1
        ranks[start : end + 1] = (start + end) / 2 + 1
        start = end + 1
    rank_of = np.empty(len(values))
    rank_of[order] = ranks
    pos_ranks = rank_of[: len(positives)].sum()
    return float(
        (pos_ranks - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives))
    )


def per_finding_auroc(
    probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, keys: tuple[str, ...]
) -> dict[str, float]:
    out = {}
    for col, key in enumerate(keys):
        keep = mask[:, col] > 0
        value = auroc(probs[keep, col], labels[keep, col])
        if value is not None:
            out[key] = value
    return out


def youden_thresholds(
    probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, keys: tuple[str, ...]
) -> dict[str, tuple[float, float]]:
    """(present, absent) thresholds per finding: ``present`` maximizes Youden's J on the
    validation split (0.5 when the split has one class), ``absent`` is half of it, so the
    band between reads as uncertain."""
    out = {}
    for col, key in enumerate(keys):
        keep = mask[:, col] > 0
        p, y = probs[keep, col], labels[keep, col]
        present = 0.5
        if (y == 1).any() and (y == 0).any():
            best = -1.0
            for t in np.unique(p):
                j = float(((p >= t) & (y == 1)).sum() / (y == 1).sum()) - float(
                    ((p >= t) & (y == 0)).sum() / (y == 0).sum()
                )
                if j > best:
                    best, present = j, float(t)
        present = float(np.clip(present, 0.01, 0.99))
        out[key] = (present, present / 2)
    return out
