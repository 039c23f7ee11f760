"""Which image of a study is the frontal one, and which the lateral.

Every header signal is read, in this order (the first one that names a view decides; the others
are checked against it):

1. View Position (0018,5101): PA, AP, and the decubitus positions RLD/LLD (frontal projections
   taken with a horizontal beam) are frontal; LL, RL, LATERAL are lateral; RAO/LAO/RPO/LPO and
   other obliques are oblique.
2. View Code Sequence (0054,0220), CID 4010 codes (SNOMED CT and the legacy SRT codes):
   frontal, postero-anterior, antero-posterior are frontal; lateral, left/right lateral,
   sagittal are lateral; every oblique code is oblique; unknown codes by their meaning.
3. Body Part Examined (0018,0015): not a view, but an image of another part (ABDOMEN, SKULL...)
   is never analysed; CHEST/THORAX/TORAX/PECHO (or silence) is.
4. Image Laterality (0020,0062): "B" (both sides) is frontal; L/R name the side imaged, not the
   projection (a left lateral and a left-sided frontal alike), so they decide nothing.
5. Patient Orientation (0020,0020): a row or column along anterior/posterior (A, P) is a
   lateral; rows and columns along left/right and head/foot (L/R with H/F) are frontal.
6. Series Description, Protocol Name, Image Comments, Acquisition Device Processing
   Description, in English and Spanish ("PA", "frontal", "decúbito", "LAT", "perfil",
   "oblicua"...). Text naming both a frontal and a lateral view ("CHEST PA AND LATERAL",
   "TORAX PA Y LAT") describes the study, not the image, and decides nothing.

Where the header is silent, or its signals contradict each other, the pixels decide
(:mod:`engine.view_model`, P(frontal) >= 0.5); a contradictory header whose pixels cannot be read
falls back to its first signal in the order above. Obliques are neither frontal nor lateral and are
not analysed. Among frontals: header before pixels, PA before AP before decubitus, then the
highest P(frontal), then Instance Number and SOP Instance UID (never arrival order). A study
without a usable frontal image is not reported: :class:`~engine.exceptions.NoUsableImageError`
says why, image by image.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from engine.exceptions import (
    NoFrontalImageError,
    NoUsableImageError,
    PixelDecodeError,
    StudyError,
)
from engine.view_model import THRESHOLD, frontal_probability

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

ViewName = Literal["frontal", "lateral", "oblique"]
_T = TypeVar("_T")

_FRONTAL_POSITIONS = {"PA", "AP", "PA_ERECT", "AP_SUPINE", "AP_ERECT"}
_DECUBITUS_POSITIONS = {"RLD", "LLD", "DECUBITUS", "AP_DECUBITUS", "PA_DECUBITUS"}
_LATERAL_POSITIONS = {"LL", "RL", "LAT", "LATERAL", "LARGE_LATERAL", "L", "R_LAT", "L_LAT"}
_OBLIQUE_POSITIONS = {"RAO", "LAO", "RPO", "LPO", "RLO", "LLO", "OBL", "OBLIQUE"}
# CID 4010 "DX View": SNOMED CT, then the legacy SNOMED RT (SRT/SNM3) codes still sent.
_FRONTAL_CODES = {
    "399033003": "",  # frontal
    "272479007": "PA",  # postero-anterior
    "399348003": "AP",  # antero-posterior
    "R-10202": "",
    "R-10214": "PA",
    "R-10206": "AP",
}
_LATERAL_CODES = {
    "399067008", "399198007", "399173006", "30730003",  # lateral, right/left lateral, sagittal
    "R-102CD", "R-10232", "R-10236", "G-A145",
}
_OBLIQUE_CODES = {
    "399160007", "399312000", "399038007", "399006002", "399059000", "399356000", "399135007",
    "260427002", "260426006", "399236003", "399184004", "399182000", "399099002", "399368009",
    "R-102C1", "R-10216", "R-10220", "R-10224", "R-10226", "R-10228", "R-10230", "R-40985",
}
_CHEST_PARTS = re.compile(r"\b(chest|thorax|torax|pecho|lung|lungs|pulmon|ribs?)\b")
_DECUBITUS_TEXT = re.compile(r"\b(decubitus|decubito)\b")
_OBLIQUE_TEXT = re.compile(r"\b(obl|oblique|obliqua|oblicua|oblicuo|rao|lao|rpo|lpo)\b")
_LATERAL_TEXT = re.compile(r"\b(lat|lateral|lateralis|perfil|ll|rl|sagittal|sagital)\b")
_FRONTAL_TEXT = re.compile(
    r"\b(pa|ap|frontal|frontale|postero ?anterior|antero ?posterior|posteroanterior|"
    r"anteroposterior|portable|portatil)\b"
)
_TEXT_KEYWORDS = (
    "SeriesDescription",
    "ProtocolName",
    "ImageComments",
    "AcquisitionDeviceProcessingDescription",
)
_HEADER_KEYWORDS = (
    "ViewPosition",
    "ViewCodeSequence",
    "BodyPartExamined",
    "ImageLaterality",
    "PatientOrientation",
    *_TEXT_KEYWORDS,
)


@dataclass(frozen=True)
class ViewSignal:
    """One header element's say: which element, what it says, and the value read."""

    source: str
    view: ViewName
    value: str
    projection: str = ""  # "PA", "AP", "DECUBITUS" or "" for frontal signals


