"""The Spanish narrative as a TID 2000 Basic Diagnostic Imaging Report in a Basic Text SR.

Text-only systems (RIS, report viewers, HL7 bridges) display Basic Text SR but
often not Comprehensive 3D SR, so the narrative travels in its own object:

- root container "Informe de diagnóstico por imagen" (LOINC 18748-4, CID 7000);
- TID 1204 language of content: Spanish; TID 1001 observation context with the
  engine as device observer (TID 1004);
- the disclaimer as the first CONTAINS item (DCM 121106 "Comentario"), so every
  renderer shows it before the text;
- a "Descripción del procedimiento" section (LOINC 55111-9) saying which image(s) the
  model read (view, frame) and why it chose them;
- one section container per engine section (TID 2001 headings from CID 7001, all
  LOINC: "Hallazgos" 59776-5, "Impresión" 19005-8, ...), each holding its text as a
  TID 2002 TEXT item (CID 7002: DCM 121071 "Hallazgo", 121073 "Impresión", ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

import highdicom as hd
from highdicom.sr.sop import _SR
from pydicom import Dataset
from pydicom.uid import BasicTextSRStorage

from dicomnode.report import codes
from dicomnode.report.provenance import (
    analysed_images_text,
    disclaimer_text,
    draft_sr_arguments,
    finish_draft_header,
    observation_context,
)
from dicomnode.uids import DEFAULT_UID_ROOT
from engine.result import StudyReport

logger = logging.getLogger(__name__)

_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS


def diagnostic_imaging_report(
    report: StudyReport, sources: Sequence[Dataset], *, root: str = DEFAULT_UID_ROOT
) -> hd.sr.ContainerContentItem:
    """The TID 2000 content tree for ``report`` (root container with all its items)."""
    container = hd.sr.ContainerContentItem(name=codes.DIAGNOSTIC_IMAGING_REPORT, template_id="2000")
    items: list[hd.sr.ContentItem] = []
    # Templates are content sequences whose items are content items.
    items.extend(
        cast(
            list[hd.sr.ContentItem], list(hd.sr.LanguageOfContentItemAndDescendants(codes.SPANISH))
        )
    )
    items.extend(cast(list[hd.sr.ContentItem], list(observation_context(report.engine, root=root))))
    items.append(
        hd.sr.TextContentItem(
            name=codes.COMMENT, value=disclaimer_text(report.engine), relationship_type=_CONTAINS
        )
    )
    procedure = hd.sr.ContainerContentItem(
        name=codes.CURRENT_PROCEDURE, relationship_type=_CONTAINS
    )
    procedure.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=codes.PROCEDURE_DESCRIPTION,
                value=analysed_images_text(report, sources),
                relationship_type=_CONTAINS,
            )
        ]
    )
    items.append(procedure)
    if report.writer:  # which report writer produced the text, and why (engine.writers)
        items.append(
            hd.sr.TextContentItem(
                name=codes.COMMENT,
                value=f"Texto redactado por: {report.writer}. Motivo: {report.writer_reason}"[
                    :1024
                ],
                relationship_type=_CONTAINS,
            )
        )
    for title, text in report.sections:
        section_name, item_name = codes.section_concepts(title)
        section = hd.sr.ContainerContentItem(name=section_name, relationship_type=_CONTAINS)
        section.ContentSequence = hd.sr.ContentSequence(
            [hd.sr.TextContentItem(name=item_name, value=text, relationship_type=_CONTAINS)]
        )
        items.append(section)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


class BasicTextSR(_SR):
    """SOP class for a Basic Text SR document (PS3.3 A.35.1).

    highdicom ships Enhanced / Comprehensive / Comprehensive 3D SR only; its common
    SR base already writes the patient, study, evidence and SR document modules,
    so this class only fixes the SOP class. Basic Text SR allows no NUM or SCOORD,
    which the narrative does not need.
    """

    def __init__(
        self,
        evidence: Sequence[Dataset],
        content: Dataset,
        series_instance_uid: str,
        series_number: int,
        sop_instance_uid: str,
        instance_number: int,
        **kwargs: object,
    ) -> None:
        super().__init__(
            evidence=evidence,
            content=content,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=BasicTextSRStorage,
            instance_number=instance_number,
            **kwargs,  # type: ignore[arg-type]
        )


class NarrativeReport(BasicTextSR):
    """The engine's Spanish narrative report (TID 2000) as a draft Basic Text SR.

    Completion Flag PARTIAL, Verification Flag UNVERIFIED, Preliminary Flag
    PRELIMINARY, Specific Character Set ISO_IR 192 (UTF-8).
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
        if not sources:
            raise ValueError("sources must hold at least one source image dataset")
        by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
        super().__init__(
            content=diagnostic_imaging_report(report, list(by_uid.values()), root=uid_root),
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            instance_number=instance_number,
            institution_name=institution_name,
            **draft_sr_arguments(report, list(by_uid.values())),
        )
        finish_draft_header(self, report)
