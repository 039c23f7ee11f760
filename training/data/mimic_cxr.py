"""MIMIC-CXR-JPG (Johnson et al. 2019, PhysioNet) with the MIMIC-CXR free-text reports.

Layout of MIMIC-CXR-JPG 2.x under ``root``: ``mimic-cxr-2.0.0-metadata.csv(.gz)`` (``dicom_id``,
``subject_id``, ``study_id``, ``ViewPosition``), ``mimic-cxr-2.0.0-split.csv(.gz)`` (``dicom_id``,
``study_id``, ``subject_id``, ``split`` in train/validate/test), optionally
``mimic-cxr-2.0.0-chexpert.csv(.gz)`` (``subject_id``, ``study_id`` and the 14 CheXpert columns
with 1.0 positive, 0.0 negative, -1.0 uncertain, blank unmentioned) and the images at
``files/p<first two digits of subject>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.

The reports come from MIMIC-CXR (``mimic-cxr-reports.zip`` extracted): one text file per study
at ``files/p10/p10000032/s50414267.txt`` under ``reports_root`` (default: ``root``). Their
FINDINGS and IMPRESSION sections are cut out by :func:`engine.labeler.sections.split_sections`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from engine.labeler.sections import split_sections
from training.data.base import ChestXrayDataset, find_file, read_csv
from training.data.records import ImageRef, Presence, StudyRecord, normalize_split, normalize_view
from training.data.registry import register_dataset
from training.exceptions import DatasetFormatError
from training.label_maps import CHEXPERT_TO_KEY

logger = logging.getLogger(__name__)

PREFIX = "mimic-cxr-2.0.0"
_FIX = (
    "Download MIMIC-CXR-JPG from https://physionet.org/content/mimic-cxr-jpg/ and pass its "
    "top folder (the one holding mimic-cxr-2.0.0-metadata.csv.gz and files/)"
)
_FIX_REPORTS = (
    "Extract mimic-cxr-reports.zip from https://physionet.org/content/mimic-cxr/ so that "
    "files/pXX/pSUBJECT/sSTUDY.txt exist, and pass that folder as reports_root"
)

CHEXPERT_VALUES: dict[str, Presence] = {"1.0": "present", "0.0": "absent", "-1.0": "uncertain"}


def chexpert_row_to_findings(row: dict[str, str]) -> dict[str, Presence]:
    """The findings of one CheXpert-style label row (MIMIC-CXR-JPG, CheXpert)."""
    out: dict[str, Presence] = {}
    for column, key in CHEXPERT_TO_KEY.items():
        value = (row.get(column) or "").strip()
        if value in ("1", "0", "-1"):
            value += ".0"
        if value in CHEXPERT_VALUES:
            out[key] = CHEXPERT_VALUES[value]
    return out


@register_dataset("mimic_cxr")
class MIMICCXRJPGDataset(ChestXrayDataset):
    """MIMIC-CXR-JPG studies with their report sections and CheXpert labels."""

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        reports_root: str | Path | None = None,
        require_reports: bool = True,
        label_reports: bool = False,
    ) -> None:
        self.reports_root = Path(reports_root) if reports_root is not None else None
        self.require_reports = require_reports
        super().__init__(root, split, label_reports=label_reports)

    def _csv(self, stem: str) -> Path:
        return find_file(self.root, (f"{PREFIX}-{stem}.csv.gz", f"{PREFIX}-{stem}.csv"), _FIX)

    def _load(self) -> list[StudyRecord]:
        meta_rows = read_csv(
            self._csv("metadata"), ("dicom_id", "subject_id", "study_id", "ViewPosition"), _FIX
        )
        split_path = self._csv("split")
        split_rows = read_csv(split_path, ("dicom_id", "study_id", "split"), _FIX)
        split_of = {row["dicom_id"]: normalize_split(row["split"]) for row in split_rows}
        labels: dict[str, dict[str, Presence]] = {}
        try:
            label_path = self._csv("chexpert")
        except FileNotFoundError:
            label_path = None
        if label_path is not None:
            for row in read_csv(label_path, ("subject_id", "study_id"), _FIX):
                labels[row["study_id"]] = chexpert_row_to_findings(row)

        images: dict[tuple[str, str], list[ImageRef]] = defaultdict(list)
        splits: dict[str, set[str]] = defaultdict(set)
        for row in meta_rows:
            subject, study, dicom = row["subject_id"], row["study_id"], row["dicom_id"]
            if dicom not in split_of:
                raise DatasetFormatError(
                    split_path, f"dicom_id {dicom} of the metadata has no split", _FIX
                )
            path = self.root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            images[(subject, study)].append(
                ImageRef(path / f"{dicom}.jpg", normalize_view(row["ViewPosition"]))
            )
            splits[study].add(split_of[dicom])

        reports_root = self.reports_root or self.root
        records = []
        for (subject, study), refs in images.items():
            folder = reports_root / "files" / f"p{subject[:2]}" / f"p{subject}"
            report_path = folder / f"s{study}.txt"
            if report_path.exists():
                sections = split_sections(report_path.read_text(encoding="utf-8"), "en")
                kept = {k: v for k, v in sections.items() if k in ("findings", "impression") and v}
            elif self.require_reports:
                raise DatasetFormatError(report_path, "report of a listed study is missing",
                                         _FIX_REPORTS)
            else:
                kept = {}
            study_splits = splits[study]
            # A study's images share one split in the official file; be strict if not.
            if len(study_splits) != 1:
                raise DatasetFormatError(split_path, f"study {study} spans {study_splits}", _FIX)
            records.append(
                StudyRecord(
                    dataset=self.name,
                    study_id=f"s{study}",
                    images=tuple(refs),
                    sections={"en": kept} if kept else {},
                    findings=labels.get(study, {}),
                    split=next(iter(study_splits)),
                    patient_id=subject,
                )
            )
        return records
