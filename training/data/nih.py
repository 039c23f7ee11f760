"""NIH ChestX-ray14 (Wang et al. 2017): image-level labels and radiologist boxes, no reports.

Layout (as released by the NIH Clinical Center): ``Data_Entry_2017_v2020.csv`` (or
``Data_Entry_2017.csv``, either optionally gzipped) with ``Image Index``, ``Finding Labels``
(``|``-separated), ``Patient ID``, ``View Position`` and ``OriginalImage[Width,Height]``;
``BBox_List_2017.csv`` with ``Image Index``, ``Finding Label`` and ``Bbox [x,y,w,h]`` in pixels
of the original image; the images under ``images/`` (or ``images_*/``, e.g. ``images_512/``),
PNG as released or any downscaled copy with the same stem (``.jpg``). ``train_val_list.txt`` and
``test_list.txt`` give the official split when present; otherwise the split is hashed from the
patient id (validation is carved out of the official train_val list the same way).

Each image is one study. Only images found on disk are kept unless ``require_images=False``.
The 14 labels are exhaustive for each image, so a label not listed is recorded ``absent``.
Boxes were drawn on the 1024x1024 release images; they are stored as fractions of the image.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from training.data.base import ChestXrayDataset, find_file, hashed_split, read_csv
from training.data.records import Box, ImageRef, Presence, StudyRecord, normalize_view
from training.data.registry import register_dataset
from training.exceptions import DatasetFormatError
from training.label_maps import NIH_LABELS, nih_to_key

logger = logging.getLogger(__name__)

DATA_ENTRY_NAMES = (
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017.csv.gz",
    "Data_Entry_2017.csv",
)
BBOX_NAMES = ("BBox_List_2017.csv.gz", "BBox_List_2017.csv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_FIX = (
    "Download the ChestX-ray14 label files from https://nihcc.app.box.com/v/ChestXray-NIHCC "
    "and put Data_Entry_2017_v2020.csv (gzipped or not) in this folder"
)


@register_dataset("nih")
class NIHChestXray14Dataset(ChestXrayDataset):
    """ChestX-ray14 images with their 14 labels and the radiologists' boxes."""

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        images_dir: str | Path | None = None,
        require_images: bool = True,
        label_reports: bool = False,
    ) -> None:
        self.images_dir = Path(images_dir) if images_dir is not None else None
        self.require_images = require_images
        super().__init__(root, split, label_reports=label_reports)

    def _image_dir(self) -> Path:
        if self.images_dir is not None:
            return self.images_dir
        if (self.root / "images").is_dir():
            return self.root / "images"
        candidates = sorted(p for p in self.root.glob("images_*") if p.is_dir())
        return candidates[0] if candidates else self.root / "images"

    def _image_files(self, folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}

    def _official_split(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, split in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
            path = self.root / name
            if path.exists():
                for line in path.read_text(encoding="utf-8").split():
                    out[line.strip()] = split
        return out

    def _load(self) -> list[StudyRecord]:
        entry_path = find_file(self.root, DATA_ENTRY_NAMES, _FIX)
        rows = read_csv(
            entry_path, ("Image Index", "Finding Labels", "Patient ID", "View Position"), _FIX
        )
        folder = self._image_dir()
        files = self._image_files(folder)
        if self.require_images and not files:
            logger.warning("NIH: no images in %s; no study is kept (require_images=True)", folder)
        boxes = self._boxes()
        official = self._official_split()
        records = []
        for row in rows:
            index = row["Image Index"]
            stem = Path(index).stem
            path = files.get(stem)
            if path is None:
                if self.require_images:
                    continue
                path = folder / index
            labels = [lab.strip() for lab in row["Finding Labels"].split("|") if lab.strip()]
            findings: dict[str, Presence] = {}
            if labels == ["No Finding"]:
                findings["no_finding"] = "present"
            for lab in NIH_LABELS:
                key = nih_to_key(lab)
                if key is not None:
                    findings[key] = "present" if lab in labels else "absent"
            unknown = [lab for lab in labels if nih_to_key(lab) is None]
            if unknown:
                raise DatasetFormatError(
                    entry_path, f"row {index} has unknown label(s) {unknown}", _FIX
                )
            patient = row["Patient ID"].strip()
            if index in official:
                split = official[index]
                if split == "train" and hashed_split(patient, val=0.1, test=0.0) == "val":
                    split = "val"
            else:
                split = hashed_split(patient)
            records.append(
                StudyRecord(
                    dataset=self.name,
                    study_id=stem,
                    images=(ImageRef(path, normalize_view(row["View Position"])),),
                    sections={},
                    findings=findings,
                    split=split,
                    boxes=tuple(boxes.get(index, ())),
                    patient_id=patient,
                    meta={"image_index": index},
                )
            )
        return records

    def _boxes(self) -> dict[str, list[Box]]:
        out: dict[str, list[Box]] = defaultdict(list)
        try:
            path = find_file(self.root, BBOX_NAMES, _FIX)
        except FileNotFoundError:
            return out
        box_rows = read_csv(path, ("Image Index", "Finding Label", "Bbox [x"), _FIX)
        for row in box_rows:
            index = row["Image Index"]
            key = nih_to_key(row["Finding Label"])
            if key is None:
                raise DatasetFormatError(
                    path, f"row {index} has unknown label {row['Finding Label']!r}", _FIX
                )
            try:
                x, y = float(row["Bbox [x"]), float(row["y"])
                w, h = float(row["w"]), float(row["h]"])
            except (KeyError, ValueError) as exc:
                raise DatasetFormatError(
                    path, f"row {index} has no numeric x, y, w, h ({exc})", _FIX
                ) from exc
            # Boxes were drawn on the 1024x1024 release images, whatever the original size.
            width, height = 1024.0, 1024.0
            out[index].append(
                Box.from_pixels(key, 0, (x, y, x + w, y + h), width, height, row["Finding Label"])
            )
        return out
