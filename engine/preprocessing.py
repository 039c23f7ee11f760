"""Pixel data to model input, shared by training and the runtime so the two never drift.

From a pydicom dataset: decode (pydicom 3 with the pylibjpeg plugins: JPEG, JPEG-LS,
JPEG 2000, RLE), Modality LUT, VOI LUT or window, MONOCHROME1 inversion, scale to [0, 1],
then letterbox to the artifact's input size. The letterbox transform is kept so a box
predicted on the model grid maps back to source pixel coordinates.

Also chooses the views of a study (:func:`select_views`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from engine.exceptions import NoUsableImageError, PixelDecodeError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from engine.artifact import InputSpec

logger = logging.getLogger(__name__)

View = Literal["frontal", "lateral"]
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
    ) -> Letterbox:
        if min(source_width, source_height, target_width, target_height) <= 0:
            raise ValueError("Letterbox sizes must be positive")
        if keep_aspect:
            scale = min(target_width / source_width, target_height / source_height)
            new_w = max(1, round(source_width * scale))
            new_h = max(1, round(source_height * scale))
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


@dataclass(frozen=True)
class PreparedImage:
    """One image ready for the encoder: ``pixels[H, W]`` normalized float32 plus provenance."""

    pixels: FloatArray
    letterbox: Letterbox
    sop_instance_uid: str = ""
    view: View = "frontal"


# ---------------------------------------------------------------------------------------------
# Decoding and display transforms


def _as_grey(array: NDArray[Any], ds: Dataset | None) -> NDArray[Any]:
    if array.ndim == 4 or (array.ndim == 3 and int(getattr(ds, "SamplesPerPixel", 1) or 1) == 1):
        # Multi-frame: the first frame is the image (chest radiographs are single frame).
        array = array[0]
    if array.ndim == 3:
        # Colour secondary captures: ITU-R 601 luma (pydicom has converted YBR to RGB already).
        rgb = array[..., :3].astype(np.float64)
        return rgb @ np.array([0.299, 0.587, 0.114])
    # Stored integers stay integers: a VOI LUT Sequence indexes by value.
    return array


def _needs_inversion(ds: Dataset) -> bool:
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    shape = str(getattr(ds, "PresentationLUTShape", "") or "").upper()
    if photometric == "MONOCHROME1":
        # DX requires Presentation LUT Shape INVERSE with MONOCHROME1: the same inversion once.
        return True
    return photometric == "MONOCHROME2" and shape == "INVERSE"


def _to_unit_range(values: NDArray[np.float64], robust: bool) -> NDArray[np.float64]:
    if robust:
        low, high = np.percentile(values, (0.5, 99.5))
    else:
        low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def dicom_to_display(ds: Dataset) -> NDArray[np.float32]:
    """Decode a dataset's pixels and return them as displayed: [0, 1], white = dense."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    uid = str(getattr(ds, "SOPInstanceUID", "") or "")
    study = str(getattr(ds, "StudyInstanceUID", "") or "")
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise NoUsableImageError(
            f"image {uid or '(no SOP Instance UID)'} has no pixel data; it cannot be reported",
            study_instance_uid=study,
        )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        raw = ds.pixel_array
    except Exception as exc:  # decoders raise many types: surface one that names the image
        raise PixelDecodeError(
            f"image {uid}: cannot decode pixel data (transfer syntax "
            f"{getattr(syntax, 'name', syntax)}): {exc}; check the sending modality or install "
            "the matching pylibjpeg plugin",
            study_instance_uid=study,
        ) from exc
    grey = _as_grey(raw, ds)
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) == 1:
        try:
            values = np.asarray(apply_modality_lut(grey, ds))
            has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds
            if "VOILUTSequence" in ds and values.dtype.kind == "f":
                values = np.rint(values).astype(np.int64)  # a LUT is indexed by integers
            if has_voi:
                values = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
            values = values.astype(np.float64)
        except Exception as exc:
            raise PixelDecodeError(
                f"image {uid}: invalid Modality/VOI LUT attributes ({exc})",
                study_instance_uid=study,
            ) from exc
    else:
        values, has_voi = grey, True
    # Without a VOI the stored range includes outliers (labels, collimator): use percentiles.
    unit = _to_unit_range(values, robust=not has_voi)
    if _needs_inversion(ds):
        unit = 1.0 - unit
    if not np.all(np.isfinite(unit)):
        raise PixelDecodeError(
            f"image {uid}: pixel values are not finite", study_instance_uid=study
        )
    return unit.astype(np.float32)


def image_file_to_display(path: str | Path) -> NDArray[np.float32]:
    """Read a PNG/JPEG radiograph (IU X-Ray, NIH) as [0, 1] grey, white = dense."""
    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") else max(float(array.max()), 1.0)
        else:
            array = np.asarray(img.convert("L"), dtype=np.float64)
            top = 255.0
    return np.clip(array / top, 0.0, 1.0).astype(np.float32)


