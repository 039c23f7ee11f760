"""Whole reports through the bridge: sections kept, sentences parsed, realised or dropped."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from engine.labeler import get_labeler, split_sections
from engine.language import realise
from training.bridge.parse_en import parse_sentence

logger = logging.getLogger(__name__)

#: English section -> the Spanish heading the engine writes.
_SECTION_ES = {"findings": "Hallazgos", "impression": "Impresión"}


@dataclass(frozen=True)
class BridgedSentence:
    """One English sentence and its Spanish realisation (empty when dropped)."""

    section: str
    source: str
    spanish: tuple[str, ...]
    unknown: tuple[str, ...] = ()

    @property
    def realised(self) -> bool:
        return bool(self.spanish)


@dataclass(frozen=True)
class BridgedReport:
    """One English report through the bridge."""

    sentences: tuple[BridgedSentence, ...]
    sections: tuple[tuple[str, str], ...] = field(default=())

    @property
    def complete(self) -> bool:
        """Every sentence realised."""
        return all(s.realised for s in self.sentences)

    @property
    def dropped(self) -> tuple[BridgedSentence, ...]:
        return tuple(s for s in self.sentences if not s.realised)

    def text(self, *, headings: bool = False) -> str:
        """The Spanish text; with ``headings``, "Hallazgos: ... Impresión: ..."."""
        if headings:
            return "\n".join(f"{title}: {body}" for title, body in self.sections)
        return " ".join(body for _, body in self.sections)


def bridge_report(report_text: str) -> BridgedReport:
    """Parse and realise every sentence of the FINDINGS and IMPRESSION of an English report
    (the whole text when it has no headers)."""
    labeler = get_labeler("en")
    parts = split_sections(report_text, "en")
    chosen = [(name, parts[name]) for name in ("findings", "impression") if name in parts]
    if not chosen:
        chosen = [("findings", parts.get("other", ""))]
    sentences: list[BridgedSentence] = []
    sections: list[tuple[str, str]] = []
    for name, body in chosen:
        realised: list[str] = []
        for source in labeler.sentences(body):
            parsed = parse_sentence(source)
            if not parsed.text:
                continue  # only de-identification tokens or punctuation
            if parsed.ok:
                spanish = tuple(realise(parsed.statements))
            else:
                spanish = ()
                logger.debug("dropped %r: unknown words %s", source, parsed.unknown)
            sentences.append(BridgedSentence(name, source, spanish, tuple(parsed.unknown)))
            realised.extend(s for s in spanish if s not in realised)
        if realised:
            sections.append((_SECTION_ES[name], " ".join(realised)))
    return BridgedReport(tuple(sentences), tuple(sections))


@functools.lru_cache(maxsize=65536)
def spanish_target(report_text: str) -> str | None:
    """The Spanish training target for one English report; None when nothing was realised.

    Sentences the bridge cannot parse are left out (see :func:`bridge_report`). Results are
    cached in memory for the next epoch; nothing is written to disk.
    """
    text = bridge_report(report_text).text()
    return text or None


def spanish_reference(report_text: str, *, headings: bool = False) -> str | None:
    """The Spanish reference for evaluating Spanish output (``training evaluate --lang es``):
    the same realisation as :func:`spanish_target`, optionally with section headings."""
    text = bridge_report(report_text).text(headings=headings)
    return text or None