@dataclass(frozen=True)
class ViewGuess:
    """What the header says about one image.

    ``view`` is None when the header is silent or ``contradictory``; ``chest`` is False when
    Body Part Examined names another part (the image is not analysed), None when silent.
    """

    view: ViewName | None
    reason: str
    signals: tuple[ViewSignal, ...] = ()
    contradictory: bool = False
    chest: bool | None = None
    projection: str = ""


def _plain(text: str) -> str:
    """Lower case, accents off, punctuation to spaces: "TÓRAX PA/LAT" -> "torax pa lat"."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", " ", ascii_text.lower()).strip()


def _position_signal(value: str) -> ViewSignal | None:
    key = re.sub(r"[\s\-]+", "_", value.strip().upper())
    if not key:
        return None
    if key in _DECUBITUS_POSITIONS:
        return ViewSignal("ViewPosition", "frontal", value, "DECUBITUS")
    if key in _FRONTAL_POSITIONS:
        return ViewSignal("ViewPosition", "frontal", value, key[:2])
    if key in _LATERAL_POSITIONS:
        return ViewSignal("ViewPosition", "lateral", value)
    if key in _OBLIQUE_POSITIONS:
        return ViewSignal("ViewPosition", "oblique", value)
    return _text_signal("ViewPosition", value)


def _code_signal(value: str, meaning: str) -> ViewSignal | None:
    label = f"{value} {meaning}".strip()
    if value in _FRONTAL_CODES:
        return ViewSignal("ViewCodeSequence", "frontal", label, _FRONTAL_CODES[value])
    if value in _LATERAL_CODES:
        return ViewSignal("ViewCodeSequence", "lateral", label)
    if value in _OBLIQUE_CODES:
        return ViewSignal("ViewCodeSequence", "oblique", label)
    return _text_signal("ViewCodeSequence", label)


def _text_signal(source: str, text: str) -> ViewSignal | None:
    plain = _plain(text)
    if not plain:
        return None
    if _DECUBITUS_TEXT.search(plain):
        return ViewSignal(source, "frontal", text, "DECUBITUS")
    if _OBLIQUE_TEXT.search(plain):
        return ViewSignal(source, "oblique", text)
    frontal = _FRONTAL_TEXT.search(plain)
    lateral = _LATERAL_TEXT.search(plain)
    if frontal and lateral:
        return None  # "PA and lateral": the study's views, not this image's
    if frontal:
        word = frontal.group(1).replace(" ", "")
        projection = {"pa": "PA", "posteroanterior": "PA", "ap": "AP", "anteroposterior": "AP",
                      "portable": "AP", "portatil": "AP"}.get(word, "")
        return ViewSignal(source, "frontal", text, projection)
    if lateral:
        return ViewSignal(source, "lateral", text)
    return None


def _orientation_signal(values: Sequence[str]) -> ViewSignal | None:
    letters = [str(v).strip().upper()[:1] for v in values if str(v).strip()]
    if len(letters) != 2:
        return None
    text = "\\".join(str(v) for v in values)
    if any(letter in "AP" for letter in letters):
        return ViewSignal("PatientOrientation", "lateral", text)
    if any(letter in "LR" for letter in letters) and any(letter in "HF" for letter in letters):
        return ViewSignal("PatientOrientation", "frontal", text)
    return None


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value)


def classify_header(header: Mapping[str, Any]) -> ViewGuess:
    """The view one image's header gives (see the module docstring for the order).

    ``header`` maps DICOM keywords to values: a pydicom Dataset, or a dict (e.g. a row of a
    header table). ``ViewCodeSequence`` items need ``CodeValue`` and ``CodeMeaning``;
    ``PatientOrientation`` is two values (a list, or "L\\F").
    """
    signals: list[ViewSignal] = []
    chest: bool | None = None
    position = _as_text(header.get("ViewPosition"))
    if (signal := _position_signal(position)) is not None:
        signals.append(signal)
    for item in header.get("ViewCodeSequence") or []:
        value = _as_text(item.get("CodeValue")).strip()
        meaning = _as_text(item.get("CodeMeaning")).strip()
        if (signal := _code_signal(value, meaning)) is not None:
            signals.append(signal)
            break
    body_part = _as_text(header.get("BodyPartExamined")).strip()
    if body_part:
        chest = bool(_CHEST_PARTS.search(_plain(body_part)))
    if _as_text(header.get("ImageLaterality")).strip().upper() == "B":
        signals.append(ViewSignal("ImageLaterality", "frontal", "B"))
    orientation = header.get("PatientOrientation")
    if isinstance(orientation, str):
        orientation = re.findall(r"[A-Za-z]+", orientation)  # "L\\F", "['L', 'F']"
    if orientation and (signal := _orientation_signal(list(orientation))) is not None:
        signals.append(signal)
    for keyword in _TEXT_KEYWORDS:
        text = _as_text(header.get(keyword))
        if text and (signal := _text_signal(keyword, text)) is not None:
            signals.append(signal)
    return _decide(signals, chest, body_part)


def _decide(signals: list[ViewSignal], chest: bool | None, body_part: str) -> ViewGuess:
    if not signals:
        return ViewGuess(None, "no view in the header", (), chest=chest)
    first = signals[0]
    others = {s.view for s in signals if s.view != first.view}
    described = "; ".join(f"{s.source} {s.value!r} says {s.view}" for s in signals)
    if others:
        return ViewGuess(
            None, f"header contradicts itself: {described}", tuple(signals), True, chest
        )
    projection = next((s.projection for s in signals if s.projection), "")
    reason = f"{first.source} {first.value!r}"
    if not chest and chest is not None:
        reason += f" (Body Part Examined {body_part!r})"
    return ViewGuess(first.view, reason, tuple(signals), False, chest, projection)


def _header_of(ds: Dataset) -> dict[str, Any]:
    header: dict[str, Any] = {}
    for keyword in _HEADER_KEYWORDS:
        value = getattr(ds, keyword, None)
        if keyword == "ViewCodeSequence" and value is not None:
            value = [
                {"CodeValue": i.get("CodeValue", ""), "CodeMeaning": i.get("CodeMeaning", "")}
                for i in value
            ]
        elif keyword == "PatientOrientation" and value is not None and not isinstance(value, str):
            value = [str(v) for v in value]
        header[keyword] = value
    return header


def classify_view(ds: Dataset) -> ViewGuess:
    """The view the header of a pydicom dataset gives (no pixels read)."""
    return classify_header(_header_of(ds))


# ---------------------------------------------------------------------------------------------
# Choosing within a study: one function for DICOM datasets and for image files alike


@dataclass
class ViewCandidate(Generic[_T]):
    """One image of a study: the item (a Dataset, a Path), its header guess, a stable sort key
    and a way to get P(frontal) from its pixels (None when they cannot be read)."""

    item: _T
    guess: ViewGuess
    sort_key: tuple[Any, ...]
    pixels: Callable[[], float | None]
    name: str = ""
    probability: float | None = field(default=None, init=False)
    decided: ViewName | None = field(default=None, init=False)
    how: str = field(default="", init=False)


@dataclass(frozen=True)
class ViewChoice(Generic[_T]):
    frontal: _T
    lateral: _T | None
    frontal_reason: str
    lateral_reason: str
    #: What became of every image (name -> "frontal: ...", "not analysed: ..."), for the logs.
    outcomes: tuple[tuple[str, str], ...]


_PROJECTION_RANK = {"PA": 0, "AP": 1, "": 2, "DECUBITUS": 3}


def choose_views(candidates: Sequence[ViewCandidate[_T]], study: str) -> ViewChoice[_T]:
    """Header decides where it is clear; pixels where it is silent or contradicts itself."""
    outcomes: list[tuple[str, str]] = []
    undecodable = 0
    for c in candidates:
        g = c.guess
        if g.chest is False:
            c.how = f"not analysed: Body Part Examined is not a chest ({g.reason})"
        elif g.view is not None:
            c.decided, c.how = g.view, f"header: {g.reason}"
        else:
            try:
                c.probability = c.pixels()
            except StudyError as exc:
                undecodable += isinstance(exc, PixelDecodeError)
                c.how = f"not analysed: {exc}"
                outcomes.append((c.name, c.how))
                continue
            if c.probability is None and g.contradictory:
                # No pixels to settle it: the first signal in the stated order stands.
                c.decided = g.signals[0].view
                c.how = f"header, first signal of contradictory ones: {g.reason}"
            elif c.probability is None:
                c.how = f"not analysed: {g.reason}, and no readable pixels"
            else:
                c.decided = "frontal" if c.probability >= THRESHOLD else "lateral"
                c.how = f"pixels: P(frontal) {c.probability:.2f} ({g.reason})"
        if c.decided == "oblique":
            c.how = f"not analysed: oblique view ({c.how})"
        outcomes.append((c.name, f"{c.decided or 'none'}: {c.how}"))
    frontals = [c for c in candidates if c.decided == "frontal"]
    if not frontals:
        summary = "; ".join(f"{name}: {how}" for name, how in outcomes) or "no image"
        if candidates and undecodable == len(candidates):
            raise PixelDecodeError(
                f"study {study}: no image could be decoded, so it is not reported ({summary})",
                study_instance_uid=study,
            )
        raise NoFrontalImageError(
            f"study {study}: no usable frontal chest image, so it is not reported ({summary})",
            study_instance_uid=study,
        )
    frontals.sort(
        key=lambda c: (
            c.guess.view != "frontal",  # header before pixels
            _PROJECTION_RANK.get(c.guess.projection, 2),
            c.guess.chest is not True,
            -(c.probability or 0.0),
            c.sort_key,
        )
    )
    frontal = frontals[0]
    laterals = [c for c in candidates if c.decided == "lateral" and c is not frontal]
    laterals.sort(key=lambda c: (c.guess.view != "lateral", c.probability or 0.0, c.sort_key))
    lateral = laterals[0] if laterals else None
    if frontal.guess.view is None:
        logger.info("study %s: frontal chosen by its pixels: %s", study, frontal.how)
    return ViewChoice(
        frontal.item,
        lateral.item if lateral is not None else None,
        frontal.how,
        lateral.how if lateral is not None else "",
        tuple(outcomes),
    )


@dataclass(frozen=True)
class ViewSelection:
    frontal: Dataset
    lateral: Dataset | None
    frontal_reason: str
    lateral_reason: str = ""


def _instance_number(ds: Dataset) -> int:
    try:
        return int(getattr(ds, "InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _dataset_probability(ds: Dataset) -> float | None:
    from engine.preprocessing import dicom_to_display

    return frontal_probability(dicom_to_display(ds))


def select_views(datasets: Sequence[Dataset]) -> ViewSelection:
    """Choose the frontal image of a study and a lateral if there is one (module docstring).

    Raises :class:`NoUsableImageError` naming each image's fate when none is a usable frontal.
    """
    study = str(getattr(datasets[0], "StudyInstanceUID", "") or "") if datasets else ""
    images = [ds for ds in datasets if "PixelData" in ds or "FloatPixelData" in ds]
    if not images:
        raise NoUsableImageError(
            "the study holds no image with pixel data; nothing to report", study_instance_uid=study
        )
    candidates = [
        ViewCandidate(
            ds,
            classify_view(ds),
            (_instance_number(ds), str(getattr(ds, "SOPInstanceUID", ""))),
            lambda ds=ds: _dataset_probability(ds),  # type: ignore[misc]
            str(getattr(ds, "SOPInstanceUID", "") or "?"),
        )
        for ds in images
    ]
    choice = choose_views(candidates, study)
    return ViewSelection(
        choice.frontal, choice.lateral, choice.frontal_reason, choice.lateral_reason
    )


def _file_probability(path: Path, study: str) -> float | None:
    from engine.preprocessing import image_file_to_display

    try:
        display = image_file_to_display(path)
    except FileNotFoundError as exc:
        raise NoUsableImageError(
            f"image file {exc.filename} not found; check the dataset's image folder",
            study_instance_uid=study,
        ) from exc
    except (OSError, ValueError) as exc:  # Pillow: UnidentifiedImageError, truncated data
        raise PixelDecodeError(
            f"cannot read image file {path.name} ({exc})", study_instance_uid=study
        ) from exc
    return frontal_probability(display)


def select_view_files(
    images: Sequence[tuple[str | Path, str | None]], study: str
) -> tuple[Path, Path | None, str]:
    """Frontal file, lateral file or None, and why, for a study given as image files with the
    views its dataset gives (``"PA"``, ``"AP"``, ``"LATERAL"``, ``"LL"``, ``"RL"``, or
    None/``"UNKNOWN"``): the rule of :func:`choose_views`, the dataset's view standing in for
    View Position and the pixels deciding unlabelled images. Raises
    :class:`NoUsableImageError` when no image is a usable frontal."""
    if not images:
        raise NoUsableImageError(
            f"study {study}: no image file; nothing to report", study_instance_uid=study
        )
    candidates = []
    for index, (raw_path, raw_view) in enumerate(images):
        path = Path(raw_path)
        view = (raw_view or "").strip().upper()
        guess = classify_header({"ViewPosition": "" if view in ("", "UNKNOWN") else view})
        if guess.view is not None:
            guess = replace(guess, reason=f"view {view} (dataset)")
        candidates.append(
            ViewCandidate(
                path,
                guess,
                (index,),
                lambda path=path: _file_probability(path, study),  # type: ignore[misc]
                path.name,
            )
        )
    choice = choose_views(candidates, study)
    return choice.frontal, choice.lateral, choice.frontal_reason
