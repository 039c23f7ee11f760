"""NIH ChestX-ray14 adapter: a tiny copy of the release layout, and the real shared images."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.training.conftest import write_csv, write_png
from training.data import create_dataset
from training.data.nih import NIHChestXray14Dataset
from training.exceptions import DatasetFileNotFoundError, DatasetFormatError

ENTRY_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
                "OriginalImagePixelSpacing[x", "y]"]


def _nih_root(tmp_path: Path, labels: str = "Effusion|Mass") -> Path:
    root = tmp_path / "nih"
    write_csv(root / "Data_Entry_2017_v2020.csv", ENTRY_HEADER, [
        ["00000001_000.png", "No Finding", "0", "1", "57", "M", "PA", "2682", "2749", "0.14",
         "0.14"],
        ["00000002_000.png", labels, "0", "2", "60", "F", "AP", "2500", "2048", "0.17", "0.17"],
        ["00000003_000.png", "Hernia", "0", "3", "70", "F", "PA", "2500", "2048", "0.17", "0.17"],
    ])
    # The real header: "Bbox [x,y,w,h]" unquoted, then empty columns.
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000002_000.png,Effusion,512.0,256.0,256.0,128.0\n"
        "00000002_000.png,Mass,0,0,102.4,102.4\n",
        "utf-8",
    )
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000003_000.png\n", "utf-8")
    (root / "test_list.txt").write_text("00000002_000.png\n", "utf-8")
    for name in ("00000001_000", "00000002_000"):
        write_png(root / "images" / f"{name}.png")
    return root


def test_release_layout(tmp_path: Path) -> None:
    root = _nih_root(tmp_path)
    ds = create_dataset("nih", root)
    assert sorted(r.study_id for r in ds) == ["00000001_000", "00000002_000"]  # image 3 missing
    rec = ds.by_id()["00000002_000"]
    assert rec.split == "test"
    assert rec.images[0].view == "AP"
    assert rec.findings["pleural_effusion"] == "present"
    assert rec.findings["mass"] == "present"
    assert rec.findings["pneumonia"] == "absent"
    assert "no_finding" not in rec.findings
    effusion = next(b for b in rec.boxes if b.finding == "pleural_effusion")
    assert (effusion.x_min, effusion.y_min, effusion.x_max, effusion.y_max) == (
        0.5, 0.25, 0.75, 0.375
    )
    assert ds.by_id()["00000001_000"].findings["no_finding"] == "present"
    assert ds.by_id()["00000001_000"].split in ("train", "val")
    every = NIHChestXray14Dataset(root, require_images=False)
    assert len(every) == 3


def test_missing_label_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "nih").mkdir()
    with pytest.raises(DatasetFileNotFoundError, match=r"Data_Entry_2017_v2020\.csv\.gz.*nihcc"):
        create_dataset("nih", tmp_path / "nih")


def test_unknown_label_is_an_error(tmp_path: Path) -> None:
    root = _nih_root(tmp_path, labels="Effusion|Covid")
    with pytest.raises(DatasetFormatError, match="Covid"):
        create_dataset("nih", root)


def test_real_shared_images(shared_data: Path) -> None:
    ds = create_dataset("nih", shared_data / "nih")
    assert len(ds) == 848
    assert all(r.images[0].path.exists() for r in ds)
    counts = Counter(k for r in ds for k, p in r.findings.items() if p == "present")
    assert 350 < counts["no_finding"] < 500  # "about half No Finding"
    assert counts["pneumonia"] > 50
    boxed = [r for r in ds if r.boxes]
    assert boxed, "some of the shared images have radiologist boxes"
    for rec in boxed:
        for box in rec.boxes:
            assert rec.findings[box.finding] == "present"
    # The same patient never straddles two splits.
    by_patient: dict[str, set[str]] = {}
    for rec in ds:
        by_patient.setdefault(rec.patient_id or "", set()).add(rec.split)
    assert all(len(s) == 1 for s in by_patient.values())
