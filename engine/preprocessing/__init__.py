"""Pixel data to model input, shared by training and the runtime so the two never drift.

One pipeline for every container (see docs/image-pipeline.md):

* DICOM (:mod:`.dicom`): decode, Modality LUT, VOI LUT or window, MONOCHROME1 inversion, padding
  mask; image files (:mod:`.files`): grey levels scaled by their real bit depth;
* both: :func:`~.intensity.normalize_intensity` (robust percentiles of the image pixels, padding
  and constant borders excluded) to [0, 1], white = dense;
* :func:`~.quality.check_size` refuses thumbnails, :func:`~.quality.inversion_warning` flags
  frontals that look inverted;
* :func:`~.geometry.letterbox_array` to the artifact's input size; the
  :class:`~.geometry.Letterbox` maps boxes both ways (model grid <-> source image).

Training calls :func:`prepare_image_file` (with ``train_aspect`` from
:func:`sample_train_aspect` for the train-time letterbox); the node calls
:func:`prepare_dataset`. View selection lives in :mod:`engine.views`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from engine.exceptions import ImageRejectedError
from engine.preprocessing.dicom import dicom_display_values, dicom_to_display
from engine.preprocessing.files import image_file_to_display, read_image_file
from engine.preprocessing.geometry import (
    FloatArray,
    Letterbox,
    letterbox_array,
    sample_train_aspect,
)
from engine.preprocessing.intensity import NORMALIZATION, normalize_intensity
from engine.preprocessing.quality import MIN_SIDE, check_size, inversion_warning

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from engine.artifact import InputSpec

__all__ = [
    "MIN_SIDE",
    "NORMALIZATION",
    "FloatArray",
    "Letterbox",
    "PreparedImage",
    "View",
    "dicom_display_values",
    "dicom_to_display",
    "image_file_to_display",
    "letterbox_array",
    "normalize_intensity",
    "prepare_dataset",
    "prepare_display",
    "prepare_image_file",
    "read_image_file",
    "sample_train_aspect",
    "stack_views",
]

View = Literal["frontal", "lateral"]


@dataclass(frozen=True)
class PreparedImage:
    """One image ready for the encoder: ``pixels[H, W]`` normalized float32 plus provenance.

    ``warnings`` holds what a reader of the report should know (e.g. the image looks inverted).
    """

    pixels: FloatArray
    letterbox: Letterbox
    sop_instance_uid: str = ""
    view: View = "frontal"
    warnings: tuple[str, ...] = ()


def prepare_display(
    display: FloatArray,
    spec: InputSpec,
    view: View = "frontal",
    *,
    source: str = "",
    train_aspect: float | None = None,
    study_instance_uid: str = "",
) -> PreparedImage:
    """A normalised display image (from :func:`dicom_to_display` or
    :func:`image_file_to_display`) -> encoder input plane: size check, inversion flag,
    letterbox. ``train_aspect``: training only, see :func:`sample_train_aspect`."""
    rows, cols = display.shape
    check_size(rows, cols, source, study_instance_uid)
    warnings = []
    if view == "frontal":
        warning = inversion_warning(display, source)
        if warning:
            warnings.append(warning)
    pixels, box = letterbox_array(display, spec, train_aspect=train_aspect)
    return PreparedImage(pixels, box, source, view, tuple(warnings))


def prepare_dataset(ds: Dataset, spec: InputSpec, view: View = "frontal") -> PreparedImage:
    """One DICOM image -> encoder input plane with its letterbox transform.

    Raises :class:`~engine.exceptions.ImageRejectedError` for images the model must not see.
    """
    uid = str(getattr(ds, "SOPInstanceUID", "") or "")
    study = str(getattr(ds, "StudyInstanceUID", "") or "")
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    if rows and cols:
        check_size(rows, cols, uid, study)  # before decoding a one-pixel placeholder
    return prepare_display(
        dicom_to_display(ds), spec, view, source=uid, study_instance_uid=study
    )


def prepare_image_file(
    path: str | Path,
    spec: InputSpec,
    view: View = "frontal",
    *,
    bits_stored: int | None = None,
    train_aspect: float | None = None,
) -> PreparedImage:
    """One PNG/JPEG file -> encoder input plane, exactly as a DICOM of the same pixels is
    served (training, dataset evaluation). ``sop_instance_uid`` is the file stem.

    ``bits_stored``: the dataset's declared bit depth for 16-bit PNGs. ``train_aspect``:
    training only (:func:`sample_train_aspect`). Raises
    :class:`~engine.exceptions.ImageRejectedError` for images the model must not see.
    """
    path = Path(path)
    try:
        display = image_file_to_display(path, bits_stored=bits_stored)
    except ImageRejectedError as exc:
        exc.study_instance_uid = exc.study_instance_uid or path.stem
        raise
    return prepare_display(display, spec, view, source=path.stem, train_aspect=train_aspect)


def stack_views(
    frontal: PreparedImage, lateral: PreparedImage | None, spec: InputSpec
) -> FloatArray:
    """Planes in the order ``spec.views`` asks for: ``[V, H, W]``."""
    planes = [frontal.pixels]
    if "lateral" in spec.views:
        if lateral is not None:
            planes.append(lateral.pixels)
        elif spec.missing_lateral == "repeat_frontal":
            planes.append(frontal.pixels)
        else:
            planes.append(np.full_like(frontal.pixels, (spec.pad_value - spec.mean) / spec.std))
    return np.stack(planes).astype(np.float32)
