"""Where a report came from: the engine's identity as DICOM provenance, and the disclaimer.

IHE AI Results (AIR) asks result objects to name the algorithm in three places,
all built here from one :class:`engine.result.EngineIdentity`:

- Contributing Equipment Sequence (0018,A001), purpose "Processing Equipment"
  (DCM 109102), with manufacturer, model name = engine name and software versions
  = engine version and the artifact's sha256;
- TID 4019 Algorithm Identification on every measurement;
- TID 1004 Device Observer in the observation context (TID 1001).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from typing import Any

import highdicom as hd
from pydicom import Dataset, config
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.valuerep import validate_value

from dicomnode.report import codes
from dicomnode.uids import DEFAULT_UID_ROOT, derive_uid
from engine.result import AnalysedImage, EngineIdentity, StudyReport

logger = logging.getLogger(__name__)

#: First line of every document: what this is and what must happen before it is used.
DISCLAIMER_ES = (
    "BORRADOR PRELIMINAR GENERADO AUTOMÁTICAMENTE. No es un informe definitivo: debe ser "
    "revisado y validado por un radiólogo antes de cualquier uso clínico."
)

#: Shown in PACS study browsers next to the series.
SERIES_DESCRIPTION_ES = "Borrador IA sin validar"


def disclaimer_text(engine: EngineIdentity) -> str:
    """The disclaimer followed by which engine wrote the draft."""
    return (
        f"{DISCLAIMER_ES} Generado por {engine.name} versión {engine.version} "
        f"(sha256 {engine.sha256})."
    )


def contributing_equipment(engine: EngineIdentity) -> hd.ContributingEquipment:
    """The engine as Contributing Equipment (IHE AIR): who processed the images."""
    return hd.ContributingEquipment(
        manufacturer=engine.manufacturer,
        purpose_of_reference=dicom_codes.DCM.ProcessingEquipment,
        manufacturer_model_name=engine.name,
        # Software Versions is multi-valued LO (64 chars each): a sha256 hex digest fits.
        software_versions=[engine.version, engine.sha256],
        contribution_description=(
            f"Borrador de informe generado automáticamente por {engine.name} "
            f"{engine.version} (sha256 {engine.sha256})"
        ),
    )


def algorithm_identification(engine: EngineIdentity) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification: name, version, manufacturer and the artifact hash."""
    return hd.sr.AlgorithmIdentification(
        name=engine.name,
        version=engine.version,
        parameters=[f"sha256={engine.sha256}"],
        manufacturer=engine.manufacturer,
    )


def device_observer_uid(engine: EngineIdentity, *, root: str = DEFAULT_UID_ROOT) -> str:
    """A stable Device Observer UID for one engine artifact."""
    return derive_uid("device-observer", engine.sha256, root=root)


