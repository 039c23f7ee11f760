"""The neural-writer check: does a generated Spanish report contradict the coded findings?

The Spanish labeler reads the report. A contradiction is a finding the SR codes present that
the text says is absent or leaves out, a finding coded absent that the text names as present or
possible, or a finding coded uncertain that the text states as certainly present. A draft
that leaves out a present finding reads as normal to a hurried reader, so an omission counts;
only findings the Spanish labeler can read are held to it (it cannot see the others either way).
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
    text: Presence | None  # None: the text does not mention it

    def describe(self) -> str:
        said = "does not mention it" if self.text is None else f"says {self.text}"
        return f"{self.key}: coded {self.coded}, text {said}"


def contradictions(
    text: str, findings: Sequence[FindingResult], *, lang: str = "es"
) -> tuple[Contradiction, ...]:
    """The contradictions between report ``text`` and the coded ``findings``."""
    labeler = get_labeler(lang)
    said = labeler.label(text, sections=False)
    readable = labeler.readable_findings()
    out = []
    for f in findings:
        if f.key == "no_finding":
            continue  # derived from the others; checking them is enough
        stated = said.get(f.key)
        if stated is not None and (f.presence, stated) in CONTRADICTIONS:
            out.append(Contradiction(f.key, f.presence, stated))
        elif stated is None and f.presence == "present" and f.key in readable:
            out.append(Contradiction(f.key, f.presence, None))
    return tuple(out)
