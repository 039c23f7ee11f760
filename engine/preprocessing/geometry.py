"""Letterbox geometry: the source image on the model grid and back.

:meth:`Letterbox.box_to_source` maps what the box head predicts (fractions of the model grid)
to source pixels; :meth:`Letterbox.box_from_source` maps dataset boxes (fractions of the source
image, ``training.data.records.Box``) to box-head targets. The two are exact inverses inside the
image.

Served radiographs are rarely square (a portrait CR gets bars left and right) while most
training images are (NIH). ``InputSpec.train_letterbox = "random-aspect"`` makes training
resample each image to an aspect ratio drawn from ``InputSpec.train_aspect_range`` before the
same letterbox, so the model sees the bars it will be served (:func:`sample_train_aspect`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image

if TYPE_CHECKING:
    from engine.artifact import InputSpec

FloatArray = NDArray[np.float32]


@dataclass(frozen=True)
class Letterbox:
    """Maps the model grid back to the source image: ``source = (model - pad) / scale``."""

    source_width: int
    source_height: int
    target_width: int
    target_height: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    @classmethod
    def fit(
        cls,
        source_width: int,
        source_height: int,
        target_width: int,
        target_height: int,
        *,
        keep_aspect: bool = True,
        placed_aspect: float | None = None,
    ) -> Letterbox:
        """The transform of a ``source_width`` x ``source_height`` image onto the target grid.

        ``placed_aspect`` (width/height, training only): place the image as if its aspect
        ratio were this one (it is resampled anisotropically), so that square training images
        get the bars of a portrait or landscape radiograph.
        """
        if min(source_width, source_height, target_width, target_height) <= 0:
            raise ValueError("Letterbox sizes must be positive")
        if placed_aspect is not None and not placed_aspect > 0:
            raise ValueError(f"placed_aspect must be positive, got {placed_aspect}")
        if keep_aspect:
            if placed_aspect is None:
                scale = min(target_width / source_width, target_height / source_height)
                new_w = max(1, round(source_width * scale))
                new_h = max(1, round(source_height * scale))
            else:
                height = min(target_width / placed_aspect, float(target_height))
                new_w = min(target_width, max(1, round(placed_aspect * height)))
                new_h = min(target_height, max(1, round(height)))
            return cls(
                source_width,
                source_height,
                target_width,
                target_height,
                new_w / source_width,
                new_h / source_height,
                float((target_width - new_w) // 2),
                float((target_height - new_h) // 2),
            )
        return cls(
            source_width,
            source_height,
            target_width,
            target_height,
            target_width / source_width,
            target_height / source_height,
            0.0,
            0.0,
        )

    @property
    def resized_size(self) -> tuple[int, int]:
        return (
            max(1, round(self.source_width * self.scale_x)),
            max(1, round(self.source_height * self.scale_y)),
        )

    @property
    def padding_fraction(self) -> float:
        """Share of the model grid that is letterbox padding."""
        new_w, new_h = self.resized_size
        return 1.0 - (new_w * new_h) / (self.target_width * self.target_height)

    def box_to_source(
        self, box: Sequence[float], *, normalized: bool = True
    ) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) on the model grid -> source pixels, clipped to the image.

        ``normalized`` boxes are fractions of the model grid (what the box head predicts).
        """
        x0, y0, x1, y1 = (float(v) for v in box)
        if normalized:
            x0, x1 = x0 * self.target_width, x1 * self.target_width
            y0, y1 = y0 * self.target_height, y1 * self.target_height
        sx0 = (x0 - self.pad_x) / self.scale_x
        sx1 = (x1 - self.pad_x) / self.scale_x
        sy0 = (y0 - self.pad_y) / self.scale_y
        sy1 = (y1 - self.pad_y) / self.scale_y
        return (
            float(np.clip(min(sx0, sx1), 0, self.source_width)),
            float(np.clip(min(sy0, sy1), 0, self.source_height)),
            float(np.clip(max(sx0, sx1), 0, self.source_width)),
            float(np.clip(max(sy0, sy1), 0, self.source_height)),
        )

    def box_from_source(
        self, box: Sequence[float], *, normalized: bool = True
    ) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) on the source -> the model grid; the inverse of
        :meth:`box_to_source`.

        ``normalized``: the input is in fractions of the source image (dataset ``Box``) and the
        output in fractions of the model grid (box-head targets); otherwise both are pixels.
        """
        x0, y0, x1, y1 = (float(v) for v in box)
        if normalized:
            x0, x1 = x0 * self.source_width, x1 * self.source_width
            y0, y1 = y0 * self.source_height, y1 * self.source_height
        mx0, mx1 = x0 * self.scale_x + self.pad_x, x1 * self.scale_x + self.pad_x
        my0, my1 = y0 * self.scale_y + self.pad_y, y1 * self.scale_y + self.pad_y
        out = (min(mx0, mx1), min(my0, my1), max(mx0, mx1), max(my0, my1))
        if normalized:
            return (
                out[0] / self.target_width,
                out[1] / self.target_height,
                out[2] / self.target_width,
                out[3] / self.target_height,
            )
        return out


def sample_train_aspect(spec: InputSpec, rng: np.random.Generator) -> float | None:
    """The aspect ratio (width/height) to place one training image at, or None to keep its own.

    With ``spec.train_letterbox == "random-aspect"``, a share ``spec.train_letterbox_p`` of
    images is placed at an aspect ratio drawn uniformly from ``spec.train_aspect_range``.
    """
    if spec.train_letterbox != "random-aspect" or spec.resize != "letterbox":
        return None
    if rng.random() >= spec.train_letterbox_p:
        return None
    low, high = spec.train_aspect_range
    return float(rng.uniform(low, high))


def letterbox_array(
    display: FloatArray, spec: InputSpec, *, train_aspect: float | None = None
) -> tuple[FloatArray, Letterbox]:
    """Resize (aspect kept and padded, or stretched, as ``spec.resize`` says) and apply the
    manifest's mean/std. ``train_aspect``: see :func:`sample_train_aspect` (training only)."""
    height, width = display.shape
    box = Letterbox.fit(
        width,
        height,
        spec.width,
        spec.height,
        keep_aspect=spec.resize == "letterbox",
        placed_aspect=train_aspect,
    )
    new_w, new_h = box.resized_size
    # Pillow's float mode resamples with an area-aware filter, so downscaling does not alias.
    resized = np.asarray(
        Image.fromarray(display.astype(np.float32), mode="F").resize(
            (new_w, new_h), Image.Resampling.BILINEAR
        ),
        dtype=np.float32,
    )
    canvas = np.full((spec.height, spec.width), spec.pad_value, dtype=np.float32)
    px, py = int(box.pad_x), int(box.pad_y)
    canvas[py : py + new_h, px : px + new_w] = resized
    normalized = (canvas - np.float32(spec.mean)) / np.float32(spec.std)
    return normalized.astype(np.float32), box
