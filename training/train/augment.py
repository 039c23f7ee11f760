"""Augmentation for chest radiographs, applied to the [0, 1] display image before the engine's
letterbox (:func:`engine.preprocessing.prepare_display`).

Contrast, brightness and gamma change the display values (clipped to [0, 1], never
re-normalised: the engine's intensity normalisation has already run, as it has at serving);
then small rotations, scaling (a crop when it zooms in) and translations move the image on its
own pixel grid, and the boxes (fractions of the source image) with it. The letterbox comes
after, so the bars stay straight and uniform as on a served image, and box targets go through
the same :class:`~engine.preprocessing.Letterbox`. Never a horizontal flip: laterality (a right
effusion, a dextrocardia) is clinical information. Every random draw comes from the generator
passed in, so a sample's augmentation depends only on (seed, epoch, index) and a resumed run
sees exactly the images it would have seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from training.train.recipe import AugmentSection


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high)) if high > low else float(low)


def augment_display(
    display: np.ndarray,
    boxes: np.ndarray,
    config: AugmentSection,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``display[h, w]`` (the engine's normalised display values, [0, 1], white = dense) and
    ``boxes[N, 4]`` (xyxy fractions of that image) -> the transformed image and boxes, same
    size. Uncovered corners are black (0, as outside a collimated field); a box pushed out of
    the image collapses to zero area (the caller drops it)."""
    angle = math.radians(_uniform(rng, -config.rotate_degrees, config.rotate_degrees))
    scale = _uniform(rng, *config.scale)
    tx = _uniform(rng, -config.translate, config.translate) * 2  # grid units span 2
    ty = _uniform(rng, -config.translate, config.translate) * 2
    contrast = _uniform(rng, 1 - config.contrast, 1 + config.contrast)
    brightness = _uniform(rng, -config.brightness, config.brightness)
    gamma = math.exp(_uniform(rng, math.log(config.gamma[0]), math.log(config.gamma[1])))

    values = np.clip((display.astype(np.float32) - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0)
    values = values**gamma

    # affine_grid maps each output position to the input position it samples, in coordinates
    # normalised to [-1, 1] per axis: input = A @ output + t. A rotation in pixels on a
    # non-square image is R scaled by the aspect ratio in those coordinates.
    h, w = display.shape
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    a = np.array([[cos, -sin * h / w], [sin * w / h, cos]])
    theta = torch.tensor([[a[0, 0], a[0, 1], tx], [a[1, 0], a[1, 1], ty]], dtype=torch.float32)
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    result = np.clip(out[0, 0].numpy(), 0.0, 1.0).astype(np.float32)

    if len(boxes) == 0:
        return result, boxes
    inverse = np.linalg.inv(a)
    moved = []
    for x0, y0, x1, y1 in boxes:
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) * 2 - 1  # to [-1, 1]
        out_pts = (corners - np.array([tx, ty])) @ inverse.T
        out_pts = np.clip((out_pts + 1) / 2, 0.0, 1.0)
        moved.append([*out_pts.min(axis=0), *out_pts.max(axis=0)])
    return result, np.asarray(moved, dtype=np.float32)
