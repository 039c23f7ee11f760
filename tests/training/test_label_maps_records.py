"""Label mapping tables and the record type's validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.base import hashed_split
from training.data.records import (
    Box,
    ImageRef,
    StudyRecord,
    normalize_split,
    normalize_view,
)
from training.label_maps import (
    CHEXPERT_TO_KEY,
    NIH_LABELS,
    mesh_sign_keys,
    mesh_to_keys,
    nih_to_key,
    padchest_to_key,
)


def test_mesh_terms() -> None:
    assert mesh_to_keys("normal") == {"no_finding"}
    assert mesh_to_keys("Opacity/lung/base/left/mild") == {"lung_opacity"}
    assert mesh_to_keys("Lung/hypoinflation/mild") == {"hypoinflation"}
    assert mesh_to_keys("Thoracic Vertebrae/degenerative/mild") == {"spondylosis"}
    assert mesh_to_keys("Technical Quality of Image Unsatisfactory ") == set()
    assert mesh_to_keys("Subcutaneous Emphysema/chest wall") == set()
    assert mesh_to_keys("Costophrenic Angle/bilateral/blunted") == {"pleural_effusion"}


def test_mesh_review_of_issue_12() -> None:
    # Calcification of the aorta is atheromatosis (the project's convention).
    assert mesh_to_keys("Calcinosis/aorta") == {"aortic_atheromatosis"}
    assert mesh_to_keys("Calcinosis/aorta, thoracic/mild") == {"aortic_atheromatosis"}
    assert mesh_to_keys("Calcinosis/lung/hilum/lymph nodes") == {"calcification"}
    # A blunted angle is an effusion unless the report denies one.
    assert mesh_to_keys("Costophrenic Angle/left/blunted", denied={"pleural_effusion"}) == set()
    assert mesh_to_keys("Sulcus/blunted") == {"pleural_effusion"}
    assert mesh_to_keys("Pleura/blunted", denied={"pneumothorax"}) == {"pleural_effusion"}
    assert mesh_sign_keys(["Cardiomegaly", "Costophrenic Angle/blunted"]) == {"pleural_effusion"}
    assert mesh_to_keys("Hydropneumothorax/right") == {"pneumothorax", "pleural_effusion"}
    assert mesh_to_keys("Diaphragm/bilateral/flattened") == {"hyperinflation"}
    assert mesh_to_keys("Arthritis/spine") == {"spondylosis"}
    assert mesh_to_keys("Arthritis/shoulder") == set()
    assert mesh_to_keys("Blister/lung/upper lobe/bilateral") == {"emphysema"}
    assert mesh_to_keys("Cavitation/lung/apex/right") == {"lung_lesion"}
    assert mesh_to_keys("Heart Failure/mild") == {"edema"}
    assert mesh_to_keys("Spinal Fusion/cervical vertebrae") == {"support_devices"}
    assert mesh_to_keys("Sutures/lung/upper lobe/left") == {"support_devices"}
    assert mesh_to_keys("Markings/bronchovascular/mild") == {"hypoinflation"}
    # A round opacity of the lung is a nodule; one over a rib is not.
    assert mesh_to_keys("Opacity/lung/upper lobe/right/round") == {"nodule", "lung_opacity"}
    assert mesh_to_keys("Density/lung/base/left/round/small") == {"nodule", "lung_opacity"}
    assert mesh_to_keys("Density/ribs/right/anterior/round") == {"lung_opacity"}
    assert mesh_to_keys("Opacity/lung/base/left") == {"lung_opacity"}
    assert mesh_to_keys("Hemothorax/left/small") == {"pleural_effusion"}
    assert mesh_to_keys("Hemopneumothorax/right") == {"pneumothorax", "pleural_effusion"}
    assert mesh_to_keys("Hernia, Diaphragmatic/small") == {"hernia"}
    # Heads as the annotations sometimes spell them.
    assert mesh_to_keys("Thoracic vertebrae/degenerative/mild") == {"spondylosis"}
    assert mesh_to_keys("Pulmonary  atelectasis/base") == {"atelectasis"}


def test_iu_blunted_angle_denied_by_the_report(tmp_path: Path) -> None:
    from training.data.iu_xray import IUXRayDataset

    folder = tmp_path / "ecgen-radiology"
    folder.mkdir()
    xml = (
        '<eCitation><uId id="CXR9"/><MedlineCitation><Article><Abstract>'
        '<AbstractText Label="FINDINGS">{text}</AbstractText></Abstract></Article>'
        '</MedlineCitation><MeSH><major>Costophrenic Angle/right/blunted</major></MeSH>'
        '<parentImage id="CXR9_1_IM-0009-1001"/></eCitation>'
    )
    (folder / "9.xml").write_text(xml.format(
        text="Blunting of the right costophrenic angle, likely pleural scarring. "
             "No pleural effusion."), "utf-8")
    (record,) = list(IUXRayDataset(tmp_path, layout="openi"))
    assert "pleural_effusion" not in record.findings
    (folder / "9.xml").write_text(xml.format(
        text="Blunting of the right costophrenic angle."), "utf-8")
    (record,) = list(IUXRayDataset(tmp_path, layout="openi"))
    assert record.findings == {"pleural_effusion": "present"}


def test_nih_chexpert_padchest() -> None:
    assert len(NIH_LABELS) == 14
    assert nih_to_key("Pleural_Thickening") == "pleural_thickening"
    assert nih_to_key("Effusion") == "pleural_effusion"
    assert len(CHEXPERT_TO_KEY) == 14
    assert padchest_to_key(" Pleural Effusion ") == "pleural_effusion"
    assert padchest_to_key("aortic elongation") == "aortic_elongation"
    assert padchest_to_key("unchanged") is None


@pytest.mark.parametrize(("label", "key"), [
    ("hypoexpansion", "hypoinflation"), ("volume loss", "atelectasis"),
    ("diaphragmatic eventration", "elevated_hemidiaphragm"), ("empyema", "pleural_effusion"),
    ("calcified pleural plaques", "pleural_other"), ("vertebral compression", "fracture"),
    ("heart insufficiency", "edema"), ("atypical pneumonia", "pneumonia"),
    ("abscess", "lung_lesion"), ("NSG tube", "support_devices"),
])
def test_padchest_review(label: str, key: str) -> None:
    assert padchest_to_key(label) == key


def test_padchest_map_names_no_label_padchest_lacks() -> None:
    assert padchest_to_key("alveolar edema") is None  # not a PadChest label


def test_record_validation() -> None:
    ok = StudyRecord("x", "s1", (ImageRef(Path("a.png"), "PA"),), {"en": {"findings": "ok"}},
                     {"cardiomegaly": "present"}, "train")
    assert ok.report("en") == "ok"
    assert ok.languages == ("en",)
    with pytest.raises(ValueError, match="split"):
        StudyRecord("x", "s1", (), {}, {}, "validate")
    with pytest.raises(ValueError, match=r"not in training\.findings"):
        StudyRecord("x", "s1", (), {}, {"covid": "present"}, "train")
    with pytest.raises(ValueError, match="unknown section"):
        StudyRecord("x", "s1", (), {"en": {"history": "x"}}, {}, "train")
    with pytest.raises(ValueError, match="view"):
        ImageRef(Path("a.png"), "OBLIQUE")
    with pytest.raises(ValueError, match="0 <= min < max <= 1"):
        Box("nodule", 0, 0.5, 0.5, 0.4, 0.6)
    box = Box.from_pixels("nodule", 0, (100, 200, 300, 1100), 1000, 1000)
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == (0.1, 0.2, 0.3, 1.0)


def test_normalizers_and_hashed_split() -> None:
    assert normalize_view("postero_anterior") == "PA"
    assert normalize_view("L") == "LATERAL"
    assert normalize_view(None) == "UNKNOWN"
    assert normalize_split("validate") == "val"
    with pytest.raises(ValueError, match="split"):
        normalize_split("holdout")
    splits = [hashed_split(f"patient{i}") for i in range(2000)]
    assert splits == [hashed_split(f"patient{i}") for i in range(2000)]  # stable
    assert 0.15 < splits.count("test") / 2000 < 0.25
    assert 0.06 < splits.count("val") / 2000 < 0.14
