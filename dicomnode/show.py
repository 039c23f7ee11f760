"""``dicomnode show STUDY_UID``: the report the node wrote for a study, read back from its files.

The current report is found from what is on disk and in the database, not from a guess: every
SR the worker wrote for the study (``outputs/<study>/``, and any path a delivery row names) is
read, and those named by another's Predecessor Documents Sequence (a revised draft replaced
them) are left out; of what remains the newest (content date and time) is current. The text
comes from the narrative (Basic Text SR, TID 2000), the coded findings from the TID 1500
measurement report, and the delivery states from the database.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pydicom.config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import BasicTextSRStorage, Comprehensive3DSRStorage, EnhancedSRStorage
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomnode.db import Delivery, Study
from dicomnode.exceptions import DicomNodeError
from dicomnode.report import codes

logger = logging.getLogger(__name__)

_NARRATIVE_CLASSES = {BasicTextSRStorage, EnhancedSRStorage}
_ENGINE_MANUFACTURER = "CXR Reporting Node"
_LATERALITY = ("272741003", "SCT")


def _code(item: Dataset, keyword: str = "ConceptNameCodeSequence") -> tuple[str, str, str]:
    seq = item.get(keyword)
    if not seq:
        return ("", "", "")
    code = seq[0]
    return (str(code.CodeValue), str(code.CodingSchemeDesignator), str(code.CodeMeaning))


def _is(item: Dataset, concept: Any) -> bool:
    value, scheme, _ = _code(item)
    return (value, scheme) == (concept.value, concept.scheme_designator)


def _content_time(ds: Dataset) -> str:
    return f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}"


def sr_documents(data_dir: Path, study_uid: str, paths: list[str]) -> dict[str, Path]:
    """SOP Instance UID -> file of every SR document the node wrote for the study."""
    candidates = set((data_dir / "outputs" / study_uid).glob("*.dcm"))
    candidates |= {data_dir / p for p in paths}
    found: dict[str, Path] = {}
    for path in sorted(candidates):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (OSError, InvalidDicomError) as exc:
            logger.warning("%s cannot be read: %s", path, exc)
            continue
        if ds.get("Modality") == "SR" and ds.get("StudyInstanceUID") == study_uid:
            found[str(ds.SOPInstanceUID)] = path
    return found


def current_documents(documents: Mapping[str, Dataset]) -> list[Dataset]:
    """The documents no other one names as its predecessor, newest first."""
    replaced = set()
    for ds in documents.values():
        for study in ds.get("PredecessorDocumentsSequence", []):
            for series in study.get("ReferencedSeriesSequence", []):
                for ref in series.get("ReferencedSOPSequence", []):
                    replaced.add(str(ref.ReferencedSOPInstanceUID))
    current = [ds for uid, ds in documents.items() if uid not in replaced]
    return sorted(current, key=_content_time, reverse=True)


def narrative_sections(ds: Dataset) -> list[tuple[str, str]]:
    """(title, text) of the narrative: top-level comments (the disclaimer) and each section."""
    sections: list[tuple[str, str]] = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT" and item.RelationshipType == "CONTAINS":
            sections.append((_code(item)[2], str(item.TextValue)))
        elif item.ValueType == "CONTAINER":
            texts = [
                str(child.TextValue)
                for child in item.get("ContentSequence", [])
                if child.ValueType == "TEXT"
            ]
            sections.append((_code(item)[2], "\n".join(texts)))
    return sections


def coded_findings(ds: Dataset) -> list[dict[str, Any]]:
    """Each TID 1501 measurement group of a TID 1500 report: finding, presence, probability,
    laterality, as coded."""
    findings = []
    for container in ds.get("ContentSequence", []):
        for group in container.get("ContentSequence", []):
            if group.ValueType != "CONTAINER":
                continue
            items = list(group.get("ContentSequence", []))
            finding = next(
                (i for i in items if i.ValueType == "CODE" and _is(i, codes.FINDING)), None
            )
            if finding is None:
                continue
            value, scheme, meaning = _code(finding, "ConceptCodeSequence")
            entry: dict[str, Any] = {
                "finding": meaning,
                "code": f"{scheme} {value}",
                "presence": None,
                "probability": None,
                "laterality": None,
            }
            for item in items:
                if item.ValueType == "CODE" and _code(item)[:2] == (value, scheme):
                    entry["presence"] = _code(item, "ConceptCodeSequence")[2]
                elif item.ValueType == "NUM" and _is(item, codes.PROBABILITY):
                    entry["probability"] = float(item.MeasuredValueSequence[0].NumericValue)
                for modifier in item.get("ContentSequence", []):
                    if modifier.ValueType == "CODE" and _code(modifier)[:2] == _LATERALITY:
                        entry["laterality"] = _code(modifier, "ConceptCodeSequence")[2]
            findings.append(entry)
    return findings


def engine_of(ds: Dataset) -> str | None:
    for equipment in ds.get("ContributingEquipmentSequence", []):
        if equipment.get("Manufacturer") == _ENGINE_MANUFACTURER:
            model = equipment.get("ManufacturerModelName", "")
            versions = equipment.get("SoftwareVersions", "")
            version = versions[0] if isinstance(versions, pydicom.multival.MultiValue) else versions
            return f"{model} {version}".strip() or None
    return None


def evidence_images(ds: Dataset) -> list[str]:
    return [
        str(ref.ReferencedSOPInstanceUID)
        for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
        for series in study.get("ReferencedSeriesSequence", [])
        for ref in series.get("ReferencedSOPSequence", [])
    ]


@dataclass
class StudyReportView:
    """What ``dicomnode show`` prints for one study."""

    study_instance_uid: str
    state: str
    reason: str | None
    instances: int
    report: dict[str, Any] | None = None
    replaced_drafts: list[str] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "study_instance_uid": self.study_instance_uid,
            "state": self.state,
            "reason": self.reason,
            "instances": self.instances,
            "report": self.report,
            "replaced_drafts": self.replaced_drafts,
            "deliveries": self.deliveries,
        }


@contextmanager
def _quiet_reading() -> Iterator[None]:
    # Read back as written: pydicom's per-value warnings are for the writer, not this reader.
    mode = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        pydicom.config.settings.reading_validation_mode = mode


def collect(session: Session, data_dir: Path, study_uid: str) -> StudyReportView:
    """The study's state and its current report (if any), read from the database and files."""
    with _quiet_reading():
        return _collect(session, data_dir, study_uid)


