"""One record type for every dataset: a study, its images, its report per language, its labels.

Adapters in :mod:`training.data` turn each public layout into :class:`StudyRecord` objects, so
that training and evaluation never look at a dataset's own file format.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from training.findings import FINDINGS_BY_KEY, PRESENCE_VALUES, Presence

logger = logging.getLogger(__name__)

__all__ = ["PRESENCE_VALUES", "Box", "ImageRef", "Presence", "StudyRecord"]

#: Canonical view names; adapters map each dataset's spelling onto these.
VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL", "LL", "RL", "UNKNOWN")
SPLITS: tuple[str, ...] = ("train", "val", "test")
LANGUAGES: tuple[str, ...] = ("en", "es")
#: Report sections kept, in reading order.
SECTIONS: tuple[str, ...] = ("findings", "impression")

_VIEW_ALIASES = {
    "PA": "PA",
    "POSTERO_ANTERIOR": "PA",
    "FRONTAL": "UNKNOWN",
    "AP": "AP",
    "AP_SUPINE": "AP",
    "AP_HORIZONTAL": "AP",
    "ANTERO_POSTERIOR": "AP",
    "LATERAL": "LATERAL",
    "LAT": "LATERAL",
    "L": "LATERAL",
    "LL": "LL",
    "RL": "RL",
}

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
}


def normalize_view(raw: str | None) -> str:
    """A dataset's view spelling (``"PA"``, ``"postero_anterior"``, ``"L"``...) as one of VIEWS."""
    if raw is None:
        return "UNKNOWN"
    key = str(raw).strip().upper().replace(" ", "_").replace("-", "_")
    return _VIEW_ALIASES.get(key, "UNKNOWN")


def normalize_split(raw: str) -> str:
    """A dataset's split name (``"validate"``, ``"valid"``...) as ``train``/``val``/``test``."""
    try:
        return _SPLIT_ALIASES[str(raw).strip().lower()]
    except KeyError:
        raise ValueError(f"split must be one of {sorted(_SPLIT_ALIASES)}, got {raw!r}") from None


@dataclass(frozen=True)
class ImageRef:
    """One image of a study: where the file is (it may not exist here) and its view.

    ``bits_stored``: the real bit depth of a 16-bit PNG as the dataset declares it (e.g. 12-bit
    data in 16-bit files); None lets :func:`engine.preprocessing.prepare_image_file` read the
    PNG's sBIT chunk or infer it from the values.
    """

    path: Path
    view: str = "UNKNOWN"
    bits_stored: int | None = None

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"ImageRef.view must be one of {VIEWS}, got {self.view!r}")
        if self.bits_stored is not None and not 1 <= self.bits_stored <= 16:
            raise ValueError(f"ImageRef.bits_stored must be 1 to 16, got {self.bits_stored}")


@dataclass(frozen=True)
class Box:
    """A region of one image that shows one finding.

    Coordinates are fractions of the image width and height (0 to 1), so that a box stays right
    whatever resolution the image is later read at.
    """

    finding: str
    image_index: int
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    source_label: str = ""

    def __post_init__(self) -> None:
        if self.finding not in FINDINGS_BY_KEY:
            raise ValueError(f"Box.finding {self.finding!r} is not a key of training.findings")
        if self.image_index < 0:
            raise ValueError("Box.image_index must be >= 0")
        if not (0.0 <= self.x_min < self.x_max <= 1.0 and 0.0 <= self.y_min < self.y_max <= 1.0):
            raise ValueError(
                "Box coordinates must satisfy 0 <= min < max <= 1, got "
                f"({self.x_min}, {self.y_min}, {self.x_max}, {self.y_max})"
            )

    @classmethod
    def from_pixels(
        cls,
        finding: str,
        image_index: int,
        xyxy: tuple[float, float, float, float],
        width: float,
        height: float,
        source_label: str = "",
    ) -> Box:
        """A box from pixel corners on a ``width`` x ``height`` grid, clipped to the image."""
        if width <= 0 or height <= 0:
            raise ValueError("width and height must be positive")
        x0, y0, x1, y1 = xyxy
        return cls(
            finding,
            image_index,
            min(max(x0 / width, 0.0), 1.0),
            min(max(y0 / height, 0.0), 1.0),
            min(max(x1 / width, 0.0), 1.0),
            min(max(y1 / height, 0.0), 1.0),
            source_label,
        )


@dataclass(frozen=True)
class StudyRecord:
    """One study of one dataset, in the form every part of training reads.

    ``sections`` maps a language (``"en"``, ``"es"``) to its report sections (``"findings"``,
    ``"impression"``). ``findings`` maps a finding key to its presence; a finding that the
    source does not speak of is simply not in the mapping.
    """

    dataset: str
    study_id: str
    images: tuple[ImageRef, ...]
    sections: dict[str, dict[str, str]]
    findings: dict[str, Presence]
    split: str
    boxes: tuple[Box, ...] = ()
    patient_id: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.study_id:
            raise ValueError("StudyRecord.study_id must not be empty")
        if self.split not in SPLITS:
            raise ValueError(f"StudyRecord.split must be one of {SPLITS}, got {self.split!r}")
        for lang, secs in self.sections.items():
            if lang not in LANGUAGES:
                raise ValueError(f"StudyRecord.sections language {lang!r} not in {LANGUAGES}")
            for name in secs:
                if name not in SECTIONS:
                    raise ValueError(f"StudyRecord.sections[{lang!r}] has unknown section {name!r}")
        for key, presence in self.findings.items():
            if key not in FINDINGS_BY_KEY:
                raise ValueError(f"StudyRecord.findings key {key!r} is not in training.findings")
            if presence not in PRESENCE_VALUES:
                raise ValueError(f"StudyRecord.findings[{key!r}] must be one of {PRESENCE_VALUES}")
        for box in self.boxes:
            if box.image_index >= len(self.images):
                raise ValueError(f"StudyRecord box refers to image {box.image_index} of "
                                 f"{len(self.images)}")

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages this study has report text in."""
        return tuple(lang for lang, secs in self.sections.items() if any(secs.values()))

    def report(self, lang: str = "en", sections: tuple[str, ...] = SECTIONS) -> str:
        """The report text in ``lang``: the chosen sections joined in reading order."""
        secs = self.sections.get(lang, {})
        return " ".join(secs[s].strip() for s in sections if secs.get(s, "").strip())
