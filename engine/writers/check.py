"""The neural-writer check: does a generated Spanish report contradict the coded findings?

The Spanish labeler reads the report. A contradiction is a finding the SR codes present that
the text says is absent or leaves out, a finding coded absent that the text names as present or
possible, or a finding coded uncertain that the text states as certainly present. A draft
that leaves out a present finding reads as normal to a hurried reader, so an omission counts;
only findings the Spanish labeler can read are held to it (it cannot see the others either way).

A global normal statement ("Sin hallazgos patológicos significativos.", "Estudio dentro de la
normalidad.", "Tórax sin alteraciones.") beside a finding coded present is a contradiction too,
whether or not the text also names the finding: the labeler alone would not see it, since it
derives "no finding" from the findings it reads. The statements are read by
:func:`global_normal_statements` with the Spanish rules' ``GLOBAL_NORMAL`` patterns; one limited
to acute disease ("Sin hallazgos cardiopulmonares agudos.") denies only acute findings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.labeler import get_labeler, rules_es
from engine.labeler.labeler import NOT_ABNORMAL
from engine.labeler.text import fold
from engine.result import FindingResult, Presence

logger = logging.getLogger(__name__)

#: (coded, text) pairs that contradict.
CONTRADICTIONS: frozenset[tuple[str, str]] = frozenset({
    ("present", "absent"),
    ("absent", "present"),
    ("absent", "uncertain"),
    ("uncertain", "present"),
})


#: Findings a global normal statement about acute disease only ("Sin hallazgos
#: cardiopulmonares agudos.") does not deny: chronic or incidental ones, and devices.
NOT_ACUTE: frozenset[str] = frozenset({
    "support_devices", "cardiomegaly", "granuloma", "calcification", "scarring", "fibrosis",
    "emphysema", "bronchiectasis", "pleural_thickening", "pleural_other", "hernia",
    "hyperinflation", "aortic_elongation", "aortic_atheromatosis", "scoliosis", "kyphosis",
    "spondylosis", "elevated_hemidiaphragm", "interstitial_pattern",
})

_GLOBAL_NORMAL = {
    "es": (
        re.compile("|".join(f"(?:{p})" for p in rules_es.GLOBAL_NORMAL)),
        re.compile(rules_es.GLOBAL_NORMAL_ACUTE),
        re.compile(rules_es.GLOBAL_NORMAL_HEADING),
    ),
}


@dataclass(frozen=True)
class Contradiction:
    """One finding on which the text and the coded findings disagree."""

    key: str
    coded: Presence
    text: Presence | None  # None: the text does not mention it
    #: The global normal statement that denies the finding, when that is the disagreement.
    normal_statement: str = ""

    def describe(self) -> str:
        if self.normal_statement:
            return (f"{self.key}: coded {self.coded}, text calls the study normal "
                    f"({self.normal_statement!r})")
        said = "does not mention it" if self.text is None else f"says {self.text}"
        return f"{self.key}: coded {self.coded}, text {said}"


@dataclass(frozen=True)
class NormalStatement:
    """A sentence that calls the whole study normal; ``acute_only`` when it speaks of acute
    disease only."""

    sentence: str
    acute_only: bool


def global_normal_statements(text: str, *, lang: str = "es") -> tuple[NormalStatement, ...]:
    """The sentences of ``text`` that call the whole study normal (see the module docstring).

    A qualified or regional normal statement ("Sin otros hallazgos.", "Resto sin
    alteraciones.", "Parénquima pulmonar sin alteraciones.") is not one.
    """
    if lang not in _GLOBAL_NORMAL:
        raise ValueError(f"no normal-statement rules for language {lang!r}")
    pattern, acute, heading = _GLOBAL_NORMAL[lang]
    out = []
    for sentence in get_labeler(lang).sentences(text):
        folded = " ".join(fold(sentence).split()).rstrip(" .;")
        folded = heading.sub("", folded, count=1) if heading.match(folded) else folded
        if pattern.fullmatch(folded):
            out.append(NormalStatement(sentence, bool(acute.search(folded))))
    return tuple(out)


def contradictions(
    text: str, findings: Sequence[FindingResult], *, lang: str = "es"
) -> tuple[Contradiction, ...]:
    """The contradictions between report ``text`` and the coded ``findings``."""
    out = list(_normal_contradictions(text, findings, lang))
    labeler = get_labeler(lang)
    said = labeler.label(text, sections=False)
    readable = labeler.readable_findings()
    for f in findings:
        if f.key == "no_finding":
            continue  # derived from the others; checking them is enough
        stated = said.get(f.key)
        if stated is not None and (f.presence, stated) in CONTRADICTIONS:
            out.append(Contradiction(f.key, f.presence, stated))
        elif stated is None and f.presence == "present" and f.key in readable:
            out.append(Contradiction(f.key, f.presence, None))
    return tuple(out)


def _normal_contradictions(
    text: str, findings: Sequence[FindingResult], lang: str
) -> list[Contradiction]:
    """A global normal statement beside each finding coded present that it denies."""
    if lang not in _GLOBAL_NORMAL:
        return []
    statements = global_normal_statements(text, lang=lang)
    out = []
    for f in findings:
        if f.presence != "present" or f.key in NOT_ABNORMAL:
            continue
        denying = [s for s in statements if not (s.acute_only and f.key in NOT_ACUTE)]
        if denying:
            out.append(Contradiction(f.key, f.presence, "absent", denying[0].sentence))
    return out
