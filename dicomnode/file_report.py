"""``dicomnode report FILE ...``: the configured engine on DICOM files, without a PACS.

For an administrator trying an engine: the files are read, grouped into studies by Study
Instance UID, reported exactly as the worker reports a queued study, and the Spanish draft and
its coded findings are printed. With ``--out`` the report objects (SRs, GSPS) are written to a
folder as the worker would write them; nothing is stored in the node's database or sent.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomnode.config import Config
from dicomnode.exceptions import DicomNodeError
from dicomnode.report import build_report_objects
from dicomnode.report.provenance import disclaimer_text
from engine.exceptions import StudyError
from engine.result import StudyReport

logger = logging.getLogger(__name__)


class _Engine(Protocol):
    def report_studies(
        self, studies: Sequence[Sequence[Dataset]], *, return_exceptions: bool
    ) -> list[StudyReport | StudyError]: ...


def read_studies(paths: Sequence[str | Path]) -> dict[str, list[Dataset]]:
    """The files grouped by Study Instance UID, in the order given.

    Raises :class:`DicomNodeError` naming the file when one is missing or is not DICOM.
    """
    studies: dict[str, list[Dataset]] = {}
    for path in map(Path, paths):
        try:
            ds = pydicom.dcmread(path)
        except FileNotFoundError as exc:
            raise DicomNodeError(f"{path}: no such file") from exc
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise DicomNodeError(f"{path}: not a readable DICOM file ({exc})") from exc
        study_uid = str(ds.get("StudyInstanceUID", "") or "")
        if not study_uid:
            raise DicomNodeError(f"{path}: no Study Instance UID, so no study to report")
        studies.setdefault(study_uid, []).append(ds)
    return studies


def _as_dict(report: StudyReport) -> dict[str, Any]:
    return {
        "study_instance_uid": report.study_instance_uid,
        "engine": {"name": report.engine.name, "version": report.engine.version},
        "sections": dict(report.sections),
        "findings": [
            {
                "key": f.key,
                "name_es": f.code.meaning_es,
                "code": f"{f.code.scheme} {f.code.value}",
                "presence": f.presence,
                "probability": round(f.probability, 4),
                "laterality": f.laterality,
                "region": None
                if f.region is None
                else [f.region.x_min, f.region.y_min, f.region.x_max, f.region.y_max],
            }
            for f in report.findings
        ],
    }


def _print_report(report: StudyReport) -> None:
    print(f"Estudio {report.study_instance_uid}")
    print(disclaimer_text(report.engine))
    for title, text in report.sections:
        print(f"\n{title}:\n{text}")
    shown = [f for f in report.findings if f.presence != "absent"]
    print("\nHallazgos codificados (no ausentes):" if shown else "\nNingún hallazgo codificado.")
    for f in shown:
        side = f" ({f.laterality})" if f.laterality else ""
        print(f"  {f.code.meaning_es}{side}: {f.presence}, prob. {f.probability:.2f}")
    print()


def report_files(
    config: Config,
    engine: _Engine,
    paths: Sequence[str | Path],
    *,
    out_dir: str | Path | None = None,
    as_json: bool = False,
) -> int:
    """Report the studies in ``paths``; 0 when every study was reported, 1 otherwise."""
    studies = read_studies(paths)
    results = engine.report_studies(list(studies.values()), return_exceptions=True)
    output: list[dict[str, Any]] = []
    failed = 0
    for (study_uid, datasets), result in zip(studies.items(), results, strict=True):
        if isinstance(result, StudyError):
            failed += 1
            kind = type(result).__name__
            output.append({"study_instance_uid": study_uid, "error": str(result), "kind": kind})
            if not as_json:
                print(f"Estudio {study_uid}: not reported ({kind}): {result}\n", file=sys.stderr)
            continue
        entry = _as_dict(result)
        if out_dir is not None:
            objects = build_report_objects(
                result,
                datasets,
                with_presentation_state=config.report.presentation_state,
                uid_root=config.report.uid_root,
                institution_name=config.report.institution_name or None,
            )
            folder = Path(out_dir) / study_uid
            folder.mkdir(parents=True, exist_ok=True)
            entry["objects"] = []
            for ds in objects:
                target = folder / f"{ds.SOPInstanceUID}.dcm"
                ds.save_as(target, enforce_file_format=True)
                entry["objects"].append(str(target))
        output.append(entry)
        if not as_json:
            _print_report(result)
            for target in entry.get("objects", []):
                print(f"  written: {target}")
    if as_json:
        print(json.dumps(output, indent=2, ensure_ascii=False))
    return 1 if failed else 0
