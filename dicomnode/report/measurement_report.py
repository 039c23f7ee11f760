"""The coded findings as a TID 1500 Measurement Report in a Comprehensive 3D SR.

This is the object IHE AI Results (AIR) specifies for AI findings, so AIR-ready
viewers list and draw it. Its content tree (PS3.16 TID 1500):

- TID 1204 language of content: Spanish;
- TID 1001 observation context with the engine as device observer (TID 1004);
- procedure reported: plain chest radiograph;
- TID 1600 image library: every source image;
- Imaging Measurements, one group per finding the engine produced (the "no finding"
  output excepted: a normal study is a statement, see below):

  - TID 1410 Planar ROI group when the engine located the finding (a closed
    POLYLINE SCOORD on the source image, naming the frame on a multi-frame image),
    otherwise TID 1501 group;
  - finding type = the finding's SNOMED CT / RadLex code with its Spanish meaning;
  - qualitative evaluation: finding = Presente / Ausente / Indeterminado;
  - measurement: Probabilidad (UCUM "1"), with TID 4019 algorithm identification;
  - finding site Tórax with laterality, when the engine gave a side;

- Qualitative Evaluations (TID 1500 row 12): the disclaimer, which images the
  model read and why, for a normal study the impression "Sin hallazgos patológicos"
  (SCT 281900007, never beside a finding coded present), and each narrative section
  as TEXT, so the draft nature is visible in this object too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset

from dicomnode.report import codes
from dicomnode.report.provenance import (
    algorithm_identification,
    analysed_frame,
    analysed_images_text,
    disclaimer_text,
    draft_sr_arguments,
    finish_draft_header,
    observation_context,
)
from dicomnode.uids import DEFAULT_UID_ROOT, derive_uid
from engine.result import FindingResult, Region, StudyReport

logger = logging.getLogger(__name__)

MeasurementGroup = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


def region_polyline(region: Region, source: Dataset) -> np.ndarray:
    """The region's box as a closed POLYLINE (5 points, column/row), checked against the image."""
    rows, columns = int(source.Rows), int(source.Columns)
    if region.x_min < 0 or region.y_min < 0 or region.x_max > columns or region.y_max > rows:
        raise ValueError(
            f"region ({region.x_min}, {region.y_min}, {region.x_max}, {region.y_max}) lies "
            f"outside image {region.sop_instance_uid} ({columns} columns x {rows} rows)"
        )
    return np.array(
        [
            [region.x_min, region.y_min],
            [region.x_max, region.y_min],
            [region.x_max, region.y_max],
            [region.x_min, region.y_max],
            [region.x_min, region.y_min],
        ],
        dtype=np.float32,
    )


def library_entry_header(source: Dataset) -> Dataset:
    """The part of a source header that highdicom's TID 1600 image library reads.

    highdicom adds TID 1603 projection descriptors (orientation, imager pixel
    spacing) for CR/DX images and fails when a source lacks them, which real CR
    images may (both are type 2/3 there). Such sources get an entry without those
    descriptors: the coded modality still comes from the SOP class.
    """
    entry = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "Rows", "Columns", "FrameOfReferenceUID"):
        if keyword in source:
            setattr(entry, keyword, source[keyword].value)
    orientation = source.get("PatientOrientation") or []
    spacing = source.get("ImagerPixelSpacing") or []
    has_projection_descriptors = (
        len(orientation) == 2 and len(spacing) == 2 and all(float(v) > 0 for v in spacing)
    )
    if has_projection_descriptors:
        entry.Modality = source.Modality
        entry.PatientOrientation = orientation
        entry.ImagerPixelSpacing = spacing
    else:
        # Not a projection modality for highdicom's test: it then adds no TID 1603 items.
        entry.Modality = "OT"
    return entry


def is_normal_statement(finding: FindingResult) -> bool:
    """Whether ``finding`` is the engine's "no finding" output rather than a finding."""
    return finding.key == "no_finding" or (
        finding.code.scheme == codes.NO_ABNORMALITY.scheme_designator
        and finding.code.value == codes.NO_ABNORMALITY.value
    )


