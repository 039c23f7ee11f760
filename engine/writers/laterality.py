"""Which side of the patient a located finding is on, from its box on a frontal image.

On a frontal chest radiograph displayed as radiologists read it (PA or AP), the patient's
right is on the image's left: DICOM Patient Orientation (0020,0020) then starts with "L" (the
rows run towards the patient's left). An image stored flipped says "R" there, and the sides
swap. Lateral views carry no left/right information in x.
"""

from __future__ import annotations

import logging

from engine.result import Laterality, Region

logger = logging.getLogger(__name__)

#: Share of the box's width that must lie on each side of the midline to call it bilateral.
BILATERAL_SHARE = 0.25


def laterality_from_region(
    region: Region,
    image_width: int,
    *,
    view: str = "PA",
    row_direction: str = "L",
) -> Laterality | None:
    """The patient side of ``region`` on a frontal image ``image_width`` pixels wide.

    ``row_direction`` is the first value of Patient Orientation ("L" as usual, "R" when the
    image is flipped). Returns None for a non-frontal view or an unknown orientation.
    """
    if image_width <= 0:
        raise ValueError(f"image_width must be positive, got {image_width}")
    if view.upper() not in ("PA", "AP", "FRONTAL"):
        return None
    direction = (row_direction or "L").strip().upper()[:1]
    if direction not in ("L", "R"):
        return None
    mid = image_width / 2.0
    width = region.x_max - region.x_min
    left_part = max(0.0, min(region.x_max, mid) - region.x_min)  # image-left share
    right_part = max(0.0, region.x_max - max(region.x_min, mid))
    if width > 0 and min(left_part, right_part) / width >= BILATERAL_SHARE:
        return "bilateral"
    image_left = left_part >= right_part
    # Rows towards the patient's left: image left is the patient's right.
    if direction == "L":
        return "right" if image_left else "left"
    return "left" if image_left else "right"
