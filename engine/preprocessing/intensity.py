"""The one intensity normalisation every image goes through, whatever its container.

Input: display values (after the DICOM display pipeline, or the grey levels of a PNG/JPEG),
white = dense, any linear scale, plus a mask of the pixels that are image (not padding).
Output: float32 in [0, 1]. The scale is set by robust percentiles (:data:`LOW_PERCENTILE`,
:data:`HIGH_PERCENTILE`) of the image pixels only: Pixel Padding Value/Range Limit and constant
borders (burnt-in frames, collimator fill) take no part, and a handful of extreme pixels cannot
move it. Padding comes out as 0, the letterbox fill; detected borders keep their (clipped)
values, since they may be real image (an unexposed edge) and are only kept out of the scaling.

Because the result does not depend on the input's linear scale, an 8-bit JPEG, a 12-bit image in
a 16-bit PNG and a DICOM of the same pixels with or without a linear window give the same
tensor. The name and version of this normalisation are recorded in the manifest
(``InputSpec.normalization``); change :data:`NORMALIZATION` whenever the output changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.exceptions import ImageRejectedError

#: Name and version recorded in ``InputSpec.normalization``.
NORMALIZATION = "robust-percentile-v1"
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
#: A border row/column is "constant" when its spread is below this fraction of the image's range.
BORDER_FLATNESS = 0.01
#: Detected borders never take more than this fraction of a side (an image is never all border).
MAX_BORDER_FRACTION = 0.25
#: Fewer image pixels than this cannot be normalised meaningfully.
MIN_IMAGE_PIXELS = 16


@dataclass(frozen=True)
class Borders:
    """Rows/columns at each edge found constant: ``top``, ``bottom``, ``left``, ``right``."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    def mask(self, shape: tuple[int, int]) -> NDArray[np.bool_]:
        """True where the pixel is inside the borders (image)."""
        rows, cols = shape
        inside = np.zeros(shape, dtype=bool)
        inside[self.top : rows - self.bottom, self.left : cols - self.right] = True
        return inside

    @property
    def any(self) -> bool:
        return bool(self.top or self.bottom or self.left or self.right)


def _flat_run(lines: NDArray[np.float64], edge_value: float, tolerance: float, limit: int) -> int:
    """How many leading lines (rows of ``lines``) are flat and at the edge's value."""

    def flat(block: NDArray[np.float64]) -> NDArray[np.bool_]:
        spread = block.max(axis=1) - block.min(axis=1)
        return (spread <= tolerance) & (np.abs(block.mean(axis=1) - edge_value) <= tolerance)

    # Most images have no border: the first line decides that without reading the others.
    if not flat(lines[:1])[0]:
        return 0
    not_flat = np.flatnonzero(~flat(lines[:limit]))
    return int(not_flat[0]) if not_flat.size else limit


def detect_borders(values: NDArray[np.float64], valid: NDArray[np.bool_] | None = None) -> Borders:
    """Constant bands along the edges (a burnt-in frame, a flat fill where collimation was
    cropped): rows/columns whose values stay within :data:`BORDER_FLATNESS` of the image range
    and equal the edge's value. Padding pixels (``valid`` False) count as flat."""
    return _borders_and_range(values, valid)[0]


def _borders_and_range(
    values: NDArray[np.float64], valid: NDArray[np.bool_] | None
) -> tuple[Borders, tuple[float, float] | None]:
    """:func:`detect_borders`, and the robust percentiles of the finite image pixels it
    computed on the way (None when there are too few): with no border they are the
    normalisation's own, so :func:`normalize_intensity` does not sort the image twice."""
    rows, cols = values.shape
    work = values if valid is None else np.where(valid, values, np.nan)
    finite = work[np.isfinite(work)] if valid is not None else work.ravel()
    if finite.size < MIN_IMAGE_PIXELS:
        return Borders(), None
    low, high = (float(v) for v in np.percentile(finite, (LOW_PERCENTILE, HIGH_PERCENTILE)))
    tolerance = BORDER_FLATNESS * float(max(high - low, 1e-12))

    def run(lines: NDArray[np.float64], limit: int) -> int:
        # Padding inside a line is ignored (filled with the edge's value); an edge that is all
        # padding is already out of the statistics, so no border is looked for behind it.
        finite = np.isfinite(lines[0])
        if not finite.any():
            return 0
        edge_value = float(np.median(lines[0][finite]))
        # Only the lines a border may take are read (the run stops at ``limit``).
        head = lines[:limit]
        filled = np.where(np.isfinite(head), head, edge_value)
        return _flat_run(filled, edge_value, tolerance, limit)

    row_limit = int(rows * MAX_BORDER_FRACTION)
    col_limit = int(cols * MAX_BORDER_FRACTION)
    if row_limit < 1 or col_limit < 1:
        return Borders(), (low, high)
    borders = Borders(
        top=run(work, row_limit),
        bottom=run(work[::-1], row_limit),
        left=run(work.T, col_limit),
        right=run(work.T[::-1], col_limit),
    )
    return borders, (low, high)


def normalize_intensity(
    values: NDArray[np.floating] | NDArray[np.integer],
    valid: NDArray[np.bool_] | None = None,
    *,
    source: str = "",
) -> NDArray[np.float32]:
    """Display values (white = dense) -> [0, 1] by robust percentiles of the image pixels.

    ``valid`` marks the pixels that are image (False: padding). Detected constant borders are
    excluded from the statistics. Padding is set to 0. Raises :class:`ImageRejectedError`
    (``reason="constant"``) when the image pixels hold no contrast.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"values must be a 2-D grey image, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ImageRejectedError(
            f"image {source}: pixel values are not finite", reason="not_finite"
        )
    image = np.ones(array.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    all_image = bool(image.all())
    borders, image_range = _borders_and_range(array, None if all_image else image)
    if not borders.any and image_range is not None:
        # The image pixels are those detect_borders took its percentiles of.
        pixels = array.ravel() if all_image else array[image]
        low, high = image_range
    else:
        pixels = array[image & borders.mask(array.shape)]
        if pixels.size < MIN_IMAGE_PIXELS:
            raise ImageRejectedError(
                f"image {source}: only {pixels.size} pixels are image (the rest is padding or "
                "a constant border); it cannot be a radiograph",
                reason="constant",
            )
        low, high = np.percentile(pixels, (LOW_PERCENTILE, HIGH_PERCENTILE))
    if not high > low:
        # Percentiles can tie on a mostly flat image with a few details: fall back to the range.
        low, high = float(pixels.min()), float(pixels.max())
    if not high > low:
        raise ImageRejectedError(
            f"image {source}: every image pixel has the same value ({low:g}); a blank or "
            "constant image cannot be reported",
            reason="constant",
        )
    out = np.clip((array - low) / (high - low), 0.0, 1.0)
    out[~image] = 0.0
    return out.astype(np.float32)
