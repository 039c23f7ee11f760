"""Which image of a study is the frontal one (and which the lateral)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.exceptions import NoUsableImageError
from engine.preprocessing import View

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

_FRONTAL_POSITIONS = {"PA", "AP"}
_LATERAL_POSITIONS = {"LL", "RL", "LAT", "LATERAL", "RLD", "LLD"}
# CID 4010 view codes (SNOMED CT and the legacy SRT codes still sent by many modalities).
_FRONTAL_CODES = {"399348003", "399182003", "R-10214", "R-10206", "R-10204"}
_LATERAL_CODES = {"399173006", "399198007", "R-10236", "R-10232", "R-10234"}
_FRONTAL_TEXT = re.compile(
    r"\b(pa|ap|frontal|frontale|postero-?anterior|antero-?posterior|posteroanterior|"
    r"anteroposterior)\b",
    re.IGNORECASE,
)
_LATERAL_TEXT = re.compile(r"\b(lat|lateral|ll|rl|perfil|lateral izq\w*|lateral der\w*)\b", re.I)


@dataclass(frozen=True)
class ViewGuess:
    view: View | None
    reason: str


def classify_view(ds: Dataset) -> ViewGuess:
    """Frontal or lateral from the header: ViewPosition, then ViewCodeSequence, then text."""
    position = str(getattr(ds, "ViewPosition", "") or "").strip().upper()
    if position in _FRONTAL_POSITIONS:
        return ViewGuess("frontal", f"ViewPosition {position}")
    if position in _LATERAL_POSITIONS:
        return ViewGuess("lateral", f"ViewPosition {position}")
    for item in getattr(ds, "ViewCodeSequence", None) or []:
        value = str(getattr(item, "CodeValue", "") or "")
        meaning = str(getattr(item, "CodeMeaning", "") or "").lower()
        if value in _FRONTAL_CODES or ("posterior" in meaning and "lateral" not in meaning):
            return ViewGuess("frontal", f"ViewCodeSequence {value} {meaning}".strip())
        if value in _LATERAL_CODES or "lateral" in meaning:
            return ViewGuess("lateral", f"ViewCodeSequence {value} {meaning}".strip())
    # ImageLaterality names the body side imaged, not the projection, so it is not a view hint.
    for keyword in (
        "SeriesDescription",
        "ProtocolName",
        "ImageComments",
        "AcquisitionDeviceProcessingDescription",
    ):
        text = str(getattr(ds, keyword, "") or "")
        if _LATERAL_TEXT.search(text):
            return ViewGuess("lateral", f"{keyword} {text!r}")
        if _FRONTAL_TEXT.search(text):
            return ViewGuess("frontal", f"{keyword} {text!r}")
    return ViewGuess(None, "no view in the header")


@dataclass(frozen=True)
class ViewSelection:
    frontal: Dataset
    lateral: Dataset | None
    frontal_reason: str
    lateral_reason: str = ""


def _has_pixels(ds: Dataset) -> bool:
    return "PixelData" in ds or "FloatPixelData" in ds


def _aspect(ds: Dataset) -> float:
    rows = int(getattr(ds, "Rows", 0) or 0)
    cols = int(getattr(ds, "Columns", 0) or 0)
    return cols / rows if rows else 0.0


def _instance_number(ds: Dataset) -> int:
    try:
        return int(getattr(ds, "InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def select_views(datasets: Sequence[Dataset]) -> ViewSelection:
    """Choose the frontal image of a study (PA before AP) and a lateral if there is one.

    Header first; when no image is labelled frontal the widest unlabelled image is taken
    (laterals are usually portrait, frontals square or landscape), then any image.
    """
    images = [ds for ds in datasets if _has_pixels(ds)]
    if not images:
        study = str(getattr(datasets[0], "StudyInstanceUID", "")) if datasets else ""
        raise NoUsableImageError(
            "the study holds no image with pixel data; nothing to report", study_instance_uid=study
        )
    guesses = [(ds, classify_view(ds)) for ds in images]
    frontals = [(ds, g) for ds, g in guesses if g.view == "frontal"]
    laterals = [(ds, g) for ds, g in guesses if g.view == "lateral"]
    unknown = [(ds, g) for ds, g in guesses if g.view is None]
    if frontals:
        frontals.sort(
            key=lambda item: (
                str(getattr(item[0], "ViewPosition", "")) != "PA",
                _instance_number(item[0]),
            )
        )
        frontal, reason = frontals[0][0], frontals[0][1].reason
    elif unknown:
        unknown.sort(key=lambda item: (-_aspect(item[0]), _instance_number(item[0])))
        frontal = unknown[0][0]
        reason = (
            f"fallback: widest image without a view in the header (aspect {_aspect(frontal):.2f})"
        )
        logger.warning("no frontal view labelled in the study; %s", reason)
    else:
        frontal = laterals[0][0]
        reason = "fallback: only lateral images in the study"
        logger.warning(
            "study has only lateral images; reporting on %s",
            getattr(frontal, "SOPInstanceUID", "?"),
        )
    lateral_candidates = [ds for ds, _ in laterals if ds is not frontal]
    if not lateral_candidates:
        lateral_candidates = [ds for ds, _ in unknown if ds is not frontal and _aspect(ds) < 1.0]
        lateral_reason = "fallback: portrait image without a view in the header"
    else:
        lateral_reason = "header"
    lateral = lateral_candidates[0] if lateral_candidates else None
    return ViewSelection(frontal, lateral, reason, lateral_reason if lateral is not None else "")
