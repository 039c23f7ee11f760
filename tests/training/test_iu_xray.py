"""IU X-Ray adapter: both published layouts in tiny fixtures, and the real shared reports."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from training.data import create_dataset
from training.data.iu_xray import IUXRayDataset, metadata_image_id, r2gen_id
from training.exceptions import DatasetFileNotFoundError, DatasetFormatError


def test_openi_folder_layout(openi_root: Path) -> None:
    ds = create_dataset("iu_xray", openi_root)
    assert ds.layout == "openi"  # type: ignore[attr-defined]
    assert len(ds) == 3
    rec = ds.by_id()["CXR2_IM-0002"]
    assert rec.sections["en"]["findings"] == "Cardiomegaly. Small right pleural effusion."
    assert rec.sections["en"]["impression"] == "Cardiomegaly with effusion."
    assert "indication" not in rec.sections["en"]
    assert rec.findings == {"cardiomegaly": "present", "pleural_effusion": "present"}
    assert [i.view for i in rec.images] == ["PA", "LL"]
    assert all(i.path.exists() for i in rec.images)
    assert ds.by_id()["CXR1_IM-0001"].findings == {"no_finding": "present"}
    assert ds.by_id()["CXR3_IM-0003"].findings == {"granuloma": "present"}


def test_openi_tgz_is_read_in_place(openi_tgz_root: Path) -> None:
    ds = IUXRayDataset(openi_tgz_root)
    assert sorted(r.study_id for r in ds) == ["CXR1_IM-0001", "CXR2_IM-0002", "CXR3_IM-0003"]
    assert not (openi_tgz_root / "ecgen-radiology").exists()


def test_r2gen_layout(r2gen_root: Path) -> None:
    ds = create_dataset("iu_xray", r2gen_root, split="val")
    assert [r.study_id for r in ds] == ["CXR2_IM-0002"]
    rec = ds[0]
    assert rec.images[0].path == r2gen_root / "images" / "CXR2_IM-0002" / "0.png"
    assert rec.images[0].path.exists()
    assert rec.findings == {}
    labeled = create_dataset("iu_xray", r2gen_root, split="val", label_reports=True)
    assert labeled[0].findings["cardiomegaly"] == "present"
    assert labeled[0].meta["findings_source"] == "labeler:en"


def test_missing_reports_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetFileNotFoundError) as info:
        IUXRayDataset(tmp_path)
    assert "NLMCXR_reports.tgz" in str(info.value)
    assert "openi.nlm.nih.gov" in str(info.value)


def test_bad_annotation_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "annotation.json").write_text(json.dumps({"rows": []}), "utf-8")
    with pytest.raises(DatasetFormatError, match=r"annotation\.json.*'train'"):
        IUXRayDataset(tmp_path, layout="r2gen")


def test_id_helpers() -> None:
    assert r2gen_id("CXR1_1_IM-0001-3001") == "CXR1_1_IM-0001"
    assert metadata_image_id("CXR1_1_IM-0001-3001") == "CXR1_IM-0001-3001"
    assert metadata_image_id("CXR10_IM-0002-1001") == "CXR10_IM-0002-1001"


def test_real_reports_with_r2gen_split(shared_data: Path) -> None:
    ds = IUXRayDataset(shared_data / "iu_xray")
    assert ds.layout == "openi"
    assert Counter(r.split for r in ds) == {"train": 2069, "val": 296, "test": 590}
    rec = ds.by_id()["CXR1_1_IM-0001"]
    assert rec.findings == {"no_finding": "present"}
    assert rec.report("en").startswith("The cardiac silhouette and mediastinum size")
    assert rec.images[0].view == "PA"  # joined through the DICOM metadata file
    every = IUXRayDataset(shared_data / "iu_xray", include_unsplit=True)
    assert len(every) == 3955 - 104 + 104  # all reports, with or without images
    # The R2Gen test split read from its annotation agrees with the OpenI reports.
    r2 = IUXRayDataset(shared_data / "iu_xray", layout="r2gen", split="test")
    openi_test = IUXRayDataset(shared_data / "iu_xray", split="test").by_id()
    assert len(r2) == 590
    for rec in list(r2)[:50]:
        assert rec.sections["en"]["findings"] == openi_test[rec.study_id].sections["en"][
            "findings"
        ]
