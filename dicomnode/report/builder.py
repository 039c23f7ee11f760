"""From one engine result and its source image headers to the DICOM objects the node sends.

:func:`build_report_objects` returns, in sending order:

1. :class:`~dicomnode.report.narrative.NarrativeReport`: Basic Text SR, TID 2000;
2. :class:`~dicomnode.report.measurement_report.FindingsMeasurementReport`:
   Comprehensive 3D SR, TID 1500 (only when the engine produced findings);
3. one :class:`~dicomnode.report.presentation_state.FindingsPresentationState`
   per source image with a located finding to draw (optional; by default findings
   coded present only). A presentation state that cannot be built is logged and
   left out: it never costs the SRs.

Both SRs share one new series in the source study; the presentation states get a
second new series (PS3.3 requires a series to hold one modality). Every UID is
derived from the study, the sorted source SOP Instance UIDs, the engine sha256 and
the object kind (:mod:`dicomnode.uids`): rebuilding for a retried delivery gives
the very same UIDs, so the PACS overwrites rather than duplicates.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

from pydicom import Dataset

from dicomnode.exceptions import ReportObjectError
from dicomnode.report.measurement_report import FindingsMeasurementReport, coded_findings
from dicomnode.report.narrative import NarrativeReport
from dicomnode.report.presentation_state import (
    DRAWN_FINDINGS,
    DrawnFindings,
    FindingsPresentationState,
    drawn_findings,
)
from dicomnode.uids import DEFAULT_UID_ROOT, derive_output_uid, validate_uid_root
from engine.result import StudyReport

logger = logging.getLogger(__name__)

DEFAULT_SR_SERIES_NUMBER = 9901
DEFAULT_PR_SERIES_NUMBER = 9902


def select_sources(report: StudyReport, sources: Sequence[Dataset]) -> list[Dataset]:
    """The source headers the report is based on, one per SOP Instance UID, in report order.

    Raises :class:`ReportObjectError` when a source belongs to another study, when an
    image the report names is missing, or when a region points outside the sources.
    """
    if isinstance(sources, Dataset) or not isinstance(sources, Sequence):
        raise TypeError("sources must be a sequence of pydicom Datasets")
    by_uid: dict[str, Dataset] = {}
    for i, ds in enumerate(sources):
        if not isinstance(ds, Dataset):
            raise TypeError(f"sources[{i}] must be a pydicom Dataset, got {type(ds).__name__}")
        if ds.get("StudyInstanceUID") != report.study_instance_uid:
            raise ReportObjectError(
                f"source image {ds.get('SOPInstanceUID')} belongs to study "
                f"{ds.get('StudyInstanceUID')}, not to the reported study "
                f"{report.study_instance_uid}; pass only the study's own images"
            )
        by_uid.setdefault(str(ds.SOPInstanceUID), ds)
    missing = [uid for uid in report.source_sop_instance_uids if uid not in by_uid]
    if missing:
        raise ReportObjectError(
            f"the report is based on images {missing} whose headers were not passed as "
            "sources; read them from the spool and retry"
        )
    for finding in report.findings:
        if (
            finding.region
            and finding.region.sop_instance_uid not in report.source_sop_instance_uids
        ):
            raise ReportObjectError(
                f"finding {finding.key!r} is located on image {finding.region.sop_instance_uid}, "
                "which is not one of the report's source images"
            )
    extra = set(by_uid) - set(report.source_sop_instance_uids)
    if extra:
        logger.info("ignoring %d source image(s) the report is not based on", len(extra))
    return [by_uid[uid] for uid in dict.fromkeys(report.source_sop_instance_uids)]


def build_report_objects(
    report: StudyReport,
    sources: Sequence[Dataset],
    *,
    with_presentation_state: bool = True,
    presentation_state_findings: DrawnFindings = "present",
    uid_root: str = DEFAULT_UID_ROOT,
    sr_series_number: int = DEFAULT_SR_SERIES_NUMBER,
    # Headers of the study's earlier SR drafts this report replaces: every SR written names
    # them in its Predecessor Documents Sequence (docs/report-objects.md, "Revised drafts").
    predecessors: Sequence[Dataset] = (),
    pr_series_number: int = DEFAULT_PR_SERIES_NUMBER,
    institution_name: str | None = None,
) -> list[Dataset]:
    """The DICOM objects that carry ``report`` back into its study (see the module docstring).

    ``presentation_state_findings`` chooses what the presentation states draw:
    ``"present"`` (default) or ``"present_and_uncertain"``.
    """
    if not isinstance(report, StudyReport):
        raise TypeError(f"report must be a StudyReport, got {type(report).__name__}")
    if report.language.split("-")[0].lower() != "es":
        raise ReportObjectError(
            f"report language is {report.language!r}; the node writes Spanish documents "
            "(TID 1204 'es'), so use an engine that reports in Spanish"
        )
    if not isinstance(with_presentation_state, bool):
        raise TypeError("with_presentation_state must be a bool")
    if presentation_state_findings not in DRAWN_FINDINGS:
        raise ValueError(
            f"presentation_state_findings must be one of {DRAWN_FINDINGS}, "
            f"got {presentation_state_findings!r}"
        )
    validate_uid_root(uid_root)
    for name, number in (
        ("sr_series_number", sr_series_number),
        ("pr_series_number", pr_series_number),
    ):
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise ValueError(f"{name} must be a non-negative int, got {number!r}")
    chosen = select_sources(report, sources)

    def uid(kind: str) -> str:
        return derive_output_uid(
            report.study_instance_uid,
            report.source_sop_instance_uids,
            report.engine.sha256,
            kind,
            root=uid_root,
        )

    common = {"uid_root": uid_root, "institution_name": institution_name}
    objects: list[Dataset] = []
    # highdicom warns about source quirks (single-component patient names); those are the
    # PACS's data, copied verbatim on purpose, and dciodvfy is the judge in the tests.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            objects.append(
                NarrativeReport(
                    report,
                    chosen,
                    series_instance_uid=uid("series:sr"),
                    series_number=sr_series_number,
                    sop_instance_uid=uid("sr:tid2000"),
                    instance_number=1,
                    **common,  # type: ignore[arg-type]
                )
            )
            if coded_findings(report):
                objects.append(
                    FindingsMeasurementReport(
                        report,
                        chosen,
                        series_instance_uid=uid("series:sr"),
                        series_number=sr_series_number,
                        sop_instance_uid=uid("sr:tid1500"),
                        instance_number=2,
                        **common,  # type: ignore[arg-type]
                    )
                )
        except ValueError as exc:
            if isinstance(exc, ReportObjectError):
                raise
            raise ReportObjectError(f"cannot build the report objects: {exc}") from exc
        if with_presentation_state:
            images = [
                ds for ds in chosen if drawn_findings(report, ds, presentation_state_findings)
            ]
            for number, source in enumerate(images, start=1):
                try:
                    objects.append(
                        FindingsPresentationState(
                            report,
                            source,
                            series_instance_uid=uid("series:pr"),
                            series_number=pr_series_number,
                            sop_instance_uid=uid(f"pr:{source.SOPInstanceUID}"),
                            instance_number=number,
                            institution_name=institution_name,
                            findings=presentation_state_findings,
                        )
                    )
                except Exception:
                    # Optional object: the SRs carry the same findings, so they still go.
                    logger.exception(
                        "presentation state for image %s of study %s could not be built; "
                        "sending the reports without it",
                        source.SOPInstanceUID,
                        report.study_instance_uid,
                    )
    logger.info("built %d report object(s) for study %s", len(objects), report.study_instance_uid)
    _link_predecessors(objects, predecessors, report.study_instance_uid)
    return objects


def predecessor_documents(
    predecessors: Sequence[Dataset], study_instance_uid: str, exclude: set[str]
) -> list[Dataset]:
    """Predecessor Documents Sequence items (PS3.3 C.17.2, Hierarchical SOP Instance
    Reference Macro) for the earlier SR documents of the study, one per series."""
    by_series: dict[str, list[Dataset]] = {}
    for i, ds in enumerate(predecessors):
        if not isinstance(ds, Dataset):
            raise TypeError(f"predecessors[{i}] must be a pydicom Dataset, got {type(ds).__name__}")
        if ds.get("StudyInstanceUID") != study_instance_uid:
            raise ValueError(
                f"predecessors[{i}] belongs to study {ds.get('StudyInstanceUID')}, not "
                f"{study_instance_uid}: only earlier reports of the same study are predecessors"
            )
        if str(ds.SOPInstanceUID) in exclude:
            continue
        reference = Dataset()
        reference.ReferencedSOPClassUID = ds.SOPClassUID
        reference.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(reference)
    if not by_series:
        return []
    series_items = []
    for series_uid, references in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedSOPSequence = references
        series_items.append(series)
    item = Dataset()
    item.StudyInstanceUID = study_instance_uid
    item.ReferencedSeriesSequence = series_items
    return [item]


def _link_predecessors(
    objects: Sequence[Dataset], predecessors: Sequence[Dataset], study_instance_uid: str
) -> None:
    # Every SR of the new report names every earlier draft: the narrative and the TID 1500
    # document replace the older ones together, even when the newer report has no findings.
    own = {str(ds.SOPInstanceUID) for ds in objects}
    items = predecessor_documents(predecessors, study_instance_uid, own)
    if not items:
        return
    for ds in objects:
        if ds.get("Modality") == "SR":
            ds.PredecessorDocumentsSequence = items
