"""Preprocessing on every real DICOM file and on synthetic ones for the other syntaxes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import get_encoder
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from engine.artifact import InputSpec
from engine.exceptions import NoUsableImageError, PixelDecodeError
from engine.preprocessing import (
    Letterbox,
    dicom_to_display,
    image_file_to_display,
    letterbox_array,
    prepare_dataset,
    prepare_image_file,
)
from tests.engine.dicom_samples import make_dataset, phantom, round_trip

SPEC = InputSpec(height=64, width=64, mean=0.5, std=0.25)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


@pytest.mark.parametrize(
    "name",
    [
        "rg1_chest_cr_uncompressed.dcm",
        "rg1_chest_cr_j2k_lossless.dcm",
        "rg1_chest_cr_j2k_lossy.dcm",
        "siim_chest_cr_jpeg_baseline.dcm",
        "siim_chest_cr_monochrome1.dcm",
        "highdicom_dx_canine_thorax.dcm",
    ],
)
def test_real_file_decodes_to_display_range(real_datasets: dict[str, Dataset], name: str) -> None:
    ds = real_datasets[name]
    display = dicom_to_display(ds)
    assert display.shape == (ds.Rows, ds.Columns)
    assert display.dtype == np.float32
    assert display.min() >= 0.0 and display.max() <= 1.0
    assert display.std() > 0.05  # an image, not a constant
    # MONOCHROME1 is inverted so that dense is white: display anti-correlates with stored values.
    corr = _correlation(display, ds.pixel_array)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        assert corr < -0.9
    else:
        assert corr > 0.9
    prepared = prepare_dataset(ds, SPEC)
    assert prepared.pixels.shape == (64, 64)
    assert prepared.sop_instance_uid == ds.SOPInstanceUID
    assert np.isfinite(prepared.pixels).all()


def test_jpeg2000_lossless_equals_uncompressed(real_datasets: dict[str, Dataset]) -> None:
    plain = dicom_to_display(real_datasets["rg1_chest_cr_uncompressed.dcm"])
    lossless = dicom_to_display(real_datasets["rg1_chest_cr_j2k_lossless.dcm"])
    lossy = dicom_to_display(real_datasets["rg1_chest_cr_j2k_lossy.dcm"])
    np.testing.assert_array_equal(plain, lossless)
    assert float(np.abs(plain - lossy).mean()) < 0.01


def test_monochrome1_is_the_inverse_of_the_same_pixels_as_monochrome2(
    real_datasets: dict[str, Dataset],
) -> None:
    # The two SIIM files hold identical stored values; only the photometric label differs.
    mono2 = dicom_to_display(real_datasets["siim_chest_cr_jpeg_baseline.dcm"])
    mono1 = dicom_to_display(real_datasets["siim_chest_cr_monochrome1.dcm"])
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


def test_window_from_header_is_applied(real_datasets: dict[str, Dataset]) -> None:
    ds = real_datasets["rg1_chest_cr_uncompressed.dcm"]
    narrow = copy.deepcopy(ds)  # the session dataset must stay untouched
    narrow.WindowCenter, narrow.WindowWidth = 15000, 2000
    wide = dicom_to_display(ds)
    clipped = dicom_to_display(narrow)
    # A narrower window saturates more pixels at both ends.
    saturated = lambda a: float(((a <= 0.0) | (a >= 1.0)).mean())  # noqa: E731
    assert saturated(clipped) > saturated(wide) + 0.2


def _encoder_or_skip(syntax: object) -> None:
    encoder = get_encoder(syntax)
    if not encoder.is_available:
        pytest.skip(f"no encoder for {encoder.name} here: {encoder.missing_dependencies}")


@pytest.mark.parametrize(
    ("syntax", "bits"),
    [
        (RLELossless, 8),
        (RLELossless, 16),
        (JPEGLSLossless, 12),
        (JPEG2000Lossless, 16),
    ],
)
def test_compressed_synthetic_matches_uncompressed(syntax: object, bits: int) -> None:
    _encoder_or_skip(syntax)
    pixels = phantom(97, 131, bits)  # odd sizes on purpose
    plain = make_dataset(pixels, bits_stored=bits)
    compressed = make_dataset(pixels, bits_stored=bits)
    compressed.compress(syntax)
    compressed = round_trip(compressed)
    assert compressed.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(dicom_to_display(compressed), dicom_to_display(plain))


def test_deflated_transfer_syntax() -> None:
    pixels = phantom(64, 80, 16)
    ds = make_dataset(pixels, bits_stored=16)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    read = round_trip(ds)
    assert read.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(read.pixel_array, pixels)
    assert dicom_to_display(read).shape == (64, 80)


def test_modality_lut_rescale_is_applied() -> None:
    pixels = phantom(40, 40, 12)
    plain = dicom_to_display(make_dataset(pixels, bits_stored=12))
    # A negative slope flips the values: Modality LUT must be applied before display.
    flipped = make_dataset(pixels, bits_stored=12, RescaleSlope=-1, RescaleIntercept=4095)
    np.testing.assert_allclose(dicom_to_display(flipped), 1.0 - plain, atol=1e-6)


def test_voi_lut_sequence_is_applied() -> None:
    pixels = phantom(32, 48, 8)
    ds = make_dataset(pixels, bits_stored=8)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.LUTData = list(range(255, -1, -1))  # an inverting VOI LUT
    ds.VOILUTSequence = [item]
    plain = dicom_to_display(make_dataset(pixels, bits_stored=8))
    assert _correlation(dicom_to_display(ds), plain) < -0.99


def test_presentation_lut_inverse_on_monochrome2() -> None:
    pixels = phantom(32, 32, 8)
    plain = dicom_to_display(make_dataset(pixels, bits_stored=8))
    inverse = dicom_to_display(make_dataset(pixels, bits_stored=8, PresentationLUTShape="INVERSE"))
    np.testing.assert_allclose(inverse, 1.0 - plain, atol=1e-6)


def test_rgb_secondary_capture_becomes_grey() -> None:
    grey = phantom(30, 40, 8)
    ds = make_dataset(np.repeat(grey[..., None], 3, axis=2), bits_stored=8, photometric="RGB")
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    display = dicom_to_display(ds)
    assert display.shape == (30, 40)
    assert _correlation(display, grey) > 0.999


def test_no_pixel_data_is_refused() -> None:
    ds = make_dataset(phantom(8, 8, 8), bits_stored=8)
    del ds.PixelData
    with pytest.raises(NoUsableImageError, match="no pixel data"):
        dicom_to_display(ds)


def test_corrupt_compressed_pixels_raise_pixel_decode_error() -> None:
    _encoder_or_skip(JPEG2000Lossless)
    ds = make_dataset(phantom(64, 64, 16), bits_stored=16)
    ds.compress(JPEG2000Lossless)
    ds = round_trip(ds)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # truncated in transit
    with pytest.raises(PixelDecodeError, match=ds.SOPInstanceUID):
        dicom_to_display(ds)


def test_letterbox_keeps_aspect_and_maps_boxes_back() -> None:
    display = np.linspace(0, 1, 50 * 100, dtype=np.float32).reshape(50, 100)  # landscape 2:1
    plane, box = letterbox_array(display, SPEC)
    assert plane.shape == (64, 64)
    assert (box.pad_x, box.pad_y) == (0.0, 16.0)
    pad_value = (SPEC.pad_value - SPEC.mean) / SPEC.std
    np.testing.assert_allclose(plane[:16], pad_value)
    np.testing.assert_allclose(plane[48:], pad_value)
    # The content area on the model grid maps back to the whole source image.
    full = box.box_to_source((0.0, 16 / 64, 1.0, 48 / 64))
    np.testing.assert_allclose(full, (0.0, 0.0, 100.0, 50.0), atol=1e-6)
    # A box reaching into the padding is clipped to the image.
    assert box.box_to_source((0.25, 0.0, 0.5, 0.5)) == pytest.approx((25.0, 0.0, 50.0, 25.0))


def test_stretch_resize() -> None:
    box = Letterbox.fit(100, 50, 64, 64, keep_aspect=False)
    assert (box.pad_x, box.pad_y) == (0.0, 0.0)
    assert box.box_to_source((0.5, 0.5, 1.0, 1.0)) == pytest.approx((50.0, 25.0, 100.0, 50.0))


@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_image_file_png_matches_dicom_of_same_pixels(tmp_path: object, mode: str) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "image.png"
    bits = 8 if mode == "L" else 16
    pixels = phantom(140, 180, bits)
    Image.fromarray(pixels).save(path)
    display = image_file_to_display(path)
    reference = dicom_to_display(make_dataset(pixels, bits_stored=bits))
    np.testing.assert_allclose(display, reference, atol=1e-6)
    assert prepare_image_file(path, SPEC).pixels.shape == (64, 64)


def test_image_file_real_nih_jpeg(shared_data: object) -> None:
    from pathlib import Path

    images = sorted((Path(str(shared_data)) / "nih" / "images_512").glob("*.jpg"))[:3]
    assert images, "the NIH sample images are missing"
    for path in images:
        prepared = prepare_image_file(path, SPEC)
        assert prepared.pixels.shape == (64, 64)
        assert prepared.sop_instance_uid == path.stem
        assert prepared.pixels.std() > 0.1


def test_signed_pixels_with_rescale() -> None:
    unsigned = phantom(48, 40, 12).astype(np.int16)
    signed = (unsigned - 2048).astype(np.int16)  # stored values straddle zero
    ds = make_dataset(signed.view(np.uint16), bits_stored=12, RescaleSlope=1, RescaleIntercept=0)
    ds.PixelRepresentation = 1
    ds.PixelData = signed.tobytes()
    display = dicom_to_display(ds)
    reference = dicom_to_display(make_dataset(unsigned.astype(np.uint16), bits_stored=12))
    np.testing.assert_allclose(display, reference, atol=1e-6)


def test_multiframe_uses_the_first_frame() -> None:
    frames = np.stack([phantom(32, 32, 8), 255 - phantom(32, 32, 8)])
    ds = make_dataset(frames[0], bits_stored=8)
    ds.NumberOfFrames = 2
    ds.PixelData = frames.tobytes()
    single = dicom_to_display(make_dataset(frames[0], bits_stored=8))
    np.testing.assert_allclose(dicom_to_display(ds), single, atol=1e-6)
