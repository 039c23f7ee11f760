"""The gate keeps images the engine was not made for away from it, naming the reason."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from engine.gate import GateSpec, check_image_header, check_study_headers, patient_age_years

CHESTS = [
    "rg1_chest_cr_uncompressed.dcm",
    "rg1_chest_cr_j2k_lossless.dcm",
    "siim_chest_cr_jpeg_baseline.dcm",
    "siim_chest_cr_monochrome1.dcm",
]


def _header(dicom_dir: Path, name: str) -> Dataset:
    return pydicom.dcmread(dicom_dir / name, stop_before_pixels=True)


@pytest.mark.parametrize("name", CHESTS)
def test_real_adult_chest_radiographs_pass(dicom_dir: Path, name: str) -> None:
    decision = check_image_header(_header(dicom_dir, name), GateSpec())
    assert decision.accepted, decision.reasons


def test_the_canine_thorax_is_refused(dicom_dir: Path) -> None:
    decision = check_image_header(_header(dicom_dir, "highdicom_dx_canine_thorax.dcm"), GateSpec())
    assert not decision.accepted
    assert any("pixels" in reason for reason in decision.reasons)


def _variant(dicom_dir: Path, **attributes: object) -> Dataset:
    ds = _header(dicom_dir, "siim_chest_cr_jpeg_baseline.dcm")
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"Modality": "CT"}, "Modality CT"),
        ({"Modality": "MG"}, "Modality MG"),
        ({"BodyPartExamined": "HAND"}, "Body Part Examined HAND"),
        ({"BodyPartExamined": "ABDOMEN"}, "Body Part Examined ABDOMEN"),
        ({"PatientAge": "003Y"}, "patient age 3.0"),
        ({"PatientAge": "006M"}, "patient age 0.5"),
        ({"PresentationIntentType": "FOR PROCESSING"}, "For Processing"),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, "LOCALIZER"),
        ({"PatientSpeciesDescription": "Canis lupus familiaris"}, "not human"),
        ({"PatientBreedDescription": "Beagle"}, "veterinary"),
        (
            {"PatientSpeciesCodeSequence": DicomSequence([_code("448771007", "Canis lupus")])},
            "not human",
        ),
        ({"PixelSpacing": [0.05, 0.05]}, "covers 51 mm"),
        ({"Rows": 120, "Columns": 140}, "140x120 pixels"),
    ],
)
def test_each_header_reason_refuses(
    dicom_dir: Path, attributes: dict[str, object], expected: str
) -> None:
    decision = check_image_header(_variant(dicom_dir, **attributes), GateSpec())
    assert not decision.accepted
    assert any(expected in reason for reason in decision.reasons), decision.reasons


@pytest.mark.parametrize(
    "attributes",
    [
        {"BodyPartExamined": ""},
        {"BodyPartExamined": "TORAX"},
        {"PatientAge": ""},
        {"PatientAge": "045Y"},
        {"PatientSpeciesDescription": "Homo sapiens"},
        {"PatientSpeciesCodeSequence": DicomSequence([_code("337915000", "Homo sapiens")])},
        {"Modality": "DX"},
    ],
)
def test_absent_or_human_values_are_accepted(
    dicom_dir: Path, attributes: dict[str, object]
) -> None:
    decision = check_image_header(_variant(dicom_dir, **attributes), GateSpec())
    assert decision.accepted, decision.reasons


def test_a_study_keeps_only_accepted_images(dicom_dir: Path) -> None:
    chest = _header(dicom_dir, "siim_chest_cr_jpeg_baseline.dcm")
    hand = _variant(dicom_dir, BodyPartExamined="HAND", SOPInstanceUID="1.2.3.4")
    accepted, decisions = check_study_headers([hand, chest], GateSpec())
    assert accepted == [chest]
    assert [d.accepted for d in decisions] == [False, True]


def test_thresholds_are_the_engines() -> None:
    spec = GateSpec(min_patient_age_years=None, modalities=("CR", "DX", "OT"))
    ds = Dataset()
    ds.Modality, ds.PatientAge, ds.Rows, ds.Columns = "OT", "002Y", 1024, 1024
    assert check_image_header(ds, spec).accepted
    with pytest.raises(ValueError, match="extra"):
        GateSpec.model_validate({"min_matrix": 10, "unknown": 1})


@pytest.mark.parametrize(
    ("text", "years"), [("045Y", 45.0), ("62", 62.0), ("018M", 1.5), ("", None), ("abc", None)]
)
def test_patient_age(text: str, years: float | None) -> None:
    ds = Dataset()
    ds.PatientAge = text
    assert patient_age_years(ds) == years
