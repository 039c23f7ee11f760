"""PadChest (Bustos et al. 2020): Spanish reports with radiological labels, from Alicante.

Layout under ``root``: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (optionally
gzipped), one row per image, with ``ImageID``, ``ImageDir`` (the number of the zip the image
came in), ``StudyID``, ``PatientID``, ``Projection`` (PA, AP, AP_horizontal, L, ...),
``Report`` (the Spanish report, preprocessed by the authors) and ``Labels`` (a Python list
such as ``['pleural effusion', 'cardiomegaly']``); the 16-bit PNG images at
``<ImageDir>/<ImageID>`` (the zips extracted as numbered folders) or ``images/<ImageID>``.
The PNGs keep the DICOM stored values in a 16-bit container; when the CSV has the
``BitsStored_DICOM`` column (the published CSV does) each image declares that depth
(``ImageRef.bits_stored``), so 12-bit images are not read as 16-bit ones. Images of one
``StudyID`` form one study; labels map through
:data:`training.label_maps.PADCHEST_TO_KEY`. PadChest publishes no split: it is hashed from
``PatientID``.
"""

from __future__ import annotations

import ast
import logging
from collections import defaultdict
from pathlib import Path

from training.data.base import ChestXrayDataset, find_file, hashed_split, read_csv
from training.data.records import ImageRef, Presence, StudyRecord, normalize_view
from training.data.registry import register_dataset
from training.exceptions import DatasetFormatError
from training.label_maps import padchest_to_key

logger = logging.getLogger(__name__)

CSV_NAMES = (
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
)
_FIX = (
    "Download PadChest from https://bimcv.cipf.es/bimcv-projects/padchest/ and put "
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv in this folder"
)
_REQUIRED = ("ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "Report", "Labels")


def declared_bits(raw: str | None) -> int | None:
    """``BitsStored_DICOM`` as an int (8 to 16), None when absent or not a plausible depth."""
    try:
        bits = int(float(raw or ""))
    except ValueError:
        return None
    return bits if 8 <= bits <= 16 else None


def parse_label_list(raw: str, path: Path, image_id: str) -> list[str]:
    """The labels of a PadChest ``Labels`` cell (a Python list literal; blank for none)."""
    raw = raw.strip()
    if not raw or raw.lower() == "nan":
        return []
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as exc:
        raise DatasetFormatError(
            path, f"Labels of {image_id} is not a list literal: {raw[:60]!r}", _FIX
        ) from exc
    if not isinstance(value, list):
        raise DatasetFormatError(path, f"Labels of {image_id} is not a list", _FIX)
    return [str(v).strip() for v in value if str(v).strip()]


def labels_to_findings(labels: list[str]) -> dict[str, Presence]:
    """PadChest labels as findings (all present; ``normal`` alone gives ``no_finding``)."""
    out: dict[str, Presence] = {}
    for label in labels:
        key = padchest_to_key(label)
        if key is not None:
            out[key] = "present"
    if len(out) > 1:
        out.pop("no_finding", None)
    return out


@register_dataset("padchest")
class PadChestDataset(ChestXrayDataset):
    """PadChest studies with their Spanish report and mapped labels."""

    def _image_path(self, image_dir: str, image_id: str) -> Path:
        numbered = self.root / image_dir.strip() / image_id
        if numbered.exists():
            return numbered
        flat = self.root / "images" / image_id
        return flat if flat.exists() else numbered

    def _load(self) -> list[StudyRecord]:
        path = find_file(self.root, CSV_NAMES, _FIX)
        rows = read_csv(path, _REQUIRED, _FIX)
        studies: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in rows:
            studies[row["StudyID"]].append(row)
        records = []
        for study_id, group in studies.items():
            first = group[0]
            labels: list[str] = []
            for row in group:
                labels.extend(parse_label_list(row["Labels"], path, row["ImageID"]))
            report = " ".join(first["Report"].split())
            records.append(
                StudyRecord(
                    dataset=self.name,
                    study_id=study_id,
                    images=tuple(
                        ImageRef(
                            self._image_path(row["ImageDir"], row["ImageID"]),
                            normalize_view(row["Projection"]),
                            bits_stored=declared_bits(row.get("BitsStored_DICOM")),
                        )
                        for row in group
                    ),
                    sections={"es": {"findings": report}} if report else {},
                    findings=labels_to_findings(labels),
                    split=hashed_split(first["PatientID"]),
                    patient_id=first["PatientID"],
                    meta={"labels": "; ".join(dict.fromkeys(labels))},
                )
            )
        return records
