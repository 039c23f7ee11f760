"""A run's figures: findings AUROC and decision thresholds on the validation split, and the
per-step/per-epoch log (CSV and TensorBoard).

AUROC is the Mann-Whitney statistic (ties count half), per finding with both classes in the
split; the macro mean is over those findings.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

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


class MetricsLog:
    """Per-step and per-epoch metrics: ``steps.csv``, ``epochs.csv`` and TensorBoard."""

    def __init__(self, out_dir: Path, tensorboard: bool, enabled: bool) -> None:
        self.out_dir, self.enabled = out_dir, enabled
        self.writer: Any = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def _append(self, name: str, row: dict[str, Any]) -> None:
        path = self.out_dir / name
        row = {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}
        header: list[str] = []
        if path.exists():
            with path.open(newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
        if header and set(row) <= set(header):
            with path.open("a", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, header).writerow(row)
            return
        # A new column (an objective that appeared): rewrite with the wider header.
        rows = []
        if path.exists():
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        rows.append(row)
        columns = list(dict.fromkeys([*header, *row]))
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)

    def truncate(self, name: str, after_step: int) -> None:
        """Drop rows past ``after_step`` (a resumed run rewrites them)."""
        path = self.out_dir / name
        if not self.enabled or not path.exists():
            return
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= after_step]
            columns = list(dict.fromkeys(c for r in rows for c in r)) or ["step"]
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)

    def log(self, name: str, step: int, values: dict[str, float], **extra: Any) -> None:
        if not self.enabled:
            return
        self._append(name, {"step": step, **extra, **values})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
