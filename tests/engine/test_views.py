"""View selection: header first (ViewPosition, ViewCodeSequence, text), then image aspect."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from engine.exceptions import NoUsableImageError
from engine.views import classify_view, select_views
from tests.engine.dicom_samples import make_dataset, phantom


def _image(rows: int = 40, cols: int = 40, view: str | None = None, **attrs: object) -> Dataset:
    return make_dataset(phantom(rows, cols, 8), bits_stored=8, view_position=view, **attrs)


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


def test_real_files_are_classified(real_datasets: dict[str, Dataset]) -> None:
    for name, ds in real_datasets.items():
        guess = classify_view(ds)
        if name.startswith(("rg1", "siim")):
            assert guess.view == "frontal", name
            assert guess.reason == "ViewPosition PA"
        else:  # the canine DX lateral has no ViewPosition; its processing text says LATERAL
            assert guess.view == "lateral"
            assert "LATERAL" in guess.reason


def test_pa_and_lateral_study(real_datasets: dict[str, Dataset]) -> None:
    lateral = real_datasets["highdicom_dx_canine_thorax.dcm"]
    frontal = real_datasets["rg1_chest_cr_uncompressed.dcm"]
    selection = select_views([lateral, frontal])
    assert selection.frontal is frontal
    assert selection.lateral is lateral


def test_pa_preferred_over_ap() -> None:
    ap, pa = _image(view="AP"), _image(view="PA")
    assert select_views([ap, pa]).frontal is pa


def test_lateral_view_position() -> None:
    pa, ll = _image(view="PA"), _image(view="LL")
    selection = select_views([ll, pa])
    assert (selection.frontal, selection.lateral) == (pa, ll)


def test_view_code_sequence() -> None:
    frontal = _image(ViewCodeSequence=[_code("399348003", "postero-anterior")])
    lateral = _image(ViewCodeSequence=[_code("399173006", "left lateral")])
    assert classify_view(frontal).view == "frontal"
    assert classify_view(lateral).view == "lateral"
    assert select_views([lateral, frontal]).frontal is frontal


@pytest.mark.parametrize(
    ("keyword", "text", "view"),
    [
        ("SeriesDescription", "Tórax PA", "frontal"),
        ("SeriesDescription", "TORAX PERFIL", "lateral"),
        ("ProtocolName", "Chest LAT", "lateral"),
        ("ProtocolName", "Chest frontal", "frontal"),
        ("SeriesDescription", "view: AP", "frontal"),
    ],
)
def test_text_hints(keyword: str, text: str, view: str) -> None:
    assert classify_view(_image(**{keyword: text})).view == view


def test_wrong_view_position_value_falls_back_to_text() -> None:
    ds = _image(view="XYZ", SeriesDescription="Torax lateral")
    assert classify_view(ds).view == "lateral"


def test_fallback_by_aspect_when_header_is_silent() -> None:
    portrait = _image(rows=60, cols=40)
    square = _image(rows=50, cols=50)
    selection = select_views([portrait, square])
    assert selection.frontal is square
    assert selection.frontal_reason.startswith("fallback")
    assert selection.lateral is portrait


def test_only_a_lateral_is_still_reported_on() -> None:
    lateral = _image(view="LL")
    selection = select_views([lateral])
    assert selection.frontal is lateral
    assert "only lateral" in selection.frontal_reason


def test_no_image_with_pixels() -> None:
    ds = _image(view="PA")
    del ds.PixelData
    with pytest.raises(NoUsableImageError, match="no image with pixel data"):
        select_views([ds])


def test_images_without_pixels_are_ignored() -> None:
    pa = _image(view="PA")
    no_pixels = _image(view="PA")
    del no_pixels.PixelData
    assert select_views([no_pixels, pa]).frontal is pa
    assert np.asarray(pa.pixel_array).shape == (40, 40)
