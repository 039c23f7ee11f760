"""IU X-Ray (Indiana University chest X-ray collection, OpenI) in its two published layouts.

``layout="openi"``: the original release. ``root`` holds the reports, either as the archive
``NLMCXR_reports.tgz`` (read in place with :mod:`tarfile`) or extracted as
``ecgen-radiology/<n>.xml``, and optionally the PNG images (``NLMCXR_png/`` or ``images/`` or
``root`` itself, files named after the XML ``parentImage`` ids, e.g. ``CXR1_1_IM-0001-3001.png``)
and ``nlmcxr_dicom_metadata.csv(.gz)`` for the view of each image. Findings come from the manual
MeSH annotations (``<MeSH><major>``) mapped through :func:`training.label_maps.mesh_to_keys`.
The split is the R2Gen one when an annotation file (``annotation.json`` or
``r2gen_split_annotation.json``) sits beside the reports; studies it does not list are then
left out unless ``include_unsplit=True`` (they go to ``train``). Without one, splits are hashed
from the study id.

``layout="r2gen"``: the preprocessed release most report-generation papers use (R2Gen, Chen et al.
2020): ``annotation.json`` with ``train``/``val``/``test`` lists of ``{id, report, image_path}``
and images at ``images/<id>/<n>.png``. Its ``report`` is the FINDINGS section only; it is stored
as the ``findings`` section. It carries no labels.

Study ids are the R2Gen ids (``CXR1_1_IM-0001``, the first image id without its last part) in
both layouts, so predictions made on one layout evaluate against the other. The reports are
CC BY-NC-ND 4.0: read them, never write modified copies.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.labeler import get_labeler
from training.data.base import ChestXrayDataset, hashed_split, read_csv
from training.data.records import ImageRef, Presence, StudyRecord, normalize_split, normalize_view
from training.data.registry import register_dataset
from training.exceptions import DatasetFileNotFoundError, DatasetFormatError
from training.label_maps import mesh_sign_keys, mesh_to_keys

logger = logging.getLogger(__name__)

REPORTS_ARCHIVE = "NLMCXR_reports.tgz"
REPORTS_DIR = "ecgen-radiology"
ANNOTATION_NAMES = ("annotation.json", "r2gen_split_annotation.json")
METADATA_NAMES = ("nlmcxr_dicom_metadata.csv.gz", "nlmcxr_dicom_metadata.csv")
PNG_DIR_NAMES = ("NLMCXR_png", "images")

_FIX_OPENI = (
    f"Put the OpenI reports in this folder, as {REPORTS_ARCHIVE} (from "
    f"https://openi.nlm.nih.gov/faq#collection) or extracted as {REPORTS_DIR}/<n>.xml"
)
_FIX_R2GEN = "Use the R2Gen layout: annotation.json beside images/<id>/<n>.png"


_SERIES_PART = re.compile(r"^(CXR\d+)_\d+_(IM-)")


def metadata_image_id(image_id: str) -> str:
    """The id the DICOM metadata file uses: ``CXR1_1_IM-0001-3001`` -> ``CXR1_IM-0001-3001``."""
    return _SERIES_PART.sub(r"\1_\2", image_id)


def r2gen_id(image_id: str) -> str:
    """The R2Gen study id of an OpenI image id: ``CXR1_1_IM-0001-3001`` -> ``CXR1_1_IM-0001``."""
    return image_id.rsplit("-", 1)[0]


@register_dataset("iu_xray")
class IUXRayDataset(ChestXrayDataset):
    """IU X-Ray studies from the OpenI XML reports or the R2Gen annotation layout."""

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        layout: str = "auto",
        images_dir: str | Path | None = None,
        include_unsplit: bool = False,
        label_reports: bool = False,
    ) -> None:
        if layout not in ("auto", "openi", "r2gen"):
            raise ValueError(f"layout must be 'auto', 'openi' or 'r2gen', got {layout!r}")
        self.layout = layout
        self.images_dir = Path(images_dir) if images_dir is not None else None
        self.include_unsplit = include_unsplit
        super().__init__(root, split, label_reports=label_reports)

    # -- layout detection -------------------------------------------------------------------
    def _resolve_layout(self) -> str:
        if self.layout != "auto":
            return self.layout
        if (self.root / REPORTS_ARCHIVE).exists() or (self.root / REPORTS_DIR).is_dir():
            return "openi"
        if any((self.root / n).exists() for n in ANNOTATION_NAMES):
            return "r2gen"
        raise DatasetFileNotFoundError(
            self.root / REPORTS_ARCHIVE,
            f"No IU X-Ray reports found. {_FIX_OPENI}; or {_FIX_R2GEN}",
        )

    def _load(self) -> list[StudyRecord]:
        layout = self._resolve_layout()
        self.layout = layout
        return self._load_openi() if layout == "openi" else self._load_r2gen()

    # -- R2Gen ------------------------------------------------------------------------------
    def _annotation_path(self) -> Path | None:
        for name in ANNOTATION_NAMES:
            if (self.root / name).exists():
                return self.root / name
        return None

    def _read_annotation(self, path: Path) -> dict[str, tuple[str, dict[str, Any]]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(path, f"not valid JSON ({exc})", _FIX_R2GEN) from exc
        if not isinstance(data, dict) or not set(data) & {"train", "val", "test"}:
            raise DatasetFormatError(
                path, "expected an object with 'train', 'val' and 'test' lists", _FIX_R2GEN
            )
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for split_name, entries in data.items():
            split = normalize_split(split_name)
            for entry in entries:
                if not isinstance(entry, dict) or "id" not in entry:
                    raise DatasetFormatError(
                        path, f"an entry of {split_name!r} has no 'id'", _FIX_R2GEN
                    )
                out[str(entry["id"])] = (split, entry)
        return out

    def _load_r2gen(self) -> list[StudyRecord]:
        path = self._annotation_path()
        if path is None:
            raise DatasetFileNotFoundError(self.root / ANNOTATION_NAMES[0], _FIX_R2GEN)
        images_root = self.images_dir or self.root / "images"
        records = []
        for study_id, (split, entry) in self._read_annotation(path).items():
            rel_paths = entry.get("image_path") or []
            images = tuple(ImageRef(images_root / p) for p in rel_paths)
            records.append(
                StudyRecord(
                    dataset=self.name,
                    study_id=study_id,
                    images=images,
                    sections={"en": {"findings": str(entry.get("report", "")).strip()}},
                    findings={},
                    split=split,
                    meta={"layout": "r2gen"},
                )
            )
        return records

    # -- OpenI ------------------------------------------------------------------------------
    def _iter_xml(self) -> Iterator[tuple[str, bytes]]:
        archive = self.root / REPORTS_ARCHIVE
        if archive.exists():
            try:
                with tarfile.open(archive, "r:*") as tar:
                    for member in tar:
                        if member.isfile() and member.name.endswith(".xml"):
                            fh = tar.extractfile(member)
                            if fh is not None:
                                yield member.name, fh.read()
            except tarfile.TarError as exc:
                raise DatasetFormatError(
                    archive, f"not a readable tar archive ({exc})", _FIX_OPENI
                ) from exc
            return
        folder = self.root / REPORTS_DIR
        if not folder.is_dir():
            raise DatasetFileNotFoundError(archive, _FIX_OPENI)
        for path in sorted(folder.glob("*.xml")):
            yield str(path), path.read_bytes()

    def _views(self) -> dict[str, str]:
        for name in METADATA_NAMES:
            path = self.root / name
            if path.exists():
                rows = read_csv(
                    path,
                    ("imageid", "View Position"),
                    "Use nlmcxr_dicom_metadata.csv from the IU X-Ray DICOM headers",
                )
                return {row["imageid"]: normalize_view(row["View Position"]) for row in rows}
        return {}

    def _png_dir(self) -> Path:
        if self.images_dir is not None:
            return self.images_dir
        for name in PNG_DIR_NAMES:
            if (self.root / name).is_dir():
                return self.root / name
        return self.root

    def _load_openi(self) -> list[StudyRecord]:
        annotation = self._annotation_path()
        splits = self._read_annotation(annotation) if annotation else None
        views = self._views()
        png_dir = self._png_dir()
        records = []
        for name, blob in self._iter_xml():
            record = self._parse_xml(name, blob, splits, views, png_dir)
            if record is not None:
                records.append(record)
        if not records:
            raise DatasetFormatError(
                self.root / REPORTS_ARCHIVE, "no report could be read", _FIX_OPENI
            )
        return records

    def _parse_xml(
        self,
        name: str,
        blob: bytes,
        splits: dict[str, tuple[str, dict[str, Any]]] | None,
        views: dict[str, str],
        png_dir: Path,
    ) -> StudyRecord | None:
        try:
            root = ET.fromstring(blob)
        except ET.ParseError as exc:
            raise DatasetFormatError(
                Path(name), f"not well-formed XML ({exc})", _FIX_OPENI
            ) from exc
        uid_el = root.find("uId")
        report_id = uid_el.get("id", "") if uid_el is not None else ""
        image_ids = [el.get("id", "") for el in root.iter("parentImage") if el.get("id")]
        study_id = r2gen_id(image_ids[0]) if image_ids else report_id
        if not study_id:
            raise DatasetFormatError(Path(name), "no uId and no parentImage id", _FIX_OPENI)
        if splits is not None:
            if study_id in splits:
                split = splits[study_id][0]
            elif self.include_unsplit:
                split = "train"
            else:
                return None
        else:
            split = hashed_split(study_id)
        sections: dict[str, str] = {}
        for el in root.iter("AbstractText"):
            label = (el.get("Label") or "").strip().lower()
            if label in ("findings", "impression") and el.text and el.text.strip():
                sections[label] = " ".join(el.text.split())
        findings: dict[str, Presence] = {}
        mesh_terms: list[str] = []
        mesh = root.find("MeSH")
        if mesh is not None:
            mesh_terms = [t for t in ((el.text or "").strip() for el in mesh.findall("major")) if t]
        denied: set[str] = set()
        if mesh_sign_keys(mesh_terms):
            # A sign (blunted angle) counts for its finding unless the report denies the finding.
            read = get_labeler("en").label(" ".join(sections.values()), sections=False)
            denied = {k for k, p in read.items() if p == "absent"}
        for term in mesh_terms:
            for key in mesh_to_keys(term, denied):
                findings[key] = "present"
        images = tuple(
            ImageRef(
                png_dir / f"{image_id}.png",
                views.get(image_id) or views.get(metadata_image_id(image_id), "UNKNOWN"),
            )
            for image_id in image_ids
        )
        return StudyRecord(
            dataset=self.name,
            study_id=study_id,
            images=images,
            sections={"en": sections},
            findings=findings,
            split=split,
            meta={"layout": "openi", "report_id": report_id, "mesh": "; ".join(mesh_terms)},
        )