def coded_findings(report: StudyReport) -> tuple[FindingResult, ...]:
    """The findings written as measurement groups: all but the "no finding" output, which
    would read as a double negative ("Sin hallazgos patológicos: ausente")."""
    return tuple(f for f in report.findings if not is_normal_statement(f))


def states_normal(report: StudyReport) -> bool:
    """Whether the report states a normal study: "no finding" present and no finding present.

    When the engine scores "no finding" present beside a finding present, the finding wins
    and no normal statement is written (the two must never coexist in one report).
    """
    normal = any(is_normal_statement(f) and f.presence == "present" for f in report.findings)
    present = [f.key for f in coded_findings(report) if f.presence == "present"]
    if normal and present:
        logger.warning(
            "study %s: the engine scored 'no finding' present beside %s; no normal statement "
            "is written",
            report.study_instance_uid,
            ", ".join(present),
        )
    return normal and not present


def probability_text_es(probability: float) -> str:
    """The probability as "prob. 0,58": decimal comma, and not "p=" (reads as a p-value)."""
    return "prob. " + f"{probability:.2f}".replace(".", ",")


def finding_label_es(finding: FindingResult) -> str:
    """A short Spanish label: name, side, presence when not present, and probability.

    The side is a phrase ("en hemitórax derecho") so it agrees with any finding name.
    """
    label = finding.code.meaning_es
    if finding.laterality is not None:
        label += " " + codes.LATERALITY_TEXT_ES[finding.laterality]
    if finding.presence != "present":
        label += ": " + codes.PRESENCE_TEXT_ES[finding.presence]
    return f"{label} ({probability_text_es(finding.probability)})"


def set_library_modalities(content: Dataset, sources: dict[str, Dataset]) -> None:
    """Code each TID 1600 library entry's Modality from its source header.

    highdicom derives it from the SOP class, which says OT for a Secondary Capture even
    when its header says CR; the header is what the PACS and the reader see.
    """
    for item in content.get("ContentSequence") or []:
        if item.get("ValueType") == "IMAGE" and "ReferencedSOPSequence" in item:
            source = sources.get(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
            coded = codes.MODALITY.get(str(source.get("Modality", ""))) if source else None
            for descriptor in item.get("ContentSequence") or []:
                name = descriptor.ConceptNameCodeSequence[0]
                if coded is not None and name.CodeValue == codes.MODALITY_CONCEPT_VALUE:
                    descriptor.ConceptCodeSequence = [hd.sr.CodedConcept.from_dataset(coded)]
        elif item.get("ValueType") == "CONTAINER":
            set_library_modalities(item, sources)


def measurement_group(
    finding: FindingResult,
    index: int,
    sources: dict[str, Dataset],
    report: StudyReport,
    *,
    root: str = DEFAULT_UID_ROOT,
) -> MeasurementGroup:
    """One TID 1501 / TID 1410 group for ``finding`` (``index`` numbers it for readers)."""
    concept = codes.finding_concept(finding.code)
    tracking = hd.sr.TrackingIdentifier(
        uid=derive_uid(
            "finding", report.study_instance_uid, report.engine.sha256, finding.key, root=root
        ),
        identifier=f"Hallazgo {index}: {finding.code.meaning_es}"[:64],
    )
    algorithm = algorithm_identification(report.engine)
    probability = hd.sr.Measurement(
        name=codes.PROBABILITY,
        value=float(finding.probability),
        unit=codes.NO_UNITS,
        algorithm_id=algorithm,
    )
    evaluation = hd.sr.QualitativeEvaluation(name=concept, value=codes.PRESENCE[finding.presence])
    sites = None
    if finding.laterality is not None:
        sites = [
            hd.sr.FindingSite(
                anatomic_location=codes.THORAX,
                laterality=codes.LATERALITY[finding.laterality],
            )
        ]
    if finding.region is not None:
        source = sources.get(finding.region.sop_instance_uid)
        if source is None:
            raise ValueError(
                f"finding {finding.key!r} has a region on image "
                f"{finding.region.sop_instance_uid}, which is not among the source images"
            )
        frame = analysed_frame(report, source)
        image_region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=region_polyline(finding.region, source),
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=source.SOPClassUID,
                referenced_sop_instance_uid=source.SOPInstanceUID,
                referenced_frame_numbers=[frame] if frame is not None else None,
            ),
        )
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_region=image_region,
            finding_type=concept,
            algorithm_id=algorithm,
            finding_sites=sites,
            measurements=[probability],
            qualitative_evaluations=[evaluation],
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=concept,
        algorithm_id=algorithm,
        finding_sites=sites,
        measurements=[probability],
        qualitative_evaluations=[evaluation],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=ds.SOPClassUID,
                referenced_sop_instance_uid=ds.SOPInstanceUID,
                referenced_frame_numbers=(
                    [frame] if (frame := analysed_frame(report, ds)) is not None else None
                ),
            )
            for ds in sources.values()
        ],
    )


