"""Synthetic DICOM images for the transfer syntaxes and pixel layouts the real files lack."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)


def phantom(rows: int, cols: int, bits: int) -> NDArray[np.integer]:
    """A chest-like test pattern: bright body, two dark lungs, a bright spine; max 2**bits-1."""
    top = 2**bits - 1
    y, x = np.mgrid[0:rows, 0:cols]
    image = np.full((rows, cols), 0.75)
    for cx in (0.3, 0.7):
        lung = ((x / cols - cx) / 0.15) ** 2 + ((y / rows - 0.5) / 0.32) ** 2 < 1
        image[lung] = 0.2
    image[:, int(cols * 0.47) : int(cols * 0.53)] = 0.95
    image += 0.02 * np.sin(x / 3.0) * np.cos(y / 5.0)
    dtype = np.uint8 if bits <= 8 else np.uint16
    return np.clip(image * top, 0, top).astype(dtype)


def make_dataset(
    pixels: NDArray[np.integer],
    *,
    bits_stored: int,
    photometric: str = "MONOCHROME2",
    view_position: str | None = "PA",
    study_uid: str | None = None,
    **attributes: object,
) -> Dataset:
    """An uncompressed DX image (Explicit VR Little Endian) around ``pixels``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    if view_position is not None:
        ds.ViewPosition = view_position
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def round_trip(ds: Dataset) -> Dataset:
    """Write and read back as a Part 10 file (exercises the real reader, e.g. for Deflate)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)
