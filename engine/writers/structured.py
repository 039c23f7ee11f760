"""The structured writer: a deterministic Spanish report from the engine's coded findings.

Hallazgos states every finding coded present (with its side where known), every uncertain
one with a hedge chosen by its probability band ("Probable ..." nearer the present threshold,
"No se descarta ..." nearer the absent one), then the customary normal statements for the
absent ones ("Índice cardiotorácico conservado.", "Senos costofrénicos libres.", "No se
observan condensaciones ni neumotórax.").

Impresión summarises, as a radiologist closes a report: the findings coded present in one
sentence, in order of clinical weight (:data:`CLINICAL_ORDER`), joined as Spanish joins them
("Derrame pleural derecho y atelectasia."); the uncertain ones after them, hedged once per
probability band ("Probable neumonía.", "No se descartan edema pulmonar e infiltrado
pulmonar."); devices last. A study with nothing present or uncertain reads "Sin hallazgos
patológicos significativos." when "no finding" is coded present (the SR then states a normal
study), else "Sin hallazgos patológicos concluyentes." (the model did not call it normal). With
"no finding" coded present beside uncertain findings, "Sin hallazgos patológicos
concluyentes." opens the hedges: a radiologist does not call a study normal and then list what
it cannot exclude. Impresión never names a finding Hallazgos does not, and the text never names a
finding the SR codes absent as present or uncertain, nor the reverse: both are built from the
same :class:`~engine.result.FindingResult` objects as the SR's TID 1500 content.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from engine.labeler.labeler import NOT_ABNORMAL
from engine.language import Location, Statement, realise, sentence
from engine.language.grammar import noun_phrase
from engine.language.lexicon import FINDING_NOUNS, PLURALE_TANTUM
from engine.result import FindingResult
from engine.writers.laterality import laterality_from_region

logger = logging.getLogger(__name__)

HALLAZGOS = "Hallazgos"
IMPRESION = "Impresión"

#: Absent findings a radiologist states even when normal, in the order they are written: the
#: heart and mediastinum, then the acute lung findings in one negation (plural nouns first, so
#: the verb agrees: "No se observan infiltrados pulmonares, atelectasias ni edema pulmonar."),
#: then the costophrenic angles. Only those of the engine's finding set, coded absent, are said.
CUSTOMARY_NORMALS: tuple[str, ...] = (
    "cardiomegaly",
    "enlarged_cardiomediastinum",
    "consolidation",
    "infiltration",
    "atelectasis",
    "pneumothorax",
    "pneumonia",
    "edema",
    "pleural_effusion",
)
#: Said as normality when absent; the others go into one "No se observan ... ni ..." sentence.
_NORMAL_STYLE = frozenset({"cardiomegaly", "enlarged_cardiomediastinum", "pleural_effusion"})
NO_FINDINGS = "Sin hallazgos patológicos significativos."
#: Impresión when the model calls no finding but does not call the study normal either.
NOT_CONCLUSIVE = "Sin hallazgos patológicos concluyentes."

#: Order of clinical weight in Impresión: what changes management first (air, masses,
#: infection, fluid), chronic and incidental findings last. Keys not listed follow, by
#: probability.
CLINICAL_ORDER: tuple[str, ...] = (
    "pneumothorax", "mass", "pneumonia", "consolidation", "tuberculosis", "edema",
    "pleural_effusion", "lung_lesion", "enlarged_cardiomediastinum", "cardiomegaly",
    "lung_opacity", "infiltration", "atelectasis", "nodule", "fracture", "interstitial_pattern",
    "fibrosis", "emphysema", "bronchiectasis", "pleural_thickening", "pleural_other", "hernia",
    "hyperinflation", "hypoinflation", "elevated_hemidiaphragm", "granuloma", "calcification",
    "scarring", "aortic_elongation", "aortic_atheromatosis", "scoliosis", "kyphosis",
    "spondylosis",
)
_WEIGHT = {key: rank for rank, key in enumerate(CLINICAL_ORDER)}
#: Impresión names at most this many present findings ("..., y otros hallazgos descritos")
#: and this many uncertain ones (the heaviest); Hallazgos names them all.
MAX_PRESENT = 4
MAX_UNCERTAIN = 3


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
    for f in present:
        if f.key == "support_devices":
            text = "Dispositivos médicos."
        elif f.key in FINDING_NOUNS:
            text = realise([_statement(f)])[0]
        else:
            text = _unknown_sentence(f, hedged=False)
        body.append(text)
    for f in uncertain:
        band = (bands or {}).get(f.key)
        if f.key == "support_devices":
            text = "No se descartan dispositivos médicos."
        elif f.key in FINDING_NOUNS:
            text = realise([_statement(f, _hedge(f, band))])[0]
        else:
            text = _unknown_sentence(f, hedged=True)
        body.append(text)
    said = [k for k in CUSTOMARY_NORMALS if k in absent]
    if "consolidation" in said and "pneumonia" in said:
        said.remove("pneumonia")  # "sin condensaciones" already rules it out on a radiograph
    normals = [_statement(absent[k]) for k in said]
    styled = [s for s in normals if s.finding in _NORMAL_STYLE and s.finding != "pleural_effusion"]
    negated = [s for s in normals if s.finding not in _NORMAL_STYLE]
    effusion = [s for s in normals if s.finding == "pleural_effusion"]
    body.extend(realise([*styled, *negated]))
    body.extend(realise(effusion))
    summary = impression(findings, bands=bands)
    if not body:
        # No customary normal in the engine's finding set: say the absent ones it has.
        body = realise([replace(_statement(f), normal_style=False) for f in absent.values()
                        if f.key in FINDING_NOUNS and f.key != "no_finding"]) or [summary]
    return ((HALLAZGOS, " ".join(body)), (IMPRESION, summary))


def impression(
    findings: Sequence[FindingResult], *, bands: dict[str, tuple[float, float]] | None = None
) -> str:
    """Impresión for ``findings`` (see the module docstring): the present findings in one
    sentence by clinical weight, the uncertain ones hedged once per band, devices last."""
    by_weight = sorted(
        (f for f in findings if f.key not in NOT_ABNORMAL),
        key=lambda f: (_WEIGHT.get(f.key, len(_WEIGHT)), -f.probability),
    )
    present = [f for f in by_weight if f.presence == "present"]
    # The heaviest uncertain ones only: Hallazgos lists them all.
    uncertain = [f for f in by_weight if f.presence == "uncertain"][:MAX_UNCERTAIN]
    probable = [f for f in uncertain if _hedge(f, (bands or {}).get(f.key)) == "probable"]
    possible = [f for f in uncertain if f not in probable]
    devices = {f.presence for f in findings if f.key == "support_devices"}
    # None: the engine's finding set has no "no finding" output.
    no_finding = next((f.presence for f in findings if f.key == "no_finding"), None)

    out: list[str] = []
    if no_finding == "present" and not present and (probable or possible):
        # Called normal, with findings it cannot exclude: not "significativos" and then hedges.
        out.append(NOT_CONCLUSIVE)
    if present:
        phrases = _grouped_by_side(present[:MAX_PRESENT])
        if len(present) > MAX_PRESENT:
            phrases.append("otros hallazgos descritos")
        out.append(sentence(join_phrases(phrases)))
    if len(probable) == 1:
        out.append(realise([_statement(probable[0], "probable")])[0]
                   if probable[0].key in FINDING_NOUNS
                   else _unknown_sentence(probable[0], hedged=True))
    elif probable:
        # One hedge for the group; "Probable A y B" would leave B's certainty ambiguous.
        out.append(sentence("hallazgos sugestivos de "
                            + join_phrases([finding_phrase(f) for f in probable])))
    if possible:
        phrases = [finding_phrase(f) for f in possible]
        plural = len(possible) > 1 or any(_plural_phrase(f) for f in possible)
        verb = "no se descartan" if plural else "no se descarta"
        out.append(sentence(f"{verb} {join_phrases(phrases)}"))
    if not out:
        out.append(NO_FINDINGS if no_finding in (None, "present") else NOT_CONCLUSIVE)
    if "present" in devices:
        out.append("Dispositivos médicos.")
    elif "uncertain" in devices:
        out.append("No se descartan dispositivos médicos.")
    return " ".join(out)


_HEMITHORAX = {"right": "en el hemitórax derecho", "left": "en el hemitórax izquierdo",
               "bilateral": "en ambos hemitórax"}


def _grouped_by_side(findings: Sequence[FindingResult]) -> list[str]:
    """Noun phrases of ``findings`` (in their order); when all of them, two or more, lie on
    the same side, the side is said once: "derrame pleural y atelectasia en el hemitórax
    derecho". Within a longer list a shared side would read as applying to the whole list."""
    sides = {_side_said(f) for f in findings}
    side = next(iter(sides)) if len(sides) == 1 else None
    if len(findings) < 2 or side is None:
        return [finding_phrase(f) for f in findings]
    inner = [finding_phrase(replace(f, laterality=None)) for f in findings]
    return [f"{join_phrases(inner)} {_HEMITHORAX[side]}"]


