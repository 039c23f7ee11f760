"""View selection: every header signal in order, then the pixels; real images throughout."""

from __future__ import annotations

import copy
import csv
import gzip
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from engine.exceptions import NoUsableImageError, PixelDecodeError
from engine.runtime import ImageStudy, select_image_views
from engine.views import classify_header, classify_view, select_views
from tests.engine.dicom_samples import make_dataset, phantom

NIH = ("00000150_002.jpg", "00000165_001.jpg", "00000193_019.jpg")
LATERALS = ("000001-9-b.jpg", "000002-2.jpg", "000017-1.jpg")


def _image(rows: int = 40, cols: int = 40, view: str | None = None, **attrs: object) -> Dataset:
    return make_dataset(phantom(rows, cols, 8), bits_stored=8, view_position=view, **attrs)


def _code(value: str, meaning: str, scheme: str = "SCT") -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _wrap(path: Path, view: str | None = None, **attrs: object) -> Dataset:
    """A real radiograph (JPEG/PNG) as an uncompressed DICOM with only the given header."""
    with Image.open(path) as img:
        grey = np.asarray(img.convert("L"))
    return make_dataset(grey, bits_stored=8, view_position=view, **attrs)


@pytest.fixture(scope="module")
def nih(shared_data: Path) -> list[Path]:
    return [shared_data / "nih" / "images_512" / n for n in NIH]


@pytest.fixture(scope="module")
def laterals(shared_data: Path) -> list[Path]:
    return [shared_data / "lateral_chest" / "images" / n for n in LATERALS]


def test_real_files_are_classified(real_datasets: dict[str, Dataset]) -> None:
    for name, ds in real_datasets.items():
        guess = classify_view(ds)
        if name.startswith(("rg1", "siim")):
            assert guess.view == "frontal", name
            assert guess.reason == "ViewPosition 'PA'"
            assert guess.projection == "PA" and guess.chest is True
        else:
            # The canine DX: Patient Orientation L\F reads frontal, its processing text says
            # LATERAL: the header contradicts itself and the pixels must decide.
            assert guess.view is None and guess.contradictory
            assert "LATERAL" in guess.reason


def test_pa_preferred_over_ap_whatever_the_order() -> None:
    ap, pa = _image(view="AP"), _image(view="PA")
    assert select_views([ap, pa]).frontal is pa
    assert select_views([pa, ap]).frontal is pa


def test_lateral_view_position() -> None:
    pa, ll = _image(view="PA"), _image(view="LL")
    selection = select_views([ll, pa])
    assert (selection.frontal, selection.lateral) == (pa, ll)


@pytest.mark.parametrize(
    ("value", "meaning", "view"),
    [
        ("399033003", "frontal", "frontal"),  # the "frontal projection" code itself
        ("272479007", "postero-anterior", "frontal"),
        ("399348003", "antero-posterior", "frontal"),
        ("R-10214", "postero-anterior", "frontal"),  # legacy SRT, as IU X-Ray's CRs send it
        ("399067008", "lateral", "lateral"),
        ("399173006", "left lateral", "lateral"),
        ("R-10236", "left lateral", "lateral"),
        ("399182000", "oblique", "oblique"),
        ("399356000", "right anterior oblique", "oblique"),
        ("99LOCAL", "Postero-anterior projection", "frontal"),  # unknown code: by its meaning
    ],
)
def test_view_code_sequence(value: str, meaning: str, view: str) -> None:
    assert classify_view(_image(ViewCodeSequence=[_code(value, meaning)])).view == view


@pytest.mark.parametrize(
    ("keyword", "text", "view"),
    [
        ("SeriesDescription", "Tórax PA", "frontal"),
        ("SeriesDescription", "TORAX PERFIL", "lateral"),
        ("SeriesDescription", "Tórax lateral izquierda", "lateral"),
        ("ProtocolName", "Chest LAT", "lateral"),
        ("ProtocolName", "Chest frontal", "frontal"),
        ("SeriesDescription", "view: AP", "frontal"),
        ("ImageComments", "AP portátil", "frontal"),
        ("SeriesDescription", "Tórax decúbito lateral izquierdo", "frontal"),
        ("SeriesDescription", "Chest left lateral decubitus", "frontal"),
        ("SeriesDescription", "Parrilla costal oblicua", "oblique"),
        ("ProtocolName", "CHEST RAO", "oblique"),
        # Text naming the study's two views says nothing about this image.
        ("SeriesDescription", "CHEST PA AND LATERAL", None),
        ("SeriesDescription", "TORAX PA Y LAT", None),
        ("SeriesDescription", "Xray Chest PA and Lateral", None),
    ],
)
def test_text_in_english_and_spanish(keyword: str, text: str, view: str | None) -> None:
    assert classify_view(_image(**{keyword: text})).view == view


