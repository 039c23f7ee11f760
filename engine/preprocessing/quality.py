"""Is this image something the model may look at? Refusals with a reason, and warnings.

Refused (:class:`~engine.exceptions.ImageRejectedError`): images smaller than
:data:`MIN_SIDE` pixels on a side (one pixel, thumbnails, icons: no chest radiograph is that
small, and the model would see upsampled blur), constant images (refused by the normalisation),
colour pages (refused when decoded). Flagged, not refused: a frontal image whose intensity
profile looks inverted relative to its photometric interpretation (lungs brighter than the
mediastinum), which usually means a wrong MONOCHROME1/2 or Presentation LUT Shape.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from engine.exceptions import ImageRejectedError

#: Smallest side (pixels) of an image we analyse. Public downscaled datasets go down to 224;
#: anything under 128 is a thumbnail, an icon or a one-pixel placeholder.
MIN_SIDE = 128
#: A frontal whose mediastinum is darker than its lungs by this much (normalised units, the
#: ``centre_contrast`` of :mod:`engine.view_model`) is flagged as looking inverted. On the real
#: images: 0.8% of NIH and 5.8% of Hannover frontals flagged, 91% of inverted NIH frontals.
INVERSION_MARGIN = 0.1


def check_size(rows: int, columns: int, source: str, study_instance_uid: str = "") -> None:
    """Refuse images too small to be a chest radiograph (reason ``"too_small"``)."""
    if min(rows, columns) < MIN_SIDE:
        raise ImageRejectedError(
            f"image {source}: {columns}x{rows} pixels is smaller than {MIN_SIDE} on a side; "
            "it cannot be a chest radiograph for the model (thumbnail, icon or placeholder)",
            reason="too_small",
            study_instance_uid=study_instance_uid,
        )


def inversion_warning(display: NDArray[np.floating], source: str) -> str | None:
    """A warning when a frontal image looks inverted relative to its photometric
    interpretation (lungs brighter than the mediastinum), else None."""
    from engine.view_model import view_features

    contrast = float(view_features(display)[1])
    if contrast < -INVERSION_MARGIN:
        return (
            f"image {source} looks inverted (lungs brighter than the mediastinum by "
            f"{-contrast:.2f}): check its Photometric Interpretation / Presentation LUT Shape"
        )
    return None
