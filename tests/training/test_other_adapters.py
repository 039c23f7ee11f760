"""MIMIC-CXR-JPG, CheXpert Plus, PadChest and PadChest-GR adapters on tiny layout copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.conftest import write_csv, write_png
from training.data import create_dataset, list_datasets
from training.exceptions import (
    DatasetFileNotFoundError,
    DatasetFormatError,
    UnknownDatasetError,
)

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough, rule out pneumonia

 FINDINGS:
 There is a small left pleural effusion. No pneumothorax.

 IMPRESSION:
 Small left pleural effusion.
"""

CHEXPERT_COLUMNS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                    "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity",
                    "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                    "Pneumothorax", "Support Devices"]


def _mimic_root(tmp_path: Path, with_report: bool = True) -> Path:
    root = tmp_path / "mimic-cxr-jpg"
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz",
              ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
               "ViewPosition", "Rows", "Columns"],
              [["d1", "10000032", "50414267", "CHEST (PA AND LAT)", "PA", "3056", "2544"],
               ["d2", "10000032", "50414267", "CHEST (PA AND LAT)", "LATERAL", "3056", "2544"]])
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz",
              ["dicom_id", "study_id", "subject_id", "split"],
              [["d1", "50414267", "10000032", "validate"], ["d2", "50414267", "10000032",
                                                           "validate"]])
    row = {c: "" for c in CHEXPERT_COLUMNS}
    row.update({"Pleural Effusion": "1.0", "Pneumothorax": "0.0", "Pneumonia": "-1.0"})
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id",
                                                         *CHEXPERT_COLUMNS],
              [["10000032", "50414267", *[row[c] for c in CHEXPERT_COLUMNS]]])
    study_dir = root / "files" / "p10" / "p10000032" / "s50414267"
    for d in ("d1", "d2"):
        write_png(study_dir / f"{d}.jpg")
    if with_report:
        (root / "files" / "p10" / "p10000032" / "s50414267.txt").write_text(MIMIC_REPORT, "utf-8")
    return root


def test_registry_lists_every_adapter() -> None:
    assert set(list_datasets()) >= {"iu_xray", "mimic_cxr", "chexpert_plus", "padchest",
                                    "padchest_gr", "nih"}
    with pytest.raises(UnknownDatasetError, match="use one of"):
        create_dataset("no_such_dataset", ".")


def test_mimic_cxr_jpg(tmp_path: Path) -> None:
    ds = create_dataset("mimic_cxr", _mimic_root(tmp_path), split="val")
    assert len(ds) == 1
    rec = ds[0]
    assert rec.study_id == "s50414267"
    assert [i.view for i in rec.images] == ["PA", "LATERAL"]
    assert all(i.path.exists() for i in rec.images)
    assert rec.sections["en"] == {
        "findings": "There is a small left pleural effusion. No pneumothorax.",
        "impression": "Small left pleural effusion.",
    }
    assert rec.findings == {"pleural_effusion": "present", "pneumothorax": "absent",
                            "pneumonia": "uncertain"}


def test_mimic_missing_report_names_it(tmp_path: Path) -> None:
    root = _mimic_root(tmp_path, with_report=False)
    with pytest.raises(DatasetFormatError, match=r"s50414267\.txt.*mimic-cxr-reports\.zip"):
        create_dataset("mimic_cxr", root)


def test_mimic_missing_metadata_names_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetFileNotFoundError, match=r"mimic-cxr-2\.0\.0-metadata"):
        create_dataset("mimic_cxr", tmp_path)


def test_chexpert_plus(tmp_path: Path) -> None:
    root = tmp_path / "chexpert_plus"
    header = ["path_to_image", "path_to_dcm", "frontal_lat", "ap_pa", "deid_patient_id",
              "patient_report_date_order", "report", "section_findings", "section_impression",
              "split"]
    write_csv(root / "df_chexpert_plus_240401.csv", header, [
        ["train/patient00001/study1/view1_frontal.jpg", "", "Frontal", "AP", "patient00001", "1",
         "", "Mild cardiomegaly. No effusion.", "Cardiomegaly.", "train"],
        ["train/patient00001/study1/view2_lateral.jpg", "", "Lateral", "", "patient00001", "1",
         "", "Mild cardiomegaly. No effusion.", "Cardiomegaly.", "train"],
        ["valid/patient00002/study1/view1_frontal.jpg", "", "Frontal", "PA", "patient00002", "1",
         "", "", "No acute disease.", "valid"],
    ])
    write_png(root / "PNG" / "train" / "patient00001" / "study1" / "view1_frontal.png")
    ds = create_dataset("chexpert_plus", root, label_reports=True)
    recs = ds.by_id()
    first = recs["patient00001_1"]
    assert [i.view for i in first.images] == ["AP", "LATERAL"]
    assert first.images[0].path.exists()
    assert first.sections["en"]["impression"] == "Cardiomegaly."
    assert first.findings["cardiomegaly"] == "present"
    assert first.findings["pleural_effusion"] == "absent"
    assert recs["patient00002_1"].split == "val"
    with pytest.raises(DatasetFormatError, match="section_findings"):
        write_csv(root / "df_chexpert_plus_240401.csv", ["path_to_image"], [["x.jpg"]])
        create_dataset("chexpert_plus", root)