def observation_context(
    engine: EngineIdentity, *, root: str = DEFAULT_UID_ROOT
) -> hd.sr.ObservationContext:
    """TID 1001 with the engine as the (device) observer: no person has seen this draft."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_observer_uid(engine, root=root),
        name=engine.name,
        manufacturer_name=engine.manufacturer,
        model_name=f"{engine.name} {engine.version}",
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=dicom_codes.DCM.Device,
            observer_identifying_attributes=device,
        )
    )


#: Optional (type 3) Patient Study / Patient attributes highdicom copies from the source.
_OPTIONAL_COPIED = (
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "AdditionalPatientHistory",
    "EthnicGroup",
    "PatientComments",
    "SmokingStatus",
    "PregnancyStatus",
)


def drop_invalid_copied_values(dataset: Dataset) -> None:
    """Remove optional patient attributes whose source value breaks its VR.

    Real sources carry values such as Patient's Age "62" (AS needs "062Y"); copied
    verbatim they would make the output invalid, and they are not needed in a report.
    """
    for keyword in _OPTIONAL_COPIED:
        if keyword not in dataset:
            continue
        element = dataset[keyword]
        try:
            validate_value(element.VR, element.value, config.RAISE)
        except ValueError as exc:
            logger.warning("dropping %s copied from the source: %s", keyword, exc)
            del dataset[keyword]


#: Referenced Request Sequence item attributes (PS3.3 Table C.17-3) copied from a source's
#: Request Attributes item; type 2 ones are written empty when the source lacks them.
_REQUEST_TYPE2 = (
    "AccessionNumber",
    "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
)
_REQUEST_SEQUENCES = (
    "IssuerOfAccessionNumberSequence",
    "OrderPlacerIdentifierSequence",
    "OrderFillerIdentifierSequence",
)


def referenced_requests(sources: Sequence[Dataset]) -> list[Dataset] | None:
    """Referenced Request Sequence items: the orders the sources were acquired for.

    Copied from each source's Request Attributes Sequence (0040,0275), so a RIS can attach
    the draft to its order; the image's own Accession Number fills an item that has none.
    ``None`` when no source names a request (the attribute is then left out, as 1C allows).
    """
    items: dict[tuple[str, ...], Dataset] = {}
    for source in sources:
        for request in source.get("RequestAttributesSequence") or []:
            item = Dataset()
            item.StudyInstanceUID = request.get("StudyInstanceUID") or source.StudyInstanceUID
            item.ReferencedStudySequence = [
                copy.deepcopy(ref) for ref in request.get("ReferencedStudySequence") or []
            ]
            for keyword in _REQUEST_TYPE2:
                value = request.get(keyword) or ""
                if keyword == "AccessionNumber" and not value:
                    value = source.get("AccessionNumber") or ""
                setattr(item, keyword, value)
            item.RequestedProcedureCodeSequence = [
                copy.deepcopy(code) for code in request.get("RequestedProcedureCodeSequence") or []
            ][:1]
            for keyword in _REQUEST_SEQUENCES:
                if request.get(keyword):
                    setattr(item, keyword, copy.deepcopy(request[keyword]))
            key = tuple(str(item.get(k, "")) for k in ("StudyInstanceUID", *_REQUEST_TYPE2))
            items.setdefault(key, item)
    return list(items.values()) or None


def performed_procedure_codes(sources: Sequence[Dataset]) -> list[hd.sr.CodedConcept]:
    """The study's Procedure Code Sequence from the sources; a plain chest radiograph when
    no source carries one (the node reports chest radiographs only)."""
    found: dict[tuple[str, str], hd.sr.CodedConcept] = {}
    for source in sources:
        for item in source.get("ProcedureCodeSequence") or []:
            try:
                concept = hd.sr.CodedConcept.from_dataset(item)
            except (AttributeError, TypeError, ValueError) as exc:
                logger.warning("ignoring a malformed Procedure Code Sequence item: %s", exc)
                continue
            found.setdefault((concept.value, concept.scheme_designator), concept)
    return list(found.values()) or [codes.CHEST_RADIOGRAPH]


def draft_sr_arguments(report: StudyReport, evidence: Sequence[Dataset]) -> dict[str, Any]:
    """The highdicom SR constructor arguments every draft document shares: a preliminary,
    unverified document from the engine, in UTF-8, with the source images' procedures."""
    return {
        "evidence": list(evidence),
        "manufacturer": report.engine.manufacturer,
        "is_complete": False,
        "is_final": False,
        "is_verified": False,
        "performed_procedure_codes": performed_procedure_codes(evidence),
        "requested_procedures": referenced_requests(evidence),
        "contributing_equipment": [contributing_equipment(report.engine)],
        "specific_character_set": "ISO_IR 192",
    }


def finish_draft_header(dataset: Dataset, report: StudyReport) -> None:
    """Header attributes every draft object shares: description, equipment, local codes."""
    drop_invalid_copied_values(dataset)
    dataset.SeriesDescription = SERIES_DESCRIPTION_ES
    dataset.ManufacturerModelName = report.engine.name
    dataset.SoftwareVersions = [report.engine.version, report.engine.sha256]
    # Declared only where one of its codes is actually written (not in the narrative or GSPS).
    if codes.uses_scheme(dataset, codes.LOCAL_SCHEME):
        item = Dataset()
        item.CodingSchemeDesignator = codes.LOCAL_SCHEME
        item.CodingSchemeName = codes.LOCAL_SCHEME_NAME
        item.CodingSchemeResponsibleOrganization = report.engine.manufacturer
        dataset.CodingSchemeIdentificationSequence = [item]


