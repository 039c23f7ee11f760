"""Augmentation for chest radiographs, applied to the engine's preprocessed planes.

Small rotations, scaling (a crop when it zooms in), translations, contrast, brightness and
gamma changes. Never a horizontal flip: laterality (a right effusion, a dextrocardia) is
clinical information. Boxes follow the same geometric transform. Every random draw comes from
the generator passed in, so a sample's augmentation depends only on (seed, epoch, index) and a
resumed run sees exactly the images it would have seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from engine.artifact import InputSpec
from training.train.recipe import AugmentSection


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high)) if high > low else float(low)


def augment(
    plane: np.ndarray,
    boxes: np.ndarray,
    spec: InputSpec,
    config: AugmentSection,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``plane[H, W]`` (normalized as ``spec`` says) and ``boxes[N, 4]`` (xyxy fractions of the
    plane) -> the transformed plane and boxes (a box pushed out of the image collapses to
    zero area; the caller drops it)."""
    angle = math.radians(_uniform(rng, -config.rotate_degrees, config.rotate_degrees))
    scale = _uniform(rng, *config.scale)
    tx = _uniform(rng, -config.translate, config.translate) * 2  # grid units span 2
    ty = _uniform(rng, -config.translate, config.translate) * 2
    contrast = _uniform(rng, 1 - config.contrast, 1 + config.contrast)
    brightness = _uniform(rng, -config.brightness, config.brightness)
    gamma = math.exp(_uniform(rng, math.log(config.gamma[0]), math.log(config.gamma[1])))

    # affine_grid maps each output position to the input position it samples:
    # input = A @ output + t, with A = R(angle) / scale.
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=torch.float32)
    h, w = plane.shape
    pad = (spec.pad_value - spec.mean) / spec.std
    x = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None] - pad
    grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = out[0, 0].numpy() + pad

    display = np.clip(warped * spec.std + spec.mean, 0.0, 1.0)
    display = np.clip((display - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0) ** gamma
    result = ((display - spec.mean) / spec.std).astype(np.float32)

    if len(boxes) == 0:
        return result, boxes
    inverse = np.linalg.inv(np.array([[cos, -sin], [sin, cos]]))
    moved = []
    for x0, y0, x1, y1 in boxes:
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) * 2 - 1  # to [-1, 1]
        out_pts = (corners - np.array([tx, ty])) @ inverse.T
        out_pts = np.clip((out_pts + 1) / 2, 0.0, 1.0)
        moved.append([*out_pts.min(axis=0), *out_pts.max(axis=0)])
    return result, np.asarray(moved, dtype=np.float32)
