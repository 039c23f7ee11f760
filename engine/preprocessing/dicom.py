"""The DICOM display pipeline: stored values to what a viewer shows, then the shared scaling.

Order (PS3.3 C.11 / PS3.4 N.2.1.1): decode (pydicom 3 with the pylibjpeg plugins), first frame,
padding mask from the stored values (Pixel Padding Value and Range Limit), Modality LUT
(rescale or Modality LUT Sequence), VOI (VOI LUT Sequence, else Window Center/Width with its
VOI LUT Function), Presentation LUT / MONOCHROME1 inversion, then
:func:`~engine.preprocessing.intensity.normalize_intensity` exactly as for image files.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from engine.exceptions import ImageRejectedError, NoUsableImageError, PixelDecodeError
from engine.preprocessing.intensity import normalize_intensity

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

#: An RGB image whose share of coloured pixels exceeds this is a page, a screenshot or a photo.
COLOURFUL_FRACTION = 0.05
#: Colour left after removing a uniform tint, above this fraction of the range, is "coloured".
CHROMA_THRESHOLD = 0.08
#: A colour image with more than this share of pixels at the white end is a document page.
WHITE_PAGE_FRACTION = 0.4
#: ... or with more than this share of pixels at one single grey level (a flat background).
FLAT_PAGE_FRACTION = 0.5


def _uid(ds: Dataset) -> str:
    return str(getattr(ds, "SOPInstanceUID", "") or "(no SOP Instance UID)")


def check_colour_image(rgb: NDArray[Any], source: str, study_instance_uid: str = "") -> None:
    """Refuse a colour image that cannot be a radiograph: coloured content (a dose report's
    coloured table, a screenshot, a photo) or a page (mostly white, or mostly one flat
    background). A radiograph stored as RGB passes, even with a uniform tint (a photographed
    film) or a small coloured logo: the tint is removed by fitting each channel as a linear
    function of the luma before measuring colour."""
    channels = np.asarray(rgb[..., :3], dtype=np.float64).reshape(-1, 3)
    top = float(channels.max())
    if top <= 0:
        return  # constant black: normalize_intensity refuses it with its own reason
    luma = channels @ np.array([0.299, 0.587, 0.114])
    design = np.stack([luma, np.ones_like(luma)], axis=1)
    fit, *_ = np.linalg.lstsq(design, channels, rcond=None)
    residual = np.abs(channels - design @ fit).max(axis=1)
    coloured = float(np.mean(residual > CHROMA_THRESHOLD * top))
    if coloured > COLOURFUL_FRACTION:
        raise ImageRejectedError(
            f"image {source}: {coloured:.0%} of its pixels are coloured; a colour page "
            "(dose report, screenshot, photo) is not a chest radiograph and is not analysed",
            reason="colour_document",
            study_instance_uid=study_instance_uid,
        )
    white = float(np.mean(luma >= 0.97 * top))
    _, counts = np.unique(np.rint(luma), return_counts=True)
    flat = float(counts.max() / luma.size)
    if white > WHITE_PAGE_FRACTION or flat > FLAT_PAGE_FRACTION:
        raise ImageRejectedError(
            f"image {source}: {max(white, flat):.0%} of it is one flat background; a document "
            "page (dose report, requisition, screenshot) is not a chest radiograph and is not "
            "analysed",
            reason="colour_document",
            study_instance_uid=study_instance_uid,
        )


def _luma(rgb: NDArray[Any]) -> NDArray[np.float64]:
    # ITU-R 601 luma (pydicom has converted YBR to RGB already).
    result: NDArray[np.float64] = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return result


def padding_mask(stored: NDArray[Any], ds: Dataset) -> NDArray[np.bool_] | None:
    """True where a stored value is padding (Pixel Padding Value, up to Pixel Padding Range
    Limit inclusive, PS3.3 C.7.5.1.1.2); None when the dataset declares no padding."""
    value = getattr(ds, "PixelPaddingValue", None)
    if value is None or isinstance(value, (bytes, list)):
        return None
    limit = getattr(ds, "PixelPaddingRangeLimit", None)
    if limit is None or isinstance(limit, (bytes, list)):
        return np.asarray(stored == int(value))
    low, high = sorted((int(value), int(limit)))
    return np.asarray((stored >= low) & (stored <= high))


def _lut_data(item: Dataset, ds: Dataset, entries: int, bits: int) -> NDArray[np.int64]:
    element = item["LUTData"]
    raw = element.value
    if isinstance(raw, (bytes, bytearray)):
        little = True
        meta = getattr(ds, "file_meta", None)
        syntax = getattr(meta, "TransferSyntaxUID", None)
        if syntax is not None and getattr(syntax, "is_little_endian", True) is False:
            little = False
        if element.VR == "OB" or (bits == 8 and len(raw) < 2 * entries):
            data = np.frombuffer(bytes(raw[:entries]), dtype=np.uint8)
        else:
            count = len(raw) // 2
            words = struct.unpack(f"{'<' if little else '>'}{count}H", raw[: count * 2])
            data = np.asarray(words, dtype=np.int64)
    else:
        data = np.asarray(list(raw) if not isinstance(raw, int) else [raw], dtype=np.int64)
    if data.size < entries:
        raise PixelDecodeError(
            f"image {_uid(ds)}: VOI LUT Data holds {data.size} entries, its descriptor says "
            f"{entries}; the VOI LUT is corrupt (ask the modality vendor)",
            study_instance_uid=str(getattr(ds, "StudyInstanceUID", "") or ""),
        )
    return data[:entries].astype(np.int64)


def apply_voi_lut_sequence(
    values: NDArray[Any], ds: Dataset, index: int = 0
) -> NDArray[np.float64]:
    """The first (or ``index``-th) VOI LUT Sequence item applied to modality values.

    Done here rather than with pydicom: pydicom 3.0.2 ``apply_voi`` builds its table indices in
    the LUT's entry type, so with 8-bit entries (LUT Descriptor third value 8) and more than 256
    of them every index wraps modulo 256 and the image becomes garbage without an error. Indices
    here are int64 (PS3.3 C.11.2.1.1: values below the first mapped value take the first entry,
    above the last the last entry).
    """
    item = ds.VOILUTSequence[index]
    descriptor = [int(v) for v in item.LUTDescriptor]
    if len(descriptor) != 3:
        raise PixelDecodeError(
            f"image {_uid(ds)}: VOI LUT Descriptor {descriptor} must have 3 values",
            study_instance_uid=str(getattr(ds, "StudyInstanceUID", "") or ""),
        )
    entries = descriptor[0] or 65536
    first, bits = descriptor[1], descriptor[2]
    if bits not in (8, *range(10, 17)):
        raise PixelDecodeError(
            f"image {_uid(ds)}: VOI LUT with {bits} bits per entry is not allowed (8, 10-16)",
            study_instance_uid=str(getattr(ds, "StudyInstanceUID", "") or ""),
        )
    table = _lut_data(item, ds, entries, bits)
    indices = np.clip(np.rint(np.asarray(values, dtype=np.float64)) - first, 0, entries - 1)
    result: NDArray[np.float64] = table[indices.astype(np.int64)].astype(np.float64)
    return result


def _needs_inversion(ds: Dataset) -> bool:
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    shape = str(getattr(ds, "PresentationLUTShape", "") or "").upper()
    if photometric == "MONOCHROME1":
        # DX requires Presentation LUT Shape INVERSE with MONOCHROME1: the same inversion once.
        return True
    return photometric == "MONOCHROME2" and shape == "INVERSE"


def dicom_display_values(ds: Dataset) -> tuple[NDArray[np.float64], NDArray[np.bool_] | None]:
    """Decoded pixels through the display pipeline (white = dense, linear scale of the
    display) and the padding mask (True = padding), before the shared normalisation."""
    from pydicom.pixels import apply_modality_lut
    from pydicom.pixels.processing import apply_windowing

    uid = _uid(ds)
    study = str(getattr(ds, "StudyInstanceUID", "") or "")
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise NoUsableImageError(
            f"image {uid} has no pixel data; it cannot be reported", study_instance_uid=study
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
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if raw.ndim == 4 or (raw.ndim == 3 and samples == 1):
        raw = raw[0]  # multi-frame: the first frame is the image (chest radiographs are single)
    if samples != 1:
        check_colour_image(raw, uid, study)
        return _luma(raw), None
    padding = padding_mask(raw, ds)
    try:
        values = np.asarray(apply_modality_lut(raw, ds))
        if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
            values = apply_voi_lut_sequence(values, ds)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            values = np.asarray(apply_windowing(values.astype(np.float64), ds, index=0))
        values = values.astype(np.float64)
    except PixelDecodeError:
        raise
    except Exception as exc:
        raise PixelDecodeError(
            f"image {uid}: invalid Modality/VOI LUT attributes ({exc})", study_instance_uid=study
        ) from exc
    if _needs_inversion(ds):
        values = -values  # the normalisation is scale-free, so negation is the inversion
    return values, padding


def dicom_to_display(ds: Dataset) -> NDArray[np.float32]:
    """A dataset's pixels as displayed and normalised: [0, 1], white = dense, padding 0."""
    values, padding = dicom_display_values(ds)
    try:
        return normalize_intensity(values, None if padding is None else ~padding, source=_uid(ds))
    except ImageRejectedError as exc:
        exc.study_instance_uid = exc.study_instance_uid or str(
            getattr(ds, "StudyInstanceUID", "") or ""
        )
        raise