def narrative_evaluations(
    report: StudyReport, sources: Sequence[Dataset]
) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12 container: the disclaimer first, the images the model read, the
    normal statement when the study is normal, then each narrative section."""
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    items: list[hd.sr.ContentItem] = [
        hd.sr.TextContentItem(
            name=codes.COMMENT,
            value=disclaimer_text(report.engine),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
        hd.sr.TextContentItem(
            name=codes.PROCEDURE_DESCRIPTION,
            value=analysed_images_text(report, sources),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
    ]
    if states_normal(report):
        items.append(
            hd.sr.CodeContentItem(
                name=codes.IMPRESSION,
                value=codes.NO_ABNORMALITY,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    for title, text in report.sections:
        section, _ = codes.section_concepts(title)
        items.append(
            hd.sr.TextContentItem(
                name=section,
                value=text,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


class FindingsMeasurementReport(hd.sr.Comprehensive3DSR):
    """Comprehensive 3D SR holding the engine's coded findings as a TID 1500 Measurement Report.

    Always a draft: Completion Flag PARTIAL, Verification Flag UNVERIFIED, Preliminary
    Flag PRELIMINARY, Specific Character Set ISO_IR 192 (UTF-8).
    """

    def __init__(
        self,
        report: StudyReport,
        sources: Sequence[Dataset],
        *,
        series_instance_uid: str,
        series_number: int,
        sop_instance_uid: str,
        instance_number: int,
        uid_root: str = DEFAULT_UID_ROOT,
        institution_name: str | None = None,
    ) -> None:
        if not isinstance(report, StudyReport):
            raise TypeError(f"report must be a StudyReport, got {type(report).__name__}")
        if not coded_findings(report):
            raise ValueError(
                "report has no findings: a TID 1500 Measurement Report needs at least one "
                "measurement group; write only the narrative report for this study"
            )
        if not sources:
            raise ValueError("sources must hold at least one source image dataset")
        by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
        groups = [
            measurement_group(f, i, by_uid, report, root=uid_root)
            for i, f in enumerate(coded_findings(report), start=1)
        ]
        content = hd.sr.MeasurementReport(
            observation_context=observation_context(report.engine, root=uid_root),
            procedure_reported=codes.CHEST_RADIOGRAPH,
            imaging_measurements=groups,
            title=codes.IMAGING_MEASUREMENT_REPORT,
            language_of_content_item_and_descendants=(
                hd.sr.LanguageOfContentItemAndDescendants(codes.SPANISH)
            ),
            referenced_images=[library_entry_header(ds) for ds in by_uid.values()],
        )
        set_library_modalities(content[0], by_uid)
        content[0].ContentSequence.append(narrative_evaluations(report, list(by_uid.values())))
        super().__init__(
            content=content[0],
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            instance_number=instance_number,
            institution_name=institution_name,
            **draft_sr_arguments(report, list(by_uid.values())),
        )
        finish_draft_header(self, report)
