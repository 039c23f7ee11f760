"""What the engine hands to the rest of the product: one study's findings and report text.

These plain, immutable types are the contract between the engine runtime and the
DICOM side (:mod:`dicomnode.sr`). They carry no model state and import nothing
heavy, so both sides can depend on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Presence = Literal["present", "absent", "uncertain"]
Laterality = Literal["left", "right", "bilateral"]

PRESENCE_VALUES: tuple[str, ...] = ("present", "absent", "uncertain")
LATERALITY_VALUES: tuple[str, ...] = ("left", "right", "bilateral")


@dataclass(frozen=True)
class FindingCode:
    """A coded concept: SNOMED CT (``SCT``) or RadLex (``RADLEX``), with its Spanish meaning."""

    value: str
    scheme: str
    meaning_es: str
    meaning_en: str = ""

    def __post_init__(self) -> None:
        if not self.value:
            raise ValueError("FindingCode.value must not be empty")
        if self.scheme not in ("SCT", "RADLEX", "DCM", "99CXR"):
            raise ValueError(f"FindingCode.scheme {self.scheme!r} is not SCT, RADLEX, DCM or 99CXR")
        if not self.meaning_es:
            raise ValueError("FindingCode.meaning_es must not be empty")
        if self.scheme == "99CXR" and len(self.value) > 16:
            raise ValueError(
                f"FindingCode.value {self.value!r} of the local scheme 99CXR exceeds the 16 "
                "characters of a DICOM Code Value; give the finding a shorter local code"
            )


@dataclass(frozen=True)
class Region:
    """An axis-aligned box on one source image, in that image's pixel grid (columns, rows)."""

    sop_instance_uid: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def __post_init__(self) -> None:
        if not self.sop_instance_uid:
            raise ValueError("Region.sop_instance_uid must not be empty")
        if not (self.x_min < self.x_max and self.y_min < self.y_max):
            raise ValueError(
                f"Region must have x_min < x_max and y_min < y_max, got "
                f"({self.x_min}, {self.y_min}, {self.x_max}, {self.y_max})"
            )


@dataclass(frozen=True)
class FindingResult:
    """One finding the model produced for a study."""

    key: str
    code: FindingCode
    presence: Presence
    probability: float
    laterality: Laterality | None = None
    region: Region | None = None

    def __post_init__(self) -> None:
        if self.presence not in PRESENCE_VALUES:
            raise ValueError(f"FindingResult.presence must be one of {PRESENCE_VALUES}")
        if not (0.0 <= self.probability <= 1.0) or math.isnan(self.probability):
            raise ValueError(f"FindingResult.probability must be in [0, 1], got {self.probability}")
        if self.laterality is not None and self.laterality not in LATERALITY_VALUES:
            raise ValueError(f"FindingResult.laterality must be one of {LATERALITY_VALUES}")


@dataclass(frozen=True)
class EngineIdentity:
    """Which engine produced a report: recorded in every output object for traceability."""

    name: str
    version: str
    sha256: str
    manufacturer: str = "CXR Reporting Node"

    def __post_init__(self) -> None:
        for attr in ("name", "version", "sha256"):
            if not getattr(self, attr):
                raise ValueError(f"EngineIdentity.{attr} must not be empty")


@dataclass(frozen=True)
class AnalysedImage:
    """One image the engine looked at, in which role, and why it chose that image.

    ``role`` is the model input slot (``"frontal"``, ``"lateral"``); ``view`` is the
    projection as the header (or dataset) named it (``"PA"``, ``"AP"``, ``"LL"``), empty
    when unknown; ``frame_number`` is the frame analysed in a multi-frame image (1-based).
    """

    sop_instance_uid: str
    role: str
    view: str = ""
    reason: str = ""
    frame_number: int = 1

    def __post_init__(self) -> None:
        if not self.sop_instance_uid:
            raise ValueError("AnalysedImage.sop_instance_uid must not be empty")
        if not self.role:
            raise ValueError("AnalysedImage.role must not be empty")
        if self.frame_number < 1:
            raise ValueError(f"AnalysedImage.frame_number must be >= 1, got {self.frame_number}")


@dataclass(frozen=True)
class StudyReport:
    """The engine's output for one study: coded findings and Spanish narrative sections.

    ``sections`` maps a section title as shown to the reader (``"Hallazgos"``,
    ``"Impresión"``) to its text, in reading order. ``analysed_images`` says which
    source images the model read, in which role and why (written into the report).
    """

    study_instance_uid: str
    source_sop_instance_uids: tuple[str, ...]
    findings: tuple[FindingResult, ...]
    sections: tuple[tuple[str, str], ...]
    engine: EngineIdentity
    language: str = "es"
    extra: dict[str, str] = field(default_factory=dict)
    analysed_images: tuple[AnalysedImage, ...] = ()
    #: Which report writer produced ``sections`` ("structured" or "neural") and why (e.g. the
    #: neural text contradicted a coded finding and was replaced); empty when not recorded.
    writer: str = ""
    writer_reason: str = ""

    def __post_init__(self) -> None:
        if not self.study_instance_uid:
            raise ValueError("StudyReport.study_instance_uid must not be empty")
        if not self.source_sop_instance_uids:
            raise ValueError("StudyReport.source_sop_instance_uids must name at least one image")
        if not self.sections:
            raise ValueError("StudyReport.sections must hold at least one section")
        for image in self.analysed_images:
            if image.sop_instance_uid not in self.source_sop_instance_uids:
                raise ValueError(
                    f"StudyReport.analysed_images names {image.sop_instance_uid}, which is "
                    "not one of source_sop_instance_uids"
                )
