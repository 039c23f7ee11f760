"""Fit the frontal/lateral image model of engine/view_model.py and print its figures.

Data (nothing downloaded): NIH ChestX-ray14 frontals (``nih/images_512``) against the lateral
radiographs of ``lateral_chest/``; Hannover frontals (``hannover_covid/png``) are kept out of the
fit as an external check. Patient-grouped stratified 5-fold cross-validation reports AUC and
the error rates at the decision threshold; then the model is refit on all NIH + lateral images
and the constants are printed (``--write`` puts them into engine/view_model.py).

    PYTHONPATH=$PWD python scripts/fit_view_model.py [--data ../shared/data] [--write]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import re
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engine.exceptions import ImageRejectedError
from engine.preprocessing import image_file_to_display
from engine.view_model import FEATURES, THRESHOLD, view_features

VIEW_MODEL = Path(__file__).resolve().parents[1] / "engine" / "view_model.py"
L2 = 1.0


def fit_logistic(
    x: NDArray[np.float64], y: NDArray[np.float64], weights: NDArray[np.float64]
) -> tuple[NDArray[np.float64], float]:
    """Weighted L2-regularised logistic regression by Newton's method (intercept free)."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    beta = np.zeros(d + 1)
    penalty = np.diag([L2] * d + [0.0])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-design @ beta))
        gradient = design.T @ (weights * (p - y)) + penalty @ beta
        hessian = (design * (weights * p * (1 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-9:
            break
    return beta[:d], float(beta[d])


def auc(scores: NDArray[np.float64], labels: NDArray[np.float64]) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def load(data: Path) -> tuple[NDArray[np.float64], NDArray[np.float64], list[str], list[str]]:
    nih_patients: dict[str, str] = {}
    with gzip.open(data / "nih" / "Data_Entry_2017_v2020.csv.gz", "rt") as fh:
        for row in csv.DictReader(fh):
            nih_patients[row["Image Index"][:-4]] = "nih-" + row["Patient ID"]
    lateral_patients: dict[str, str] = {}
    with open(data / "lateral_chest" / "metadata.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            lateral_patients[Path(row["filename"]).stem] = "lat-" + row["patientid"]
    items: list[tuple[Path, int, str]] = []
    for path in sorted((data / "nih" / "images_512").glob("*.jpg")):
        items.append((path, 1, nih_patients.get(path.stem, path.stem)))
    for path in sorted((data / "lateral_chest" / "images").iterdir()):
        group = lateral_patients.get(path.stem, "lat-" + re.sub(r"\W.*", "", path.stem))
        items.append((path, 0, group))
    features, labels, groups, names = [], [], [], []
    for path, label, group in items:
        try:
            features.append(view_features(image_file_to_display(path)))
        except ImageRejectedError as exc:
            print(f"skipped {path.name}: {exc}", file=sys.stderr)
            continue
        labels.append(label)
        groups.append(group)
        names.append(path.name)
    return np.array(features), np.array(labels, dtype=np.float64), groups, names


def balanced_weights(y: NDArray[np.float64]) -> NDArray[np.float64]:
    pos = max(float(y.sum()), 1.0)
    neg = max(float(len(y) - y.sum()), 1.0)
    return np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * neg))


def standardise(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def predict(x, mean, std, coef, intercept):  # type: ignore[no-untyped-def]
    return 1.0 / (1.0 + np.exp(-(((x - mean) / std) @ coef + intercept)))


def folds(y: NDArray[np.float64], groups: list[str], k: int, seed: int) -> NDArray[np.int64]:
    """Patient-grouped folds, stratified: each class's patients dealt round the folds."""
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(y), dtype=np.int64)
    for label in (0, 1):
        patients = sorted({g for g, lab in zip(groups, y, strict=True) if lab == label})
        rng.shuffle(patients)
        assignment = {p: i % k for i, p in enumerate(patients)}
        for i, (g, lab) in enumerate(zip(groups, y, strict=True)):
            if lab == label:
                fold_of[i] = assignment[g]
    return fold_of


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="write the constants into the model")
    args = parser.parse_args(argv)
    x, y, groups, _ = load(args.data)
    print(f"images: {int(y.sum())} NIH frontals, {int(len(y) - y.sum())} laterals")
    fold_of = folds(y, groups, args.folds, seed=14)
    scores = np.zeros(len(y))
    for fold in range(args.folds):
        train, test = fold_of != fold, fold_of == fold
        mean, std = standardise(x[train])
        weights = balanced_weights(y[train])
        coef, intercept = fit_logistic((x[train] - mean) / std, y[train], weights)
        scores[test] = predict(x[test], mean, std, coef, intercept)
    frontal, lateral = scores[y == 1], scores[y == 0]
    print(f"cross-validated ({args.folds}-fold, patient-grouped): AUC {auc(scores, y):.3f}")
    print(
        f"  at P(frontal) >= {THRESHOLD}: frontals called frontal "
        f"{np.mean(frontal >= THRESHOLD):.1%} (n={len(frontal)}), laterals called lateral "
        f"{np.mean(lateral < THRESHOLD):.1%} (n={len(lateral)})"
    )
    mean, std = standardise(x)
    coef, intercept = fit_logistic((x - mean) / std, y, balanced_weights(y))
    hannover = sorted((args.data / "hannover_covid" / "png").glob("*.png"))
    if hannover:
        hx = np.array([view_features(image_file_to_display(p)) for p in hannover])
        hp = predict(hx, mean, std, coef, intercept)
        print(
            f"external Hannover frontals (not fitted): called frontal "
            f"{np.mean(hp >= THRESHOLD):.1%} (n={len(hp)})"
        )
    print("standardised coefficients:")
    for name, c in zip(FEATURES, coef, strict=True):
        print(f"  {name:18s} {c:+.3f}")
    block = (
        f"FEATURE_MEAN = {tuple(round(float(v), 6) for v in mean)}\n"
        f"FEATURE_STD = {tuple(round(float(v), 6) for v in std)}\n"
        f"COEFFICIENTS = {tuple(round(float(v), 6) for v in coef)}\n"
        f"INTERCEPT = {round(intercept, 6)}\n"
    )
    print(block)
    if args.write:
        text = VIEW_MODEL.read_text()
        start = text.index("FEATURE_MEAN = ")
        end = text.index("# ---", start)
        VIEW_MODEL.write_text(text[:start] + block + text[end:])
        print(f"wrote {VIEW_MODEL}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
