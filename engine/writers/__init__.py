"""The report writers: which text a study's report carries, and why.

- ``structured``: :func:`~engine.writers.structured.write_structured`, deterministic Spanish
  from the coded findings; consistent with the SR by construction.
- ``neural``: the decoder's text, always checked against the coded findings with the Spanish
  labeler (:mod:`engine.writers.check`); a contradicting text is replaced by the structured
  report, and the reason is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from engine.result import FindingResult
from engine.writers.check import Contradiction, contradictions
from engine.writers.laterality import laterality_from_region
from engine.writers.structured import write_structured

logger = logging.getLogger(__name__)

WRITERS: tuple[str, ...] = ("structured", "neural")

__all__ = [
    "WRITERS",
    "Contradiction",
    "WrittenText",
    "choose_text",
    "contradictions",
    "laterality_from_region",
    "write_structured",
]


@dataclass(frozen=True)
class WrittenText:
    """The sections a report carries, the writer that produced them and why."""

    sections: tuple[tuple[str, str], ...]
    writer: str
    reason: str


def choose_text(
    writer: str,
    findings: Sequence[FindingResult],
    neural_sections: tuple[tuple[str, str], ...] | None = None,
    *,
    language: str = "es",
    bands: dict[str, tuple[float, float]] | None = None,
) -> WrittenText:
    """Run the configured ``writer`` ("structured" or "neural") for one study.

    The neural text is kept only if it is Spanish and contradicts no coded finding; otherwise
    the structured report takes its place and ``reason`` says why.
    """
    if writer not in WRITERS:
        raise ValueError(f"writer must be one of {WRITERS}, got {writer!r}")
    if writer == "structured":
        return WrittenText(write_structured(findings, bands=bands), "structured",
                           "configured writer: structured")
    if language != "es":
        # The check reads Spanish; an English-only engine is not checked here (nor fallen back
        # from: the structured writer writes Spanish).
        if not neural_sections:
            raise ValueError("the neural writer needs the decoder's sections")
        return WrittenText(neural_sections, "neural",
                           f"configured writer: neural; not checked (language {language})")
    if not neural_sections or not any(text.strip() for _, text in neural_sections):
        return WrittenText(write_structured(findings, bands=bands), "structured",
                           "neural writer produced no text; structured report used")
    text = " ".join(body for _, body in neural_sections)
    found = contradictions(text, findings)
    if found:
        reason = "neural report contradicted the coded findings (" + "; ".join(
            c.describe() for c in found) + "); structured report used"
        logger.warning("%s", reason)
        return WrittenText(write_structured(findings, bands=bands), "structured", reason)
    return WrittenText(neural_sections, "neural",
                       "configured writer: neural; check passed (no contradiction)")