def _side_said(f: FindingResult) -> str | None:
    """The side the noun phrase of ``f`` states (None for a finding the grammar never places,
    such as "cardiomegalia")."""
    if f.laterality is None or f.key not in FINDING_NOUNS:
        return None
    if finding_phrase(f) == finding_phrase(replace(f, laterality=None)):
        return None
    return f.laterality


def _plural_phrase(f: FindingResult) -> bool:
    return f.key in PLURALE_TANTUM


def join_phrases(phrases: Sequence[str]) -> str:
    """Noun phrases joined as Spanish joins them: "a", "a y b", "a, b y c"; "y" becomes "e"
    before the sound /i/ ("neumonía e infiltrado pulmonar", "... e hiperinsuflación"), but
    not before a diphthong ("y hielo")."""
    if not phrases:
        return ""
    if len(phrases) == 1:
        return phrases[0]
    last = phrases[-1]
    folded = last.lower()
    conj = "e" if folded.startswith(("i", "í", "hi", "hí")) and not folded.startswith(
        ("hia", "hie", "hio", "hiu")) else "y"
    return ", ".join(phrases[:-1]) + f" {conj} {last}"


def finding_phrase(f: FindingResult) -> str:
    """The noun phrase for one coded finding ("derrame pleural derecho"), as it is present."""
    if f.key not in FINDING_NOUNS:
        return f.code.meaning_es.lower()
    return noun_phrase(replace(_statement(f), presence="present"))
