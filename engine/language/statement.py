"""What one sentence of a chest radiograph report states, independent of its language.

The bridge parses English sentences into :class:`Statement` objects and the report writers build
them from coded findings; :mod:`engine.language.grammar` realises them in Spanish.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from engine.result import Presence

logger = logging.getLogger(__name__)

Side = Literal["right", "left", "bilateral"]
#: How an uncertain statement is hedged.
Hedge = Literal["possible", "probable", "cannot_exclude", "suspected"]

#: Anatomical zones the grammar can place a finding in.
ZONES: tuple[str, ...] = (
    "upper_lobe", "middle_lobe", "lower_lobe", "lingula", "base", "apex", "hilum",
    "perihilar", "upper_zone", "mid_zone", "lower_zone", "retrocardiac", "costophrenic",
    "lung", "hemithorax", "mediastinum", "clavicle", "rib", "spine", "thoracic_spine",
    "lumbar_spine", "shoulder", "humerus", "hemidiaphragm", "aortic_arch", "aorta",
    "subpleural", "peripheral", "central", "axilla", "chest_wall", "scapula", "sternum",
    "lateral", "infrahilar", "suprahilar", "paratracheal", "upper_abdomen",
    # where a device's tip lies
    "carina", "svc", "cavoatrial_junction", "right_atrium", "right_ventricle", "stomach",
)

#: Statements that describe normal anatomy without naming a finding of the set.
NORMALS: tuple[str, ...] = (
    "lungs_clear", "lungs_expanded", "bones_intact", "bones_no_acute", "trachea_midline",
    "vasculature_normal", "no_acute_disease", "normal_study", "soft_tissues_normal",
    "diaphragm_normal", "hila_normal", "aorta_normal", "upper_abdomen_normal",
    "no_focal_disease", "no_consolidation_effusion_pneumothorax", "heart_mediastinum_normal",
    "pleura_normal", "unchanged_study", "heart_normal_size_unstated", "heart_upper_normal",
    "postsurgical", "technique_pa_lateral",
)


@dataclass(frozen=True)
class Location:
    """Where a finding lies: a side of the patient and/or a zone (:data:`ZONES`)."""

    side: Side | None = None
    zone: str | None = None
    plural_zone: bool = False

    def __post_init__(self) -> None:
        if self.side not in (None, "right", "left", "bilateral"):
            raise ValueError(f"Location.side must be right, left or bilateral, got {self.side!r}")
        if self.zone is not None and self.zone not in ZONES:
            raise ValueError(f"Location.zone {self.zone!r} is not one of {ZONES}")


@dataclass(frozen=True)
class Statement:
    """One thing a report says: a finding (key of the unified set) or a normal statement.

    - ``finding`` with ``presence``: present, absent or uncertain (``hedge`` says how).
    - ``normal``: one of :data:`NORMALS`, a statement of normal anatomy (``finding`` None).
    - ``normal_style``: an absent finding said as normality ("Índice cardiotorácico
      conservado.") rather than as a negation ("No se observa cardiomegalia.").
    - ``device``: for ``support_devices``, which device
      (:data:`engine.language.lexicon.DEVICE_NOUNS`).
    """

    finding: str | None = None
    presence: Presence = "present"
    hedge: Hedge | None = None
    location: Location | None = None
    severity: tuple[str, ...] = ()
    change: str | None = None
    device: str | None = None
    plural: bool = False
    size_mm: float | None = None
    normal: str | None = None
    normal_style: bool = False
    #: Devices: where the tip lies (zones), how far above/below it, and the venous access.
    tip: tuple[str, ...] = ()
    tip_mm: float | None = None
    tip_relation: Literal["above", "below"] | None = None
    access: Literal["jugular", "subclavian", "femoral"] | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if (self.finding is None) == (self.normal is None):
            raise ValueError("Statement needs exactly one of finding or normal")
        if self.normal is not None and self.normal not in NORMALS:
            raise ValueError(f"Statement.normal {self.normal!r} is not one of {NORMALS}")
        if self.presence not in ("present", "absent", "uncertain"):
            raise ValueError(f"Statement.presence {self.presence!r} is not valid")
