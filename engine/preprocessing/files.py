"""PNG/JPEG radiographs (NIH, IU X-Ray, PadChest, Hannover) read as a DICOM of the same pixels.

Grey levels are the display values (white = dense, as the datasets ship them); they go through
the same :func:`~engine.preprocessing.intensity.normalize_intensity` as DICOM pixels, so an
image file and a DICOM wrapping its pixels give the same model input.

16-bit PNGs: the real bit depth comes from ``bits_stored`` (what the dataset adapter declares,
``training.data.records.ImageRef.bits_stored``), else from the file's ``sBIT`` chunk, else from
the values (12-bit data in a 16-bit container is common and is not "nearly black" any more: the
normalisation does not depend on the container's range). Values outside the declared depth, or
using a tiny part of it, are logged as warnings: the adapter's declaration is probably wrong.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from engine.preprocessing.dicom import check_colour_image
from engine.preprocessing.intensity import normalize_intensity

logger = logging.getLogger(__name__)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_significant_bits(path: str | Path) -> int | None:
    """The grey ``sBIT`` value of a PNG (how many of its bits are significant), or None.

    Pillow does not expose the chunk; it sits before the first IDAT.
    """
    with open(path, "rb") as fh:
        if fh.read(8) != _PNG_SIGNATURE:
            return None
        while True:
            header = fh.read(8)
            if len(header) < 8:
                return None
            length, kind = struct.unpack(">I4s", header)
            if kind == b"sBIT":
                data = fh.read(length)
                return int(data[0]) if data else None
            if kind in (b"IDAT", b"IEND"):
                return None
            fh.seek(length + 4, 1)  # data and CRC


def _bit_depth(
    values: NDArray[np.float64], container_bits: int, declared: int | None, path: Path
) -> int:
    top = float(values.max()) if values.size else 0.0
    if declared is not None:
        if not 1 <= declared <= container_bits:
            raise ValueError(
                f"bits_stored={declared} does not fit the {container_bits}-bit image {path}"
            )
        bits = declared
        source = "declared by the dataset"
    else:
        significant = png_significant_bits(path) if path.suffix.lower() == ".png" else None
        if significant is not None and 1 <= significant <= container_bits:
            bits, source = significant, "sBIT chunk"
        elif container_bits > 8:
            # Smallest common depth that holds the data: 10, 12, 14 or 16 bits.
            bits = next((b for b in (10, 12, 14, 16) if top < 2**b), 16)
            source = "inferred from the values"
            if bits < container_bits:
                logger.warning(
                    "%s: %d-bit image whose values stay below %d: read as %d-bit data; declare "
                    "bits_stored in the dataset adapter to make this explicit",
                    path,
                    container_bits,
                    2**bits,
                    bits,
                )
        else:
            bits, source = container_bits, "container"
    if top > 2**bits - 1:
        logger.warning(
            "%s: values up to %d exceed the %d-bit depth (%s); the declaration is wrong",
            path,
            int(top),
            bits,
            source,
        )
    elif bits > 8 and top < 2 ** (bits - 4):
        logger.warning(
            "%s: values stay below %d, 1/16 of the %d-bit depth (%s); check the dataset's "
            "bit depth",
            path,
            int(top) + 1,
            bits,
            source,
        )
    return bits


def read_image_file(path: str | Path, *, bits_stored: int | None = None) -> NDArray[np.float64]:
    """A PNG/JPEG radiograph's grey values scaled by its real bit depth to [0, 1] (before the
    shared normalisation). Colour pages are refused (:class:`ImageRejectedError`)."""
    path = Path(path)
    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            array = np.asarray(img, dtype=np.float64)
            container = 16
        elif img.mode == "I":  # 16-bit PNGs open as 32-bit integers in some Pillow versions
            array = np.asarray(img, dtype=np.float64)
            container = 16 if float(array.max(initial=0)) < 65536 else 32
        elif img.mode in ("L", "1"):
            array = np.asarray(img.convert("L"), dtype=np.float64)
            container = 8
        elif img.mode == "F":
            raise ValueError(f"{path}: floating-point images are not radiographs we can read")
        else:
            rgb = np.asarray(img.convert("RGB"))
            check_colour_image(rgb, str(path))
            array = np.asarray(img.convert("L"), dtype=np.float64)
            container = 8
    bits = _bit_depth(array, container, bits_stored, path)
    result: NDArray[np.float64] = array / float(2**bits - 1)
    return result


def image_file_to_display(
    path: str | Path, *, bits_stored: int | None = None
) -> NDArray[np.float32]:
    """A PNG/JPEG radiograph normalised exactly as a DICOM of the same pixels: [0, 1],
    white = dense."""
    return normalize_intensity(read_image_file(path, bits_stored=bits_stored), source=str(path))