@pytest.mark.parametrize(
    ("position", "view"),
    [("RLD", "frontal"), ("LLD", "frontal"), ("RAO", "oblique"), ("LPO", "oblique"),
     ("LATERAL", "lateral"), ("RL", "lateral")],
)
def test_decubitus_is_frontal_and_obliques_are_neither(position: str, view: str) -> None:
    assert classify_view(_image(view=position)).view == view


def test_patient_orientation_and_image_laterality() -> None:
    assert classify_view(_image(PatientOrientation=["A", "F"])).view == "lateral"
    assert classify_view(_image(PatientOrientation=["P", "FR"])).view == "lateral"
    assert classify_view(_image(PatientOrientation=["L", "F"])).view == "frontal"
    assert classify_view(_image(PatientOrientation=["F", "R"])).view == "frontal"  # decubitus
    assert classify_view(_image(ImageLaterality="B")).view == "frontal"
    # L/R name the side imaged, not the projection.
    assert classify_view(_image(ImageLaterality="L")).view is None


def test_signals_are_read_in_the_stated_order() -> None:
    # View Position before View Code Sequence before Patient Orientation before text; a
    # disagreement among them is a contradiction, not a silent choice.
    agree = classify_view(
        _image(view="PA", PatientOrientation=["L", "F"], SeriesDescription="Tórax PA")
    )
    assert agree.view == "frontal" and agree.reason == "ViewPosition 'PA'"
    assert [s.source for s in agree.signals] == [
        "ViewPosition", "PatientOrientation", "SeriesDescription"
    ]
    clash = classify_view(_image(view="PA", PatientOrientation=["A", "F"]))
    assert clash.view is None and clash.contradictory
    coded = classify_view(
        _image(ViewCodeSequence=[_code("399067008", "lateral")], SeriesDescription="Chest")
    )
    assert coded.view == "lateral" and coded.reason.startswith("ViewCodeSequence")
    # A header table row works the same as a dataset.
    assert classify_header({"PatientOrientation": "['A', 'F']"}).view == "lateral"


def test_body_part_other_than_chest_is_never_chosen() -> None:
    abdomen = _image(view="PA", BodyPartExamined="ABDOMEN", InstanceNumber=1)
    chest = _image(view="PA", BodyPartExamined="CHEST", InstanceNumber=2)
    assert select_views([abdomen, chest]).frontal is chest
    assert select_views([chest, abdomen]).frontal is chest
    assert classify_view(_image(view="PA", BodyPartExamined="TORAX")).chest is True
    assert classify_header({"BodyPartExamined": "Tórax"}).chest is True
    with pytest.raises(NoUsableImageError, match="not a chest"):
        select_views([abdomen])


def test_lateral_alone_is_not_reported() -> None:
    with pytest.raises(NoUsableImageError, match="no usable frontal") as info:
        select_views([_image(view="LL")])
    assert "ViewPosition 'LL'" in str(info.value)  # the reason is kept, image by image


def test_oblique_alone_is_not_reported() -> None:
    with pytest.raises(NoUsableImageError, match="oblique"):
        select_views([_image(view="RAO")])


def test_decubitus_after_pa() -> None:
    decubitus, pa = _image(view="LLD"), _image(view="PA")
    assert select_views([decubitus, pa]).frontal is pa
    assert select_views([decubitus]).frontal is decubitus


def test_silent_header_the_pixels_decide(nih: list[Path], laterals: list[Path]) -> None:
    """Real frontals and laterals with no view in the header, in every arrival order."""
    for frontal_path, lateral_path in zip(nih, laterals, strict=True):
        frontal, lateral = _wrap(frontal_path), _wrap(lateral_path)
        for order in itertools.permutations([frontal, lateral]):
            selection = select_views(list(order))
            assert selection.frontal is frontal, (frontal_path.name, lateral_path.name)
            assert selection.lateral is lateral
            assert selection.frontal_reason.startswith("pixels: P(frontal)")


