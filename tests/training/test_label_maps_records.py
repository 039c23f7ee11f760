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


def test_nih_chexpert_padchest() -> None:
    assert len(NIH_LABELS) == 14
    assert nih_to_key("Pleural_Thickening") == "pleural_thickening"
    assert nih_to_key("Effusion") == "pleural_effusion"
    assert len(CHEXPERT_TO_KEY) == 14
    assert padchest_to_key(" Pleural Effusion ") == "pleural_effusion"
    assert padchest_to_key("aortic elongation") == "aortic_elongation"
    assert padchest_to_key("unchanged") is None


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