def letterbox_array(display: NDArray[np.float32], spec: InputSpec) -> tuple[FloatArray, Letterbox]:
    """Resize (aspect kept, padded, or stretched as ``spec.resize`` says) and normalize."""
    height, width = display.shape
    box = Letterbox.fit(
        width, height, spec.width, spec.height, keep_aspect=spec.resize == "letterbox"
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


def prepare_dataset(ds: Dataset, spec: InputSpec, view: View = "frontal") -> PreparedImage:
    """One DICOM image -> encoder input plane with its letterbox transform."""
    pixels, box = letterbox_array(dicom_to_display(ds), spec)
    return PreparedImage(pixels, box, str(getattr(ds, "SOPInstanceUID", "") or ""), view)


def prepare_image_file(path: str | Path, spec: InputSpec, view: View = "frontal") -> PreparedImage:
    """One PNG/JPEG file -> encoder input plane (training on IU X-Ray / NIH)."""
    pixels, box = letterbox_array(image_file_to_display(path), spec)
    return PreparedImage(pixels, box, Path(path).stem, view)


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


# ---------------------------------------------------------------------------------------------
# View selection

_FRONTAL_POSITIONS = {"PA", "AP"}
_LATERAL_POSITIONS = {"LL", "RL", "LAT", "LATERAL", "RLD", "LLD"}
# CID 4010 view codes (SNOMED CT and the legacy SRT codes still sent by many modalities).
_FRONTAL_CODES = {"399348003", "399182003", "R-10214", "R-10206", "R-10204"}
_LATERAL_CODES = {"399173006", "399198007", "R-10236", "R-10232", "R-10234"}
_FRONTAL_TEXT = re.compile(
    r"\b(pa|ap|frontal|frontale|postero-?anterior|antero-?posterior|posteroanterior|"
    r"anteroposterior)\b",
    re.IGNORECASE,
)
_LATERAL_TEXT = re.compile(r"\b(lat|lateral|ll|rl|perfil|lateral izq\w*|lateral der\w*)\b", re.I)


@dataclass(frozen=True)
class ViewGuess:
    view: View | None
    reason: str


def classify_view(ds: Dataset) -> ViewGuess:
    """Frontal or lateral from the header: ViewPosition, then ViewCodeSequence, then text."""
    position = str(getattr(ds, "ViewPosition", "") or "").strip().upper()
    if position in _FRONTAL_POSITIONS:
        return ViewGuess("frontal", f"ViewPosition {position}")
    if position in _LATERAL_POSITIONS:
        return ViewGuess("lateral", f"ViewPosition {position}")
    for item in getattr(ds, "ViewCodeSequence", None) or []:
        value = str(getattr(item, "CodeValue", "") or "")
        meaning = str(getattr(item, "CodeMeaning", "") or "").lower()
        if value in _FRONTAL_CODES or ("posterior" in meaning and "lateral" not in meaning):
            return ViewGuess("frontal", f"ViewCodeSequence {value} {meaning}".strip())
        if value in _LATERAL_CODES or "lateral" in meaning:
            return ViewGuess("lateral", f"ViewCodeSequence {value} {meaning}".strip())
    # ImageLaterality names the body side imaged, not the projection, so it is not a view hint.
    for keyword in (
        "SeriesDescription",
        "ProtocolName",
        "ImageComments",
        "AcquisitionDeviceProcessingDescription",
    ):
        text = str(getattr(ds, keyword, "") or "")
        if _LATERAL_TEXT.search(text):
            return ViewGuess("lateral", f"{keyword} {text!r}")
        if _FRONTAL_TEXT.search(text):
            return ViewGuess("frontal", f"{keyword} {text!r}")
    return ViewGuess(None, "no view in the header")


@dataclass(frozen=True)
class ViewSelection:
    frontal: Dataset
    lateral: Dataset | None
    frontal_reason: str
    lateral_reason: str = ""


def _has_pixels(ds: Dataset) -> bool:
    return "PixelData" in ds or "FloatPixelData" in ds


def _aspect(ds: Dataset) -> float:
    rows = int(getattr(ds, "Rows", 0) or 0)
    cols = int(getattr(ds, "Columns", 0) or 0)
    return cols / rows if rows else 0.0


def _instance_number(ds: Dataset) -> int:
    try:
        return int(getattr(ds, "InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def select_views(datasets: Sequence[Dataset]) -> ViewSelection:
    """Choose the frontal image of a study (PA before AP) and a lateral if there is one.

    Header first; when no image is labelled frontal the widest unlabelled image is taken
    (laterals are usually portrait, frontals square or landscape), then any image.
    """
    images = [ds for ds in datasets if _has_pixels(ds)]
    if not images:
        study = str(getattr(datasets[0], "StudyInstanceUID", "")) if datasets else ""
        raise NoUsableImageError(
            "the study holds no image with pixel data; nothing to report", study_instance_uid=study
        )
    guesses = [(ds, classify_view(ds)) for ds in images]
    frontals = [(ds, g) for ds, g in guesses if g.view == "frontal"]
    laterals = [(ds, g) for ds, g in guesses if g.view == "lateral"]
    unknown = [(ds, g) for ds, g in guesses if g.view is None]
    if frontals:
        frontals.sort(
            key=lambda item: (
                str(getattr(item[0], "ViewPosition", "")) != "PA",
                _instance_number(item[0]),
            )
        )
        frontal, reason = frontals[0][0], frontals[0][1].reason
    elif unknown:
        unknown.sort(key=lambda item: (-_aspect(item[0]), _instance_number(item[0])))
        frontal = unknown[0][0]
        reason = (
            f"fallback: widest image without a view in the header (aspect {_aspect(frontal):.2f})"
        )
        logger.warning("no frontal view labelled in the study; %s", reason)
    else:
        frontal = laterals[0][0]
        reason = "fallback: only lateral images in the study"
        logger.warning(
            "study has only lateral images; reporting on %s",
            getattr(frontal, "SOPInstanceUID", "?"),
        )
    lateral_candidates = [ds for ds, _ in laterals if ds is not frontal]
    if not lateral_candidates:
        lateral_candidates = [ds for ds, _ in unknown if ds is not frontal and _aspect(ds) < 1.0]
        lateral_reason = "fallback: portrait image without a view in the header"
    else:
        lateral_reason = "header"
    lateral = lateral_candidates[0] if lateral_candidates else None
    return ViewSelection(frontal, lateral, reason, lateral_reason if lateral is not None else "")