def _collect(session: Session, data_dir: Path, study_uid: str) -> StudyReportView:
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
    if study is None:
        raise DicomNodeError(
            f"no study {study_uid} in the database; `dicomnode status` lists recent studies"
        )
    rows = session.scalars(
        select(Delivery).where(Delivery.study_id == study.id).order_by(Delivery.id)
    ).all()
    view = StudyReportView(study_uid, study.state, study.error, study.instance_count)
    files = sr_documents(data_dir, study_uid, [r.path for r in rows])
    documents = {uid: pydicom.dcmread(path) for uid, path in files.items()}

    current = current_documents(documents)
    narrative = next((ds for ds in current if ds.SOPClassUID in _NARRATIVE_CLASSES), None)
    measurements = next(
        (ds for ds in current if ds.SOPClassUID == Comprehensive3DSRStorage), None
    )
    shown = [ds for ds in (narrative, measurements) if ds is not None]
    if shown:
        first = shown[0]
        view.report = {
            "documents": [
                {
                    "sop_instance_uid": str(ds.SOPInstanceUID),
                    "sop_class": ds.SOPClassUID.name,
                    "path": str(files[str(ds.SOPInstanceUID)]),
                }
                for ds in shown
            ],
            "content_datetime": _content_time(first),
            "completion_flag": first.get("CompletionFlag"),
            "verification_flag": first.get("VerificationFlag"),
            "engine": engine_of(first),
            "analysed_images": evidence_images(first),
            "sections": [
                {"title": title, "text": text}
                for title, text in (narrative_sections(narrative) if narrative else [])
            ],
            "findings": coded_findings(measurements) if measurements is not None else [],
        }
    current_uids = {str(ds.SOPInstanceUID) for ds in current}
    view.replaced_drafts = sorted(set(documents) - current_uids)
    view.deliveries = [
        {
            "id": r.id,
            "destination": r.destination,
            "sop_instance_uid": r.sop_instance_uid,
            "state": r.state,
            "attempts": r.attempts,
            "last_error": r.last_error,
        }
        for r in rows
    ]
    return view


def print_view(view: StudyReportView, *, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(view.as_dict(), indent=2, ensure_ascii=False))
        return
    print(f"Estudio {view.study_instance_uid}: {view.state}, {view.instances} instance(s)")
    if view.reason:
        print(f"  reason: {view.reason}")
    report = view.report
    if report is None:
        print("No report written for this study.")
    else:
        if view.state != "reported":
            print(
                f"  (the report below is the last one written; the study is {view.state} now, "
                "so a newer report may follow)"
            )
        print(
            f"Informe {report['verification_flag']}/{report['completion_flag']} "
            f"({report['content_datetime'][:8]} {report['content_datetime'][8:14]}), "
            f"engine {report['engine'] or '?'}"
        )
        print("Imágenes analizadas: " + (", ".join(report["analysed_images"]) or "?"))
        for section in report["sections"]:
            print(f"\n{section['title']}:\n{section['text']}")
        if report["findings"]:
            print("\nHallazgos codificados:")
            for f in report["findings"]:
                side = f" ({f['laterality']})" if f["laterality"] else ""
                prob = "" if f["probability"] is None else f", prob. {f['probability']:.2f}"
                print(f"  {f['finding']}{side}: {f['presence']}{prob}")
        print()
        for doc in report["documents"]:
            print(f"  {doc['sop_class']}: {doc['path']}")
    if view.replaced_drafts:
        print(f"  {len(view.replaced_drafts)} earlier draft(s) replaced by this report")
    if view.deliveries:
        print("deliveries:")
        for d in view.deliveries:
            error = f": {d['last_error']}" if d["last_error"] else ""
            print(
                f"  #{d['id']} {d['sop_instance_uid']} to {d['destination']}: {d['state']} "
                f"after {d['attempts']} attempt(s){error}"
            )
    elif report is not None:
        print("deliveries: none (no destination configured)")
