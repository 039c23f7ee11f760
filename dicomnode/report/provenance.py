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

import logging

import highdicom as hd
from pydicom import Dataset, config
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.valuerep import validate_value

from dicomnode.report import codes
from dicomnode.uids import DEFAULT_UID_ROOT, derive_uid
from engine.result import EngineIdentity, StudyReport

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


def finish_draft_header(dataset: Dataset, report: StudyReport) -> None:
    """Header attributes every draft object shares: description, equipment, local codes."""
    drop_invalid_copied_values(dataset)
    dataset.SeriesDescription = SERIES_DESCRIPTION_ES
    dataset.ManufacturerModelName = report.engine.name
    dataset.SoftwareVersions = [report.engine.version, report.engine.sha256]
    if any(f.code.scheme == codes.LOCAL_SCHEME for f in report.findings):
        item = Dataset()
        item.CodingSchemeDesignator = codes.LOCAL_SCHEME
        item.CodingSchemeName = codes.LOCAL_SCHEME_NAME
        item.CodingSchemeResponsibleOrganization = report.engine.manufacturer
        dataset.CodingSchemeIdentificationSequence = [item]
