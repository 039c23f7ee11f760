"""One image pipeline: the same pixels give the same model input whatever the container.

Real NIH radiographs, wrapped as DICOM in the ways hospitals send them, against the image-file
path that training uses; padding, outliers, bit depth, VOI LUTs, refusals, box mapping and the
train-time letterbox.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_voi

from engine.artifact import InputSpec
from engine.exceptions import ImageRejectedError
from engine.preprocessing import (
    MIN_SIDE,
    Letterbox,
    dicom_to_display,
    image_file_to_display,
    prepare_dataset,
    prepare_image_file,
    sample_train_aspect,
)
from engine.preprocessing.files import png_significant_bits
from engine.preprocessing.intensity import normalize_intensity
from tests.engine.dicom_samples import make_dataset, round_trip

SPEC = InputSpec(height=224, width=224)
NIH = ("00000150_002.jpg", "00000165_001.jpg", "00000193_019.jpg", "00001986_005.jpg")


@pytest.fixture(scope="module")
def nih(shared_data: Path) -> list[Path]:
    return [shared_data / "nih" / "images_512" / n for n in NIH]


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


# ---------------------------------------------------------------------------------------------
# Same pixels, whatever the container


@pytest.mark.parametrize("window", [None, "neutral", "neutral-monochrome1", "12-bit"])
def test_nih_jpeg_wrapped_as_dicom_gives_the_file_tensor(
    nih: list[Path], window: str | None
) -> None:
    for path in nih:
        grey = _grey(path)
        expected = prepare_image_file(path, SPEC).pixels
        if window is None:
            ds = make_dataset(grey, bits_stored=8)
        elif window == "neutral":
            # Center 128, width 256 is the identity under PS3.3 C.11.2.1.2.1 LINEAR.
            ds = make_dataset(grey, bits_stored=8, WindowCenter=128, WindowWidth=256)
        elif window == "neutral-monochrome1":
            # As a MONOCHROME1 modality stores it: inverted values, same display.
            ds = make_dataset(
                (255 - grey).astype(np.uint8), bits_stored=8, photometric="MONOCHROME1",
                WindowCenter=128, WindowWidth=256,
            )
        else:
            # 12-bit detector values with a rescale and a window covering them.
            stored = (grey.astype(np.uint16) * 16 + 8).astype(np.uint16)
            ds = make_dataset(
                stored, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024,
                WindowCenter=2048 - 1024, WindowWidth=4096,
            )
        served = prepare_dataset(round_trip(ds), SPEC).pixels
        # Before the shared normalisation these differed by 0.27 normalised units on average.
        assert np.abs(served - expected).mean() < 1e-3, (path.name, window)
        assert np.abs(served - expected).max() < 0.05, (path.name, window)


def test_the_normalisation_is_recorded_in_the_spec() -> None:
    assert SPEC.normalization == "robust-percentile-v1"
    with pytest.raises(ValueError):
        InputSpec(height=8, width=8, normalization="minmax")  # type: ignore[arg-type]
    # A format-1.0 input spec (no new fields) still loads, with the defaults.
    old = InputSpec.model_validate({"height": 8, "width": 8, "views": ["frontal"]})
    assert old.train_letterbox == "none"


# ---------------------------------------------------------------------------------------------
# Outliers and padding


def test_a_handful_of_extreme_pixels_do_not_move_the_image(nih: list[Path]) -> None:
    grey = _grey(nih[0]).astype(np.uint16) * 16  # 12-bit
    reference = dicom_to_display(make_dataset(grey, bits_stored=12))
    spiked = grey.copy()
    spiked[100, 100] = 4095
    spiked[200, 300] = 0
    spiked.flat[::40000] = 4095  # a handful more
    display = dicom_to_display(make_dataset(spiked, bits_stored=12))
    mask = spiked == grey
    assert abs(display[mask].mean() - reference[mask].mean()) < 0.005


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_pixel_padding_value_and_range_take_no_part(nih: list[Path], photometric: str) -> None:
    grey = _grey(nih[1]).astype(np.uint16) * 16 + 100  # 12-bit, real values 100..4180
    if photometric == "MONOCHROME1":
        grey = (4195 - grey).astype(np.uint16)
    reference = dicom_to_display(make_dataset(grey, bits_stored=13, photometric=photometric))
    padded = np.zeros((grey.shape[0] + 120, grey.shape[1] + 60), dtype=np.uint16)
    padded[:] = 8191 if photometric == "MONOCHROME1" else 0  # a white frame once inverted
    padded[60:-60, 30:-30] = grey
    ds = make_dataset(
        padded, bits_stored=13, photometric=photometric, PixelPaddingValue=int(padded[0, 0])
    )
    display = dicom_to_display(ds)
    np.testing.assert_allclose(display[60:-60, 30:-30], reference, atol=1e-5)
    assert display[:60].max() == 0.0 and display[:, :30].max() == 0.0  # padding is black
    # A padding range (values 0..50 in a noisy border) is excluded the same way.
    noisy = padded.copy()
    rng = np.random.default_rng(0)
    border = np.ones(noisy.shape, dtype=bool)
    border[60:-60, 30:-30] = False
    noisy[border] = rng.integers(0, 51, size=int(border.sum()))
    if photometric == "MONOCHROME1":
        noisy[border] = 8191 - noisy[border]
        ds = make_dataset(noisy, bits_stored=13, photometric=photometric,
                          PixelPaddingValue=8191, PixelPaddingRangeLimit=8141)
    else:
        ds = make_dataset(noisy, bits_stored=13, PixelPaddingValue=0, PixelPaddingRangeLimit=50)
    np.testing.assert_allclose(dicom_to_display(ds)[60:-60, 30:-30], reference, atol=1e-5)


def test_constant_borders_take_no_part_in_the_scaling(nih: list[Path], tmp_path: Path) -> None:
    grey = _grey(nih[2])
    reference = image_file_to_display(nih[2])
    framed = np.full((grey.shape[0] + 80, grey.shape[1] + 80), 255, dtype=np.uint8)
    framed[40:-40, 40:-40] = grey  # a burnt-in white frame, no padding declared
    path = tmp_path / "framed.png"
    Image.fromarray(framed).save(path)
    display = image_file_to_display(path)
    np.testing.assert_allclose(display[40:-40, 40:-40], reference, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Bit depth of 16-bit PNGs


def _png_with_sbit(path: Path, pixels: np.ndarray, bits: int) -> None:
    Image.fromarray(pixels).save(path)
    data = path.read_bytes()
    chunk = b"sBIT" + bytes([bits])
    sbit = struct.pack(">I", 1) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    end_of_ihdr = 8 + 8 + 13 + 4
    path.write_bytes(data[:end_of_ihdr] + sbit + data[end_of_ihdr:])


def test_12_bit_data_in_16_bit_png_is_not_black(
    nih: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    grey = _grey(nih[0])
    twelve = (grey.astype(np.uint16) * 16).astype(np.uint16)
    path = tmp_path / "twelve.png"
    Image.fromarray(twelve).save(path)
    expected = prepare_image_file(nih[0], SPEC).pixels
    with caplog.at_level(logging.WARNING, logger="engine.preprocessing.files"):
        undeclared = prepare_image_file(path, SPEC).pixels
    assert "declare bits_stored" in caplog.text  # inferred, and said so
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.preprocessing.files"):
        declared = prepare_image_file(path, SPEC, bits_stored=12).pixels
    assert caplog.text == ""
    for got in (undeclared, declared):
        assert np.abs(got - expected).mean() < 1e-3
    # The PNG's own sBIT chunk is read when the dataset declares nothing.
    _png_with_sbit(tmp_path / "sbit.png", twelve, 12)
    assert png_significant_bits(tmp_path / "sbit.png") == 12
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.preprocessing.files"):
        image_file_to_display(tmp_path / "sbit.png")
    assert caplog.text == ""


def test_implausible_declared_depth_warns(
    nih: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    twelve = (_grey(nih[0]).astype(np.uint16) * 16).astype(np.uint16)
    path = tmp_path / "twelve.png"
    Image.fromarray(twelve).save(path)
    with caplog.at_level(logging.WARNING, logger="engine.preprocessing.files"):
        image_file_to_display(path, bits_stored=10)  # values exceed 10 bits
    assert "exceed the 10-bit depth" in caplog.text
    caplog.clear()
    dark = (_grey(nih[0]) // 32).astype(np.uint16)  # values below 8: 1/16 of 16 bits and less
    Image.fromarray(dark).save(path)
    with caplog.at_level(logging.WARNING, logger="engine.preprocessing.files"):
        image_file_to_display(path, bits_stored=16)
    assert "1/16" in caplog.text


# ---------------------------------------------------------------------------------------------
# VOI LUT Sequence with 8-bit entries (pydicom 3.0.2 wraps the indices at 256)


def _lut_item(table: np.ndarray, first: int, bits: int, as_bytes: bool) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(table), first, bits]
    if as_bytes:
        item.LUTData = table.astype("<u2").tobytes()
        item["LUTData"].VR = "OW"
    else:
        item.LUTData = [int(v) for v in table]
        item["LUTData"].VR = "US"
    return item


@pytest.mark.parametrize("as_bytes", [False, True])
def test_voi_lut_sequence_with_8_bit_entries(nih: list[Path], as_bytes: bool) -> None:
    grey = _grey(nih[1])
    stored = (grey.astype(np.uint16) * 16).astype(np.uint16)  # 12-bit, values 0..4080
    # A gamma-like 8-bit LUT with 4096 entries: the shape a modality sends.
    table = np.round(255 * (np.arange(4096) / 4095) ** 0.8).astype(np.uint16)
    ds = make_dataset(stored, bits_stored=12)
    ds.VOILUTSequence = [_lut_item(table, 0, 8, as_bytes)]
    ds = round_trip(ds)
    expected = normalize_intensity(table[stored].astype(np.float64))
    np.testing.assert_allclose(dicom_to_display(ds), expected, atol=1e-6)
    if not as_bytes:
        # The upstream bug this guards against (pydicom 3.0.2 pixels.processing.apply_voi):
        # indices are built as uint8, so 4080 becomes 4080 % 256.
        wrapped = np.asarray(apply_voi(stored, ds))
        assert not np.array_equal(wrapped, table[stored])


def test_voi_lut_sequence_first_mapped_value_and_clipping() -> None:
    stored = np.tile(np.arange(0, 1000, 4, dtype=np.uint16), (200, 1))
    table = np.arange(300, dtype=np.uint16) * 200
    ds = make_dataset(stored, bits_stored=16)
    ds.VOILUTSequence = [_lut_item(table, 100, 16, as_bytes=False)]
    # Below the first mapped value: the first entry; above the last: the last entry.
    expected = table[np.clip(stored.astype(np.int64) - 100, 0, 299)]
    np.testing.assert_allclose(
        dicom_to_display(ds), normalize_intensity(expected.astype(np.float64)), atol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# Refusals and flags


def test_refused_images_name_their_reason(tmp_path: Path) -> None:
    with pytest.raises(ImageRejectedError, match="smaller than") as info:
        prepare_dataset(make_dataset(np.full((1, 1), 7, np.uint8), bits_stored=8), SPEC)
    assert info.value.reason == "too_small"
    with pytest.raises(ImageRejectedError) as info:
        thin = np.tile(np.arange(300, dtype=np.uint16), (MIN_SIDE - 1, 1))
        prepare_dataset(make_dataset(thin, bits_stored=12), SPEC)
    assert info.value.reason == "too_small"
    with pytest.raises(ImageRejectedError, match="same value") as info:
        prepare_dataset(make_dataset(np.full((300, 300), 900, np.uint16), bits_stored=12), SPEC)
    assert info.value.reason == "constant"
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(blank)
    with pytest.raises(ImageRejectedError, match="same value"):
        prepare_image_file(blank, SPEC)


def _dose_report(dark: bool) -> np.ndarray:
    page = Image.new("RGB", (600, 800), (0, 0, 0) if dark else (255, 255, 255))
    draw = ImageDraw.Draw(page)
    ink = (230, 230, 230) if dark else (0, 0, 0)
    for row in range(12):
        draw.text((40, 60 + row * 40), f"Series {row}  CTDIvol 12.{row} mGy  DLP 4{row}0", fill=ink)
    if not dark:
        draw.rectangle((40, 600, 560, 700), fill=(30, 90, 200))  # a coloured table header
    return np.asarray(page)


@pytest.mark.parametrize("dark", [False, True])
def test_dose_report_pages_are_refused(tmp_path: Path, dark: bool) -> None:
    rgb = _dose_report(dark)
    path = tmp_path / "dose.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(ImageRejectedError) as info:
        prepare_image_file(path, SPEC)
    assert info.value.reason == "colour_document"
    ds = make_dataset(rgb, bits_stored=8, photometric="RGB")
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    with pytest.raises(ImageRejectedError) as info:
        prepare_dataset(ds, SPEC)
    assert info.value.reason == "colour_document"


def test_radiographs_stored_in_colour_are_accepted(shared_data: Path) -> None:
    folder = shared_data / "lateral_chest" / "images"
    # A photographed film with a blue tint, and one with a coloured logo in a corner.
    for name in ("000005-5-b.jpg", "pneumocystis-carinii-pneumonia-1-L.jpg"):
        assert prepare_image_file(folder / name, SPEC, "lateral").pixels.shape == (224, 224)


def test_inverted_looking_frontal_is_flagged(
    nih: list[Path], real_datasets: dict[str, Dataset]
) -> None:
    grey = _grey(nih[1])
    right = prepare_dataset(make_dataset(grey, bits_stored=8), SPEC)
    assert right.warnings == ()
    # The same stored values labelled MONOCHROME1: displayed inverted.
    wrong = prepare_dataset(make_dataset(grey, bits_stored=8, photometric="MONOCHROME1"), SPEC)
    assert wrong.warnings and "looks inverted" in wrong.warnings[0]
    # The shared SIIM MONOCHROME1 file holds the MONOCHROME2 file's values: flagged too.
    assert prepare_dataset(real_datasets["siim_chest_cr_monochrome1.dcm"], SPEC).warnings
    assert not prepare_dataset(real_datasets["siim_chest_cr_jpeg_baseline.dcm"], SPEC).warnings
    assert not prepare_dataset(real_datasets["rg1_chest_cr_uncompressed.dcm"], SPEC).warnings


# ---------------------------------------------------------------------------------------------
# Boxes and the train-time letterbox


@pytest.mark.parametrize(
    ("width", "height", "aspect"),
    [(1841, 1955, None), (512, 512, None), (211, 169, None), (512, 512, 0.8), (640, 524, 0.9)],
)
def test_source_to_model_boxes_invert_model_to_source(
    width: int, height: int, aspect: float | None
) -> None:
    box = Letterbox.fit(width, height, 224, 224, placed_aspect=aspect)
    rng = np.random.default_rng(1)
    for _ in range(50):
        x0, x1 = sorted(rng.uniform(0, 1, 2))
        y0, y1 = sorted(rng.uniform(0, 1, 2))
        on_model = box.box_from_source((x0, y0, x1, y1))
        back = box.box_to_source(on_model)
        source_px = (x0 * width, y0 * height, x1 * width, y1 * height)
        # Within 0.1 model pixel, and the model box lies inside the image area.
        error_model_px = max(abs(a - b) for a, b in zip(back, source_px, strict=True)) * max(
            box.scale_x, box.scale_y
        )
        assert error_model_px < 0.1
        assert box.pad_x / 224 - 1e-9 <= on_model[0] <= on_model[2] <= 1 - box.pad_x / 224 + 1e-6


def test_dataset_boxes_on_a_portrait_image(shared_data: Path, tmp_path: Path) -> None:
    # A portrait crop of a real NIH image: a box that covers the whole source maps onto the
    # content area only, not the bars (what the box head must learn).
    path = tmp_path / "portrait.png"
    with Image.open(shared_data / "nih" / "images_512" / NIH[0]) as img:
        img.convert("L").crop((56, 0, 456, 512)).save(path)
    prepared = prepare_image_file(path, SPEC)
    x0, y0, x1, y1 = prepared.letterbox.box_from_source((0.0, 0.0, 1.0, 1.0))
    assert (y0, y1) == (0.0, 1.0)
    box = prepared.letterbox
    assert x0 == pytest.approx(box.pad_x / 224)
    assert x1 == pytest.approx((box.pad_x + box.resized_size[0]) / 224)
    assert 0.1 < x0 < x1 < 0.9  # the bars are outside the target


def test_train_time_letterbox(nih: list[Path]) -> None:
    spec = InputSpec(height=224, width=224, train_letterbox="random-aspect", train_letterbox_p=1.0)
    rng = np.random.default_rng(0)
    aspects = [sample_train_aspect(spec, rng) for _ in range(100)]
    assert all(a is not None and 0.8 <= a <= 1.0 for a in aspects)
    assert sample_train_aspect(SPEC, rng) is None  # "none": the image keeps its own shape
    plain = prepare_image_file(nih[0], spec)
    placed = prepare_image_file(nih[0], spec, train_aspect=0.8)
    assert plain.letterbox.padding_fraction == 0.0
    assert placed.letterbox.padding_fraction == pytest.approx(0.2, abs=0.01)
    pad = (spec.pad_value - spec.mean) / spec.std
    columns = int(placed.letterbox.pad_x)
    np.testing.assert_allclose(placed.pixels[:, :columns], pad)  # the bars a portrait CR gets
