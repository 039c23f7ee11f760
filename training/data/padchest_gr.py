"""PadChest-GR (Castro et al. 2024): grounded reports, each sentence in Spanish and English.

Layout under ``root`` (as released by BIMCV): ``master_table.csv`` (one row per image, with
``ImageID`` and ``split`` in train/validation/test), the grounded reports
``grounded_reports_<date>.json`` (a list of ``{"ImageID": ..., "findings": [{"sentence_es",
"sentence_en", "abnormal", "boxes": [[x_min, y_min, x_max, y_max], ...], "labels": [...]}]}``)
and the PNG images in ``images_grounding/`` (or ``PadChest_GR/``, ``images/``). Boxes are
fractions of the image size; boxes given in pixels are converted with the image's size, which
then has to be readable.

Each image is one study. Its report is the sentences joined, per language (stored as the
``findings`` section); its findings are the sentences' labels mapped through
:data:`training.label_maps.PADCHEST_TO_KEY`, present where the sentence is abnormal.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from training.data.base import ChestXrayDataset, find_file, read_csv
from training.data.records import Box, ImageRef, Presence, StudyRecord, normalize_split
from training.data.registry import register_dataset
from training.exceptions import DatasetFileNotFoundError, DatasetFormatError
from training.label_maps import padchest_to_key

logger = logging.getLogger(__name__)

IMAGE_DIRS = ("images_grounding", "PadChest_GR", "images")
_FIX = (
    "Download PadChest-GR from https://bimcv.cipf.es/bimcv-projects/padchest-gr/ and put "
    "master_table.csv and grounded_reports_<date>.json in this folder"
)


@register_dataset("padchest_gr")
class PadChestGRDataset(ChestXrayDataset):
    """PadChest-GR studies: bilingual grounded sentences with boxes."""

    def _reports_path(self) -> Path:
        candidates = sorted(self.root.glob("grounded_reports*.json"))
        if not candidates:
            raise DatasetFileNotFoundError(self.root / "grounded_reports_20240819.json", _FIX)
        return candidates[-1]  # the newest release when several are present

    def _image_dir(self) -> Path:
        for name in IMAGE_DIRS:
            if (self.root / name).is_dir():
                return self.root / name
        return self.root / IMAGE_DIRS[0]

    def _load(self) -> list[StudyRecord]:
        master = find_file(self.root, ("master_table.csv", "master_table.csv.gz"), _FIX)
        split_of = {
            row["ImageID"]: normalize_split(row["split"])
            for row in read_csv(master, ("ImageID", "split"), _FIX)
        }
        reports_path = self._reports_path()
        try:
            entries = json.loads(reports_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(reports_path, f"not valid JSON ({exc})", _FIX) from exc
        if not isinstance(entries, list):
            raise DatasetFormatError(reports_path, "expected a list of reports", _FIX)
        image_dir = self._image_dir()
        records = []
        for entry in entries:
            if not isinstance(entry, dict) or "ImageID" not in entry:
                raise DatasetFormatError(reports_path, "a report has no 'ImageID'", _FIX)
            image_id = str(entry["ImageID"])
            if image_id not in split_of:
                raise DatasetFormatError(
                    master, f"ImageID {image_id} of {reports_path.name} is not listed", _FIX
                )
            split = split_of[image_id]
            records.append(self._record(entry, image_id, split, image_dir, reports_path))
        return records

    def _record(
        self,
        entry: dict[str, Any],
        image_id: str,
        split: str,
        image_dir: Path,
        reports_path: Path,
    ) -> StudyRecord:
        image_path = image_dir / image_id
        sentences: dict[str, list[str]] = {"es": [], "en": []}
        findings: dict[str, Presence] = {}
        boxes: list[Box] = []
        size: tuple[int, int] | None = None
        for item in entry.get("findings", []):
            for lang in ("es", "en"):
                text = str(item.get(f"sentence_{lang}") or "").strip()
                if text:
                    sentences[lang].append(text if text.endswith(".") else text + ".")
            keys = [k for k in (padchest_to_key(lab) for lab in item.get("labels", [])) if k]
            abnormal = bool(item.get("abnormal", True))
            for key in keys:
                if key == "no_finding" or not abnormal:
                    findings.setdefault(key, "present" if key == "no_finding" else "absent")
                else:
                    findings[key] = "present"
            for raw in item.get("boxes", []) or []:
                if not isinstance(raw, list | tuple) or len(raw) != 4:
                    raise DatasetFormatError(
                        reports_path, f"{image_id}: a box is not [x_min, y_min, x_max, y_max]",
                        _FIX,
                    )
                x0, y0, x1, y1 = (float(v) for v in raw)
                if max(x0, y0, x1, y1) > 1.0 and size is None:
                    size = self._image_size(image_path)
                width, height = size if max(x0, y0, x1, y1) > 1.0 and size else (1.0, 1.0)
                for key in keys:
                    if key != "no_finding" and x1 > x0 and y1 > y0:
                        boxes.append(
                            Box.from_pixels(key, 0, (x0, y0, x1, y1), width, height,
                                            ", ".join(item.get("labels", [])))
                        )
        if any(p == "present" for k, p in findings.items() if k != "no_finding"):
            findings.pop("no_finding", None)
        sections = {
            lang: {"findings": " ".join(s)} for lang, s in sentences.items() if s
        }
        return StudyRecord(
            dataset=self.name,
            study_id=Path(image_id).stem,
            images=(ImageRef(image_path),),
            sections=sections,
            findings=findings,
            split=split,
            boxes=tuple(boxes),
            meta={"image_id": image_id},
        )

    def _image_size(self, path: Path) -> tuple[int, int]:
        if not path.exists():
            raise DatasetFileNotFoundError(
                path, "Boxes are in pixels, so the image is needed to scale them; "
                "put the PadChest-GR images in images_grounding/"
            )
        from PIL import Image  # only needed for pixel boxes

        with Image.open(path) as im:
            return im.size
