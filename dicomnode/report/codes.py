"""Coded concepts used in the report objects, with their Spanish code meanings.

DICOM lets a Code Meaning be given in the language of the document (PS3.3
C.17.3.2.4 / TID 1204), so every concept the node writes carries a Spanish
meaning; the code value and scheme stay the standard ones that systems match on.
"""

from __future__ import annotations

import unicodedata

from highdicom.sr import CodedConcept

from engine.result import FindingCode

#: TID 1204 language of content: Spanish (RFC 5646 "es").
SPANISH = CodedConcept("es", "RFC5646", "Español")

# Document titles.
#: TID 2000 root: LOINC "Diagnostic Imaging Report" (CID 7000).
DIAGNOSTIC_IMAGING_REPORT = CodedConcept("18748-4", "LN", "Informe de diagnóstico por imagen")
#: TID 1500 root: "Imaging Measurement Report" (CID 7021).
IMAGING_MEASUREMENT_REPORT = CodedConcept("126000", "DCM", "Informe de mediciones de imagen")

#: Procedure reported (TID 1500 row 4): plain chest radiograph.
CHEST_RADIOGRAPH = CodedConcept("399208008", "SCT", "Radiografía simple de tórax")

# Presence of a finding (CID 240 "Present-Absent-Undetermined" values).
PRESENT = CodedConcept("52101004", "SCT", "Presente")
ABSENT = CodedConcept("272519000", "SCT", "Ausente")
UNDETERMINED = CodedConcept("373068000", "SCT", "Indeterminado")
PRESENCE: dict[str, CodedConcept] = {
    "present": PRESENT,
    "absent": ABSENT,
    "uncertain": UNDETERMINED,
}
PRESENCE_TEXT_ES: dict[str, str] = {
    "present": "presente",
    "absent": "ausente",
    "uncertain": "indeterminado",
}

#: NUM concept for the model's output probability, in UCUM unit "1" (no units).
PROBABILITY = CodedConcept("122157", "DCM", "Probabilidad")
NO_UNITS = CodedConcept("1", "UCUM", "sin unidades")

# Laterality (CID 244) and the anatomic site it qualifies.
LATERALITY: dict[str, CodedConcept] = {
    "left": CodedConcept("7771000", "SCT", "Izquierdo"),
    "right": CodedConcept("24028007", "SCT", "Derecho"),
    "bilateral": CodedConcept("51440002", "SCT", "Bilateral"),
}
LATERALITY_TEXT_ES: dict[str, str] = {
    "left": "izquierdo",
    "right": "derecho",
    "bilateral": "bilateral",
}
#: Finding site used when only the side is known: the thorax, with the code DICOM's current
#: code tables give for it (pydicom ``codes.SCT.Thorax``).
THORAX = CodedConcept("816094009", "SCT", "Tórax")

# TID 2000 sections (CID 7001 headings) and the TID 2002 TEXT items they contain (CID 7002).
FINDINGS = CodedConcept("121070", "DCM", "Hallazgos")
FINDING = CodedConcept("121071", "DCM", "Hallazgo")
IMPRESSIONS = CodedConcept("121072", "DCM", "Impresión")
IMPRESSION = CodedConcept("121073", "DCM", "Impresión")
RECOMMENDATIONS = CodedConcept("121074", "DCM", "Recomendaciones")
RECOMMENDATION = CodedConcept("121075", "DCM", "Recomendación")
CONCLUSIONS = CodedConcept("121076", "DCM", "Conclusiones")
CONCLUSION = CodedConcept("121077", "DCM", "Conclusión")
HISTORY = CodedConcept("121060", "DCM", "Antecedentes")
INDICATIONS = CodedConcept("121109", "DCM", "Indicaciones")
#: The disclaimer is a comment on the whole document.
COMMENT = CodedConcept("121106", "DCM", "Comentario")
#: TID 1500 row 12 container for free-text and coded evaluations of the whole study.
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Evaluaciones cualitativas")

#: Section headings by normalised Spanish title: (section container, TEXT item concept).
SECTIONS: dict[str, tuple[CodedConcept, CodedConcept]] = {
    "hallazgos": (FINDINGS, FINDING),
    "impresion": (IMPRESSIONS, IMPRESSION),
    "impresion diagnostica": (IMPRESSIONS, IMPRESSION),
    "recomendaciones": (RECOMMENDATIONS, RECOMMENDATION),
    "recomendacion": (RECOMMENDATIONS, RECOMMENDATION),
    "conclusiones": (CONCLUSIONS, CONCLUSION),
    "conclusion": (CONCLUSIONS, CONCLUSION),
    "antecedentes": (HISTORY, FINDING),
    "indicaciones": (INDICATIONS, FINDING),
    "indicacion": (INDICATIONS, FINDING),
}

#: The local coding scheme of engine/result.py; declared in Coding Scheme Identification.
LOCAL_SCHEME = "99CXR"
LOCAL_SCHEME_NAME = "Códigos locales del nodo de informes de radiografía de tórax"


def section_concepts(title: str) -> tuple[CodedConcept, CodedConcept]:
    """The (section, text item) concepts for a section title as the engine wrote it.

    Unknown titles fall back to the Findings heading with the engine's own title as
    the meaning, so the reader still sees the title the engine chose.
    """
    key = _fold(title)
    if key in SECTIONS:
        section, item = SECTIONS[key]
        return CodedConcept(section.value, section.scheme_designator, code_meaning(title)), item
    return CodedConcept(FINDINGS.value, FINDINGS.scheme_designator, code_meaning(title)), FINDING


def code_meaning(text: str) -> str:
    """``text`` fitted to Code Meaning: LO, at most 64 bytes in UTF-8 (dciodvfy counts
    bytes, and accented letters take two), no backslash."""
    text = " ".join(text.replace("\\", "/").split())
    if len(text.encode("utf-8")) <= 64:
        return text
    ellipsis = "…"
    while len((text + ellipsis).encode("utf-8")) > 64:
        text = text[:-1]
    return text.rstrip() + ellipsis


def finding_concept(code: FindingCode) -> CodedConcept:
    """The engine's finding code as a coded concept with its Spanish meaning."""
    return CodedConcept(code.value, code.scheme, code_meaning(code.meaning_es))


def _fold(text: str) -> str:
    """Lower case without accents, for matching section titles."""
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))