def analysed_images(report: StudyReport, sources: Sequence[Dataset]) -> tuple[AnalysedImage, ...]:
    """Which source images the model read, in which role and why.

    Engines before :attr:`StudyReport.analysed_images` listed the frontal image first and its
    selection reason in ``extra["view_selection"]``: that is what such reports get.
    """
    if report.analysed_images:
        return report.analysed_images
    first = report.source_sop_instance_uids[0]
    header = next((ds for ds in sources if ds.SOPInstanceUID == first), None)
    view = str(header.get("ViewPosition", "") or "").strip().upper() if header else ""
    return (AnalysedImage(first, "frontal", view, report.extra.get("view_selection", "")),)


def analysed_frame(report: StudyReport, source: Dataset) -> int | None:
    """The frame the engine read of a multi-frame ``source`` (``None`` for a single frame)."""
    if int(source.get("NumberOfFrames") or 1) <= 1:
        return None
    for image in report.analysed_images:
        if image.sop_instance_uid == source.SOPInstanceUID:
            return image.frame_number
    return 1  # the engine's preprocessing reads the first frame


_ROLE_ES = {"frontal": "frontal", "lateral": "lateral"}
_REASON_ES = (
    (re.compile(r"^ViewPosition (\w+)$"), r"proyección \1 según la cabecera DICOM (ViewPosition)"),
    (re.compile(r"^ViewCodeSequence (.+)$"), r"código de proyección de la cabecera DICOM (\1)"),
    (re.compile(r"^header$"), "proyección indicada en la cabecera DICOM"),
    (re.compile(r"^view (\w+) \(dataset\)$"), r"proyección \1 indicada en los datos"),
    (
        re.compile(r"^fallback: widest image without a view in the header.*$"),
        "ninguna imagen indica su proyección; se tomó la más ancha como frontal",
    ),
    (
        re.compile(r"^fallback: portrait image without a view in the header$"),
        "ninguna imagen indica proyección lateral; se tomó una imagen vertical",
    ),
    (
        re.compile(r"^fallback: only lateral images in the study$"),
        "el estudio solo contiene proyecciones laterales",
    ),
)


def _reason_es(reason: str) -> str:
    for pattern, spanish in _REASON_ES:
        if pattern.match(reason):
            return pattern.sub(spanish, reason)
    return reason  # a reason this node does not know yet: shown as the engine wrote it


_GATE_DISTANCE = re.compile(r"^feature distance (\d+(?:\.\d+)?) \(at most (\d+(?:\.\d+)?)\)$")


def _decimal_es(number: str) -> str:
    return number.replace(".", ",")


def image_gate_text(report: StudyReport) -> str | None:
    """The engine's image check (``extra["image_gate"]``) as a Spanish sentence: how far the
    image's features lie from the training images', beside the distance above which the engine
    refuses a study, so that a reader sees a draft written near that edge. ``None`` when the
    engine records no check."""
    verdict = report.extra.get("image_gate", "").strip()
    if not verdict:
        return None
    distance = _GATE_DISTANCE.match(verdict)
    if distance is not None:
        value, limit = (_decimal_es(g) for g in distance.groups())
        return (
            f"Control de la imagen: distancia {value} a las radiografías de entrenamiento del "
            f"algoritmo (rechaza las imágenes por encima de {limit})."
        )
    if verdict.startswith("off"):
        return "Control de la imagen: no aplicado por este motor."
    return f"Control de la imagen: {verdict}."  # a verdict this node does not know yet


def analysed_images_text(report: StudyReport, sources: Sequence[Dataset]) -> str:
    """A Spanish sentence naming each image the model read, its view, frame and why, then the
    engine's check of the image (:func:`image_gate_text`) when it records one."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    parts = []
    for image in analysed_images(report, sources):
        text = f"imagen {_ROLE_ES.get(image.role, image.role)}"
        if image.view:
            text += f" (proyección {image.view})"
        text += f", SOP Instance UID {image.sop_instance_uid}"
        source = by_uid.get(image.sop_instance_uid)
        frames = int(source.get("NumberOfFrames") or 1) if source is not None else 1
        if frames > 1:
            text += f", fotograma {image.frame_number} de {frames}"
        if image.reason:
            text += f"; elegida por: {_reason_es(image.reason)}"
        parts.append(text)
    noun = "Imagen analizada" if len(parts) == 1 else "Imágenes analizadas"
    text = f"{noun} por el algoritmo: " + "; ".join(parts) + "."
    gate = image_gate_text(report)
    return text if gate is None else f"{text} {gate}"