def test_real_cr_without_view_header_is_frontal_by_its_pixels(
    real_datasets: dict[str, Dataset], laterals: list[Path]
) -> None:
    cr = copy.deepcopy(real_datasets["rg1_chest_cr_uncompressed.dcm"])
    for keyword in ("ViewPosition", "PatientOrientation", "BodyPartExamined"):
        delattr(cr, keyword)
    assert classify_view(cr).view is None
    lateral = _wrap(laterals[0])
    selection = select_views([lateral, cr])
    assert (selection.frontal, selection.lateral) == (cr, lateral)
    assert selection.frontal_reason.startswith("pixels")


def test_shared_series_text_does_not_make_both_lateral(
    nih: list[Path], laterals: list[Path]
) -> None:
    for text in ("CHEST PA AND LATERAL", "TORAX PA Y LAT"):
        frontal = _wrap(nih[0], SeriesDescription=text)
        lateral = _wrap(laterals[0], SeriesDescription=text)
        for order in ([lateral, frontal], [frontal, lateral]):
            selection = select_views(order)
            assert (selection.frontal, selection.lateral) == (frontal, lateral)


def test_contradictory_header_the_pixels_decide(nih: list[Path], laterals: list[Path]) -> None:
    # A lateral sent with View Position PA and Patient Orientation A\F, beside a real frontal
    # whose header is silent: the pixels settle both.
    mislabelled = _wrap(laterals[1], view="PA", PatientOrientation=["A", "F"])
    frontal = _wrap(nih[1])
    selection = select_views([mislabelled, frontal])
    assert selection.frontal is frontal
    assert selection.lateral is mislabelled


def test_lateral_alone_with_silent_header_is_not_reported(laterals: list[Path]) -> None:
    with pytest.raises(NoUsableImageError, match="P\\(frontal\\)"):
        select_views([_wrap(laterals[2])])


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


def test_undecodable_silent_image_is_not_a_candidate(nih: list[Path]) -> None:
    broken = _wrap(nih[0])
    broken.PixelData = broken.PixelData[:100]
    frontal = _wrap(nih[1])
    assert select_views([broken, frontal]).frontal is frontal
    # Nothing decodable: the decode error, not "no frontal", is the study's failure.
    with pytest.raises(PixelDecodeError, match="no image could be decoded"):
        select_views([broken])


def test_image_files_use_the_same_rule(
    nih: list[Path], laterals: list[Path], tmp_path: Path
) -> None:
    a, b, c = nih
    lat = laterals[0]
    # PA before AP, whatever the order; a labelled lateral is the lateral.
    study = ImageStudy("s", ((lat, "LL"), (b, "AP"), (a, "PA")))
    frontal, lateral, reason = select_image_views(study)
    assert (frontal, lateral) == (a, lat) and "PA" in reason
    # Unlabelled: the pixels decide, in either order.
    for images in (((lat, None), (c, None)), ((c, "UNKNOWN"), (lat, None))):
        frontal, lateral, reason = select_image_views(ImageStudy("s", images))
        assert (frontal, lateral) == (c, lat) and reason.startswith("pixels")
    with pytest.raises(NoUsableImageError, match="no usable frontal"):
        select_image_views(ImageStudy("s", ((lat, "LATERAL"),)))
    with pytest.raises(NoUsableImageError, match="s"):
        select_image_views(ImageStudy("s", ()))
    with pytest.raises(ValueError, match="study_id"):
        ImageStudy("", ())


def test_iu_xray_header_table(shared_data: Path) -> None:
    """On the IU X-Ray DICOM header table, with View Position removed, the header never names
    the wrong view for an image whose View Position is known (it may be silent)."""
    reference = {"PA": "frontal", "AP": "frontal", "LL": "lateral", "LATERAL": "lateral"}
    right = wrong = 0
    with gzip.open(shared_data / "iu_xray" / "nlmcxr_dicom_metadata.csv.gz", "rt") as fh:
        for row in csv.DictReader(fh):
            truth = reference.get(row["View Position"])
            if truth is None:
                continue
            guess = classify_header(
                {
                    "PatientOrientation": row["Patient Orientation"],
                    "BodyPartExamined": row["Body Part Examined"],
                    "ImageLaterality": row["Image Laterality"],
                    "SeriesDescription": row["Code Meaning"],
                }
            )
            if guess.view is not None:
                right += guess.view == truth
                wrong += guess.view != truth
    assert right > 4000
    assert wrong == 0