def test_padchest(tmp_path: Path) -> None:
    root = tmp_path / "padchest"
    header = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "Projection",
              "MethodProjection", "Report", "MethodLabel", "Labels", "Localizations"]
    write_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", header, [
        ["a_1.png", "0", "20150101", "s1", "p1", "PA", "Manual review",
         "cardiomegalia . derrame pleural derecho .", "Physician",
         "['cardiomegaly', 'pleural effusion']", "[]"],
        ["a_2.png", "0", "20150101", "s1", "p1", "L", "Manual review",
         "cardiomegalia . derrame pleural derecho .", "Physician",
         "['cardiomegaly', 'pleural effusion']", "[]"],
        ["b_1.png", "1", "20150102", "s2", "p2", "PA", "Manual review",
         "sin hallazgos patologicos .", "Physician", "['normal']", "[]"],
    ])
    write_png(root / "0" / "a_1.png")
    ds = create_dataset("padchest", root)
    recs = ds.by_id()
    s1 = recs["s1"]
    assert s1.findings == {"cardiomegaly": "present", "pleural_effusion": "present"}
    assert [i.view for i in s1.images] == ["PA", "LATERAL"]
    assert s1.images[0].path == root / "0" / "a_1.png"
    assert s1.report("es") == "cardiomegalia . derrame pleural derecho ."
    assert recs["s2"].findings == {"no_finding": "present"}


def test_padchest_bad_labels_cell(tmp_path: Path) -> None:
    root = tmp_path / "padchest"
    header = ["ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "Report", "Labels"]
    write_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", header,
              [["a.png", "0", "s1", "p1", "PA", "normal", "['normal'"]])
    with pytest.raises(DatasetFormatError, match="not a list literal"):
        create_dataset("padchest", root)


def test_padchest_gr(tmp_path: Path) -> None:
    root = tmp_path / "padchest_gr"
    write_csv(root / "master_table.csv", ["ImageID", "StudyID", "PatientID", "split"],
              [["img1.png", "s1", "p1", "test"], ["img2.png", "s2", "p2", "train"]])
    reports = [
        {"ImageID": "img1.png", "findings": [
            {"sentence_es": "Derrame pleural derecho", "sentence_en": "Right pleural effusion",
             "abnormal": True, "boxes": [[0.6, 0.5, 0.9, 0.8]], "labels": ["pleural effusion"]},
            {"sentence_es": "Cardiomegalia", "sentence_en": "Cardiomegaly", "abnormal": True,
             "boxes": [[50, 100, 150, 200]], "labels": ["cardiomegaly"]},
        ]},
        {"ImageID": "img2.png", "findings": [
            {"sentence_es": "Sin hallazgos patológicos", "sentence_en": "No pathological findings",
             "abnormal": False, "boxes": [], "labels": ["normal"]},
        ]},
    ]
    (root / "grounded_reports_20240819.json").write_text(json.dumps(reports), "utf-8")
    write_png(root / "images_grounding" / "img1.png", size=(200, 400))
    ds = create_dataset("padchest_gr", root)
    rec = ds.by_id()["img1"]
    assert rec.split == "test"
    assert rec.report("es") == "Derrame pleural derecho. Cardiomegalia."
    assert rec.report("en") == "Right pleural effusion. Cardiomegaly."
    assert rec.findings == {"pleural_effusion": "present", "cardiomegaly": "present"}
    boxes = {b.finding: b for b in rec.boxes}
    assert boxes["pleural_effusion"].x_min == pytest.approx(0.6)
    # Pixel boxes are scaled with the image's own size (200 x 400).
    assert (boxes["cardiomegaly"].x_min, boxes["cardiomegaly"].y_max) == (0.25, 0.5)
    assert ds.by_id()["img2"].findings == {"no_finding": "present"}
    assert create_dataset("padchest_gr", root, split="train")[0].study_id == "img2"


def test_padchest_gr_missing_reports(tmp_path: Path) -> None:
    write_csv(tmp_path / "master_table.csv", ["ImageID", "split"], [["a.png", "test"]])
    with pytest.raises(DatasetFileNotFoundError, match="grounded_reports"):
        create_dataset("padchest_gr", tmp_path)
