"""The gate: is this image what the engine was made for (an adult human chest radiograph)?

The header part runs before any pixel is decoded: modality, presentation intent, image type,
species, body part, patient age, matrix size and field of view. An image that fails is never
given to the model; a study whose images all fail is *not reportable*, with every reason kept,
so the operator sees why no draft was written. The thresholds are the engine's (its manifest's
``gate``), because what is plausible depends on what the engine was trained on.

The image-based part (the distance of the encoder's features to the training distribution) is
calibrated at export and checked by the runtime after encoding; its threshold lives in the same
:class:`GateSpec`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

# SNOMED CT 337915000 "Homo sapiens", the species code of a human patient (CID 7454).
HUMAN_SPECIES_CODES = frozenset({"337915000", "L-85B00"})
_HUMAN_SPECIES_TEXT = re.compile(r"\b(homo sapiens|human|humano|humana)\b", re.IGNORECASE)
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}


class GateSpec(BaseModel):
    """What the engine accepts. Every bound is a setting of the engine, kept in its manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: tuple[str, ...] = ("CR", "DX")
    body_parts: tuple[str, ...] = Field(
        default=("CHEST", "THORAX", "TORAX", "TÓRAX", "LUNG", "PULMON", "PULMÓN", "PECHO"),
        description="Body Part Examined values taken as chest; an absent value is accepted.",
    )
    refused_image_types: tuple[str, ...] = ("LOCALIZER", "SCOUT", "DOSE_INFO", "SCREEN SAVE")
    min_patient_age_years: float | None = Field(
        default=12.0,
        description="Younger patients are refused (the engine learned adult anatomy); "
        "an absent or unreadable age is accepted.",
    )
    min_matrix: int = Field(default=256, ge=1, description="Smallest Rows or Columns accepted.")
    min_field_of_view_mm: float = Field(
        default=150.0,
        description="Smallest image extent (from the pixel spacing) plausible for an adult "
        "chest. Kept low on purpose: downsampled exports often keep the original spacing.",
    )
    max_field_of_view_mm: float = 650.0
    max_feature_distance: float | None = Field(
        default=None,
        description="Image-based check: largest distance of the encoder's features to the "
        "training distribution, calibrated on the validation split; None turns it off.",
    )


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one image: accepted when ``reasons`` is empty."""

    sop_instance_uid: str
    reasons: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        return not self.reasons


def patient_age_years(ds: Dataset) -> float | None:
    """Patient Age (``nnnD|W|M|Y``; a bare number read as years) in years, or None."""
    match = _AGE.match(str(getattr(ds, "PatientAge", "") or ""))
    if match is None:
        return None
    return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()]


def _is_non_human(ds: Dataset) -> str | None:
    for item in getattr(ds, "PatientSpeciesCodeSequence", None) or []:
        code = str(getattr(item, "CodeValue", "") or "")
        if code and code not in HUMAN_SPECIES_CODES:
            meaning = str(getattr(item, "CodeMeaning", "") or code)
            return f"the patient's species is {meaning!r}, not human"
    species = str(getattr(ds, "PatientSpeciesDescription", "") or "").strip()
    if species and not _HUMAN_SPECIES_TEXT.search(species):
        return f"the patient's species is {species!r}, not human"
    breed = str(getattr(ds, "PatientBreedDescription", "") or "").strip()
    if breed or getattr(ds, "PatientBreedCodeSequence", None):
        return f"the patient has a breed ({breed or 'coded'}): a veterinary image"
    return None


def _field_of_view_mm(ds: Dataset) -> float | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = getattr(ds, keyword, None)
        try:
            row_mm, col_mm = float(spacing[0]), float(spacing[1])  # type: ignore[index]
        except (TypeError, ValueError, IndexError):
            continue
        if row_mm > 0 and col_mm > 0:
            rows = int(getattr(ds, "Rows", 0) or 0)
            cols = int(getattr(ds, "Columns", 0) or 0)
            return max(rows * row_mm, cols * col_mm)
    return None


def check_image_header(ds: Dataset, spec: GateSpec) -> GateDecision:
    """Every reason the header gives to keep this image away from the engine."""
    reasons: list[str] = []
    modality = str(getattr(ds, "Modality", "") or "").strip().upper()
    if modality not in spec.modalities:
        reasons.append(
            f"Modality {modality or '(absent)'} is not one the engine reads "
            f"({', '.join(spec.modalities)})"
        )
    intent = str(getattr(ds, "PresentationIntentType", "") or "").strip().upper()
    if intent == "FOR PROCESSING":
        reasons.append(
            "a DX image For Processing holds raw detector data; send the For Presentation image"
        )
    image_type = {str(v).strip().upper() for v in (getattr(ds, "ImageType", None) or [])}
    refused_types = sorted(image_type & {t.upper() for t in spec.refused_image_types})
    if refused_types:
        reasons.append(f"Image Type {'/'.join(refused_types)} is not a diagnostic radiograph")
    non_human = _is_non_human(ds)
    if non_human:
        reasons.append(non_human)
    body_part = str(getattr(ds, "BodyPartExamined", "") or "").strip().upper()
    if body_part and body_part not in {b.upper() for b in spec.body_parts}:
        reasons.append(f"Body Part Examined {body_part} is not the chest")
    age = patient_age_years(ds)
    minimum_age = spec.min_patient_age_years
    if age is not None and minimum_age is not None and age < minimum_age:
        reasons.append(
            f"patient age {age:.1f} years is below the engine's minimum of "
            f"{minimum_age:g} (it learned adult anatomy)"
        )
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    if min(rows, cols) < spec.min_matrix:
        reasons.append(
            f"the image is {cols}x{rows} pixels, below the {spec.min_matrix} pixels a chest "
            "radiograph has on its shorter side"
        )
    fov = _field_of_view_mm(ds)
    if fov is not None and not spec.min_field_of_view_mm <= fov <= spec.max_field_of_view_mm:
        reasons.append(
            f"the image covers {fov:.0f} mm, outside the {spec.min_field_of_view_mm:.0f}-"
            f"{spec.max_field_of_view_mm:.0f} mm of an adult chest radiograph"
        )
    return GateDecision(str(getattr(ds, "SOPInstanceUID", "") or ""), tuple(reasons))


def check_study_headers(
    datasets: Sequence[Dataset], spec: GateSpec
) -> tuple[list[Dataset], list[GateDecision]]:
    """The images the engine may look at, and the gate's decision on every image."""
    decisions = [check_image_header(ds, spec) for ds in datasets]
    accepted = [ds for ds, d in zip(datasets, decisions, strict=True) if d.accepted]
    for decision in decisions:
        if not decision.accepted:
            logger.info(
                "gate refuses image %s: %s", decision.sop_instance_uid, "; ".join(decision.reasons)
            )
    return accepted, decisions


def refusal_summary(decisions: Sequence[GateDecision]) -> str:
    """One line an operator can read: why no image of the study was accepted."""
    parts = [f"{d.sop_instance_uid or '?'}: {'; '.join(d.reasons)}" for d in decisions if d.reasons]
    return "not a chest radiograph the engine was made for — " + " | ".join(parts)
