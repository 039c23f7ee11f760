"""Frontal or lateral from the pixels: four explainable features and a logistic regression.

Used by :mod:`engine.views` only where the header is silent or contradicts itself. The features
are computed on the normalised display image (white = dense) resampled to 128x128, around the
vertical axis of best mirror symmetry (searched within the middle third, since patients are
rarely centred):

``symmetry``         correlation of the two sides of that axis, one mirrored (a frontal is nearly
                     mirror-symmetric about the spine; a lateral is not);
``centre_contrast``  mediastinum band (on the axis) minus the mean of the two lung bands;
``w_shape``          the smaller of mediastinum minus left lung and mediastinum minus right lung
                     (both lungs darker than the middle: the frontal "W" column profile);
``edge_symmetry``    the symmetry of the horizontal-gradient magnitude (ribs, lung edges).

The aspect ratio is deliberately not a feature: every NIH frontal is square, so the model would
learn "not square = lateral" and call every portrait CR a lateral.

The coefficients below were fitted by ``scripts/fit_view_model.py`` (NIH ChestX-ray14 frontals
against the lateral radiographs in ``../shared/data/lateral_chest``, patient-grouped 5-fold
cross-validation, Hannover frontals as an external check; figures in docs/image-pipeline.md).
Refit with that script, never by hand.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image

FEATURES = ("symmetry", "centre_contrast", "w_shape", "edge_symmetry")
GRID = 128

# --- fitted by scripts/fit_view_model.py (do not edit by hand) -------------------------------
FEATURE_MEAN = (0.822753, 0.223952, 0.192285, 0.257318)
FEATURE_STD = (0.131427, 0.12882, 0.134047, 0.126547)
COEFFICIENTS = (1.449298, 1.794716, 1.0793, -0.410396)
INTERCEPT = 4.087265
# ----------------------------------------------------------------------------------------------

#: P(frontal) at or above which the pixels call an image frontal (below: lateral).
THRESHOLD = 0.5


def _corr(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def view_features(display: NDArray[np.floating]) -> NDArray[np.float64]:
    """The features (:data:`FEATURES`) of a normalised display image ([0, 1], white = dense)."""
    small = np.asarray(
        Image.fromarray(np.asarray(display, dtype=np.float32), mode="F").resize(
            (GRID, GRID), Image.Resampling.BILINEAR
        ),
        dtype=np.float64,
    )
    body = small[int(GRID * 0.1) : int(GRID * 0.9)]
    symmetry, axis = -1.0, GRID // 2
    for candidate in range(int(GRID * 0.34), int(GRID * 0.66) + 1, 2):
        half = min(candidate, GRID - candidate) - 2
        value = _corr(
            body[:, candidate - half : candidate], body[:, candidate : candidate + half][:, ::-1]
        )
        if value > symmetry:
            symmetry, axis = value, candidate
    band = small[int(GRID * 0.25) : int(GRID * 0.7)]

    def columns(start: float, stop: float) -> float:
        return float(band[:, max(0, int(start)) : min(GRID, int(stop))].mean())

    centre = columns(axis - 8, axis + 8)
    left, right = columns(axis - 38, axis - 20), columns(axis + 20, axis + 38)
    gradient = np.abs(np.diff(body, axis=1))
    half = min(axis, GRID - 1 - axis) - 2
    edge_symmetry = _corr(
        gradient[:, axis - half : axis], gradient[:, axis : axis + half][:, ::-1]
    )
    return np.array(
        [symmetry, centre - (left + right) / 2, min(centre - left, centre - right), edge_symmetry],
        dtype=np.float64,
    )


def frontal_probability_from_features(features: NDArray[np.float64]) -> float:
    z = (features - np.asarray(FEATURE_MEAN)) / np.asarray(FEATURE_STD)
    logit = float(np.dot(z, np.asarray(COEFFICIENTS)) + INTERCEPT)
    return 1.0 / (1.0 + math.exp(-max(min(logit, 50.0), -50.0)))


def frontal_probability(display: NDArray[np.floating]) -> float:
    """P(frontal) of a normalised display image under the fitted model."""
    return frontal_probability_from_features(view_features(display))
