"""The neural-writer check: does a generated Spanish report contradict the coded findings?

The Spanish labeler reads the report. A contradiction is a finding the SR codes present that
the text says is absent, a finding coded absent that the text names as present or possible,
or a finding coded uncertain that the text states as certainly present. A finding the text
does not mention is not a contradiction (the SR still codes it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from engine.labeler import get_labeler
from engine.result import FindingResult, Presence

logger = logging.getLogger(__name__)

#: (coded, text) pairs that contradict.
CONTRADICTIONS: frozenset[tuple[str, str]] = frozenset({
    ("present", "absent"),
    ("absent", "present"),
    ("absent", "uncertain"),
    ("uncertain", "present"),
})


@dataclass(frozen=True)
class Contradiction:
    """One finding on which the text and the coded findings disagree."""

    key: str
    coded: Presence
    text: Presence

    def describe(self) -> str:
        return f"{self.key}: coded {self.coded}, text says {self.text}"


def contradictions(
    text: str, findings: Sequence[FindingResult], *, lang: str = "es"
) -> tuple[Contradiction, ...]:
    """The contradictions between report ``text`` and the coded ``findings``."""
    said = get_labeler(lang).label(text, sections=False)
    out = []
    for f in findings:
        if f.key == "no_finding":
            continue  # derived from the others; checking them is enough
        stated = said.get(f.key)
        if stated is not None and (f.presence, stated) in CONTRADICTIONS:
            out.append(Contradiction(f.key, f.presence, stated))
    return tuple(out)
