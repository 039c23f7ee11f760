"""The structured writer: a deterministic Spanish report from the engine's coded findings.

Hallazgos states every finding coded present (with its side where known), every uncertain
one with a hedge chosen by its probability band ("Probable ..." nearer the present threshold,
"No se descarta ..." nearer the absent one), then the customary normal statements for the
absent ones ("Índice cardiotorácico conservado.", "Senos costofrénicos libres.", "No se
observan condensaciones ni neumotórax."). Impresión summarises. The text never names a
finding the SR codes absent as present or uncertain, nor the reverse: it is built from the
same :class:`~engine.result.FindingResult` objects as the SR's TID 1500 content.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from engine.language import Location, Statement, realise, sentence
from engine.language.grammar import noun_phrase
from engine.language.lexicon import FINDING_NOUNS
from engine.result import FindingResult
from engine.writers.laterality import laterality_from_region

logger = logging.getLogger(__name__)

HALLAZGOS = "Hallazgos"
IMPRESION = "Impresión"

#: Absent findings a radiologist states even when normal, in the order they are written.
CUSTOMARY_NORMALS: tuple[str, ...] = (
    "cardiomegaly",
    "enlarged_cardiomediastinum",
    "consolidation",
    "pneumothorax",
    "pleural_effusion",
)
#: Said as normality when absent; the others go into one "No se observan ... ni ..." sentence.
_NORMAL_STYLE = frozenset({"cardiomegaly", "enlarged_cardiomediastinum", "pleural_effusion"})
NO_FINDINGS = "Sin hallazgos patológicos significativos."


def _statement(f: FindingResult, hedge: str | None = None) -> Statement:
    location = Location(f.laterality) if f.laterality else None
    return Statement(
        finding=f.key,
        presence=f.presence,
        hedge=hedge,  # type: ignore[arg-type]
        location=location,
        normal_style=f.key in _NORMAL_STYLE,
    )


def _hedge(f: FindingResult, band: tuple[float, float] | None) -> str:
    if band is None:
        return "cannot_exclude"
    low, high = band
    return "probable" if f.probability >= (low + high) / 2 else "cannot_exclude"


def _unknown_sentence(f: FindingResult, hedged: bool) -> str:
    # A finding outside the grammar's vocabulary (a newer engine): its coded Spanish name.
    name = f.code.meaning_es
    return sentence(f"no se descarta {name.lower()}" if hedged else name)


def with_sides(
    findings: Sequence[FindingResult], image_width: int, *, row_direction: str = "L"
) -> list[FindingResult]:
    """``findings`` with the side of each located one that has none, from its box on the
    frontal image ``image_width`` pixels wide (see :mod:`engine.writers.laterality`)."""
    out = []
    for f in findings:
        if f.laterality is None and f.region is not None:
            side = laterality_from_region(f.region, image_width, row_direction=row_direction)
            f = replace(f, laterality=side)
        out.append(f)
    return out


def write_structured(
    findings: Sequence[FindingResult],
    *,
    bands: dict[str, tuple[float, float]] | None = None,
    image_width: int | None = None,
    row_direction: str = "L",
) -> tuple[tuple[str, str], ...]:
    """Hallazgos and Impresión for ``findings``.

    ``bands`` maps a finding key to its (absent, present) thresholds, to place an uncertain
    probability nearer one or the other; without it every uncertain finding reads
    "No se descarta ...". With ``image_width`` (of the frontal image the regions are on), a
    located finding without a side gets it from its box.
    """
    if image_width is not None:
        findings = with_sides(findings, image_width, row_direction=row_direction)
    ordered = sorted(findings, key=lambda f: -f.probability)
    present = [f for f in ordered if f.presence == "present" and f.key != "no_finding"]
    uncertain = [f for f in ordered if f.presence == "uncertain" and f.key != "no_finding"]
    absent = {f.key: f for f in findings if f.presence == "absent"}

    body: list[str] = []
    summary: list[str] = []
    for f in present:
        if f.key == "support_devices":
            text = "Dispositivos médicos."
        elif f.key in FINDING_NOUNS:
            text = realise([_statement(f)])[0]
        else:
            text = _unknown_sentence(f, hedged=False)
        body.append(text)
        summary.append(text)
    for f in uncertain:
        band = (bands or {}).get(f.key)
        if f.key == "support_devices":
            text = "No se descartan dispositivos médicos."
        elif f.key in FINDING_NOUNS:
            text = realise([_statement(f, _hedge(f, band))])[0]
        else:
            text = _unknown_sentence(f, hedged=True)
        body.append(text)
        summary.append(text)
    normals = [_statement(absent[k]) for k in CUSTOMARY_NORMALS if k in absent]
    styled = [s for s in normals if s.finding in _NORMAL_STYLE and s.finding != "pleural_effusion"]
    negated = [s for s in normals if s.finding not in _NORMAL_STYLE]
    effusion = [s for s in normals if s.finding == "pleural_effusion"]
    body.extend(realise([*styled, *negated]))
    body.extend(realise(effusion))
    # Support devices do not make a study abnormal (as no_finding is defined).
    if all(f.key == "support_devices" for f in (*present, *uncertain)):
        summary = [NO_FINDINGS, *summary]
        if not body:
            body = [NO_FINDINGS]
    return ((HALLAZGOS, " ".join(body)), (IMPRESION, " ".join(summary)))


def finding_phrase(f: FindingResult) -> str:
    """The noun phrase for one coded finding ("derrame pleural derecho")."""
    if f.key not in FINDING_NOUNS:
        return f.code.meaning_es.lower()
    return noun_phrase(_statement(f))
