"""CheXpert Plus (Chambon et al. 2024): CheXpert images with their full report sections.

Layout under ``root``: ``df_chexpert_plus_240401.csv`` (optionally gzipped), one row per image,
with ``path_to_image`` (e.g. ``train/patient42142/study5/view1_frontal.jpg``), ``frontal_lat``,
``ap_pa``, ``deid_patient_id``, ``patient_report_date_order``, ``section_findings``,
``section_impression`` and ``split`` (train/valid); the images under ``PNG/`` (the PNG release,
same relative paths with ``.png``) or at ``path_to_image`` itself. Images of one patient's
report (same ``deid_patient_id`` and ``patient_report_date_order``) form one study.

The release's own labels (CheXbert) are not read; pass ``label_reports=True`` to label the
reports with :mod:`engine.labeler`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from training.data.base import ChestXrayDataset, find_file, read_csv
from training.data.records import ImageRef, StudyRecord, normalize_split, normalize_view
from training.data.registry import register_dataset

logger = logging.getLogger(__name__)

CSV_NAMES = ("df_chexpert_plus_240401.csv", "df_chexpert_plus_240401.csv.gz")
_FIX = (
    "Download CheXpert Plus from https://stanfordaimi.azurewebsites.net/datasets/"
    "5158c524-d3ab-4e02-96e9-6ee9efc110a1 and put df_chexpert_plus_240401.csv in this folder"
)
_REQUIRED = (
    "path_to_image",
    "frontal_lat",
    "ap_pa",
    "deid_patient_id",
    "patient_report_date_order",
    "section_findings",
    "section_impression",
    "split",
)


@register_dataset("chexpert_plus")
class CheXpertPlusDataset(ChestXrayDataset):
    """CheXpert Plus studies: images with FINDINGS and IMPRESSION sections."""

    def _image_path(self, rel: str) -> Path:
        candidates = (
            self.root / "PNG" / Path(rel).with_suffix(".png"),
            self.root / rel,
            self.root / Path(rel).with_suffix(".png"),
        )
        for path in candidates:
            if path.exists():
                return path
        return candidates[0]

    def _load(self) -> list[StudyRecord]:
        path = find_file(self.root, CSV_NAMES, _FIX)
        rows = read_csv(path, _REQUIRED, _FIX)
        studies: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
        for row in rows:
            studies[(row["deid_patient_id"], row["patient_report_date_order"])].append(row)
        records = []
        for (patient, order), group in studies.items():
            first = group[0]
            images = []
            for row in group:
                lateral = row["frontal_lat"].strip().lower().startswith("lat")
                view = "LATERAL" if lateral else normalize_view(row["ap_pa"])
                images.append(ImageRef(self._image_path(row["path_to_image"]), view))
            sections = {
                name: " ".join(first[f"section_{name}"].split())
                for name in ("findings", "impression")
                if first[f"section_{name}"].strip()
            }
            records.append(
                StudyRecord(
                    dataset=self.name,
                    study_id=f"{patient}_{order}",
                    images=tuple(images),
                    sections={"en": sections} if sections else {},
                    findings={},
                    split=normalize_split(first["split"]),
                    patient_id=patient,
                )
            )
        return records
