"""Coded concepts used in the report objects, with their Spanish code meanings.

DICOM lets a Code Meaning be given in the language of the document (PS3.3
C.17.3.2.4 / TID 1204), so every concept the node writes carries a Spanish
meaning; the code value and scheme stay the standard ones that systems match on.
"""

from __future__ import annotations

import unicodedata

from highdicom.sr import CodedConcept
from pydicom import Dataset

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
#: Presence as it reads after a finding name of any gender ("Cardiomegalia: presencia
#: indeterminada", not "indeterminado").
PRESENCE_TEXT_ES: dict[str, str] = {
    "present": "presente",
    "absent": "ausente",
    "uncertain": "presencia indeterminada",
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
#: Side as a phrase that agrees with any finding name, whatever its gender or number
#: ("Consolidación en hemitórax derecho", "Bronquiectasias en ambos hemitórax").
LATERALITY_TEXT_ES: dict[str, str] = {
    "left": "en hemitórax izquierdo",
    "right": "en hemitórax derecho",
    "bilateral": "en ambos hemitórax",
}
#: Finding site used when only the side is known: the thorax, with the code DICOM's current
#: code tables give for it (pydicom ``codes.SCT.Thorax``).
THORAX = CodedConcept("816094009", "SCT", "Tórax")

# TID 2000 sections: CID 7001 headings are all LOINC codes (the DCM 1210xx headings were
# retired from it), which RIS and HL7 bridges match on. The TEXT items inside them are
# CID 7002 elements: LOINC where CID 7002 has one, DCM where it has only a DCM code.
FINDINGS = CodedConcept("59776-5", "LN", "Hallazgos")
IMPRESSIONS = CodedConcept("19005-8", "LN", "Impresión")
RECOMMENDATIONS = CodedConcept("18783-1", "LN", "Recomendaciones")
CONCLUSIONS = CodedConcept("55110-1", "LN", "Conclusiones")
HISTORY = CodedConcept("11329-0", "LN", "Antecedentes")
INDICATIONS = CodedConcept("18785-6", "LN", "Indicaciones")
CLINICAL_INFORMATION = CodedConcept("55752-0", "LN", "Información clínica")
REQUEST = CodedConcept("55115-0", "LN", "Solicitud")
CURRENT_PROCEDURE = CodedConcept("55111-9", "LN", "Descripción del procedimiento")
PRIOR_PROCEDURES = CodedConcept("55114-3", "LN", "Estudios previos")
SUMMARY = CodedConcept("55112-7", "LN", "Resumen")
COMPLICATIONS = CodedConcept("55109-3", "LN", "Complicaciones")
# CID 7002 elements with no LOINC code in that context group.
FINDING = CodedConcept("121071", "DCM", "Hallazgo")
IMPRESSION = CodedConcept("121073", "DCM", "Impresión")
RECOMMENDATION = CodedConcept("121075", "DCM", "Recomendación")
CONCLUSION = CodedConcept("121077", "DCM", "Conclusión")
PROCEDURE_DESCRIPTION = CodedConcept("121065", "DCM", "Descripción del procedimiento")
PREVIOUS_FINDING = CodedConcept("121069", "DCM", "Hallazgo previo")
#: The disclaimer is a comment on the whole document.
COMMENT = CodedConcept("121106", "DCM", "Comentario")
#: TID 1500 row 12 container for free-text and coded evaluations of the whole study.
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Evaluaciones cualitativas")

#: A normal study, stated in the impression (never as a "finding" with a presence value).
NO_ABNORMALITY = CodedConcept("281900007", "SCT", "Sin hallazgos patológicos")

#: Section headings by normalised Spanish title: (section container, TEXT item concept).
SECTIONS: dict[str, tuple[CodedConcept, CodedConcept]] = {
    "hallazgos": (FINDINGS, FINDING),
    "impresion": (IMPRESSIONS, IMPRESSION),
    "impresion diagnostica": (IMPRESSIONS, IMPRESSION),
    "recomendaciones": (RECOMMENDATIONS, RECOMMENDATION),
    "recomendacion": (RECOMMENDATIONS, RECOMMENDATION),
    "conclusiones": (CONCLUSIONS, CONCLUSION),
    "conclusion": (CONCLUSIONS, CONCLUSION),
    "antecedentes": (HISTORY, HISTORY),
    "historia clinica": (HISTORY, HISTORY),
    "informacion clinica": (CLINICAL_INFORMATION, HISTORY),
    "datos clinicos": (CLINICAL_INFORMATION, HISTORY),
    "indicaciones": (INDICATIONS, REQUEST),
    "indicacion": (INDICATIONS, REQUEST),
    "motivo de consulta": (INDICATIONS, REQUEST),
    "solicitud": (REQUEST, REQUEST),
    "tecnica": (CURRENT_PROCEDURE, PROCEDURE_DESCRIPTION),
    "procedimiento": (CURRENT_PROCEDURE, PROCEDURE_DESCRIPTION),
    "comparacion": (PRIOR_PROCEDURES, PREVIOUS_FINDING),
    "estudios previos": (PRIOR_PROCEDURES, PREVIOUS_FINDING),
    "resumen": (SUMMARY, SUMMARY),
    "complicaciones": (COMPLICATIONS, FINDING),
}

#: Acquisition modality (CID 29, DCM) of the image library, by the source header's Modality.
MODALITY: dict[str, CodedConcept] = {
    "CR": CodedConcept("CR", "DCM", "Radiografía computarizada"),
    "DX": CodedConcept("DX", "DCM", "Radiografía digital"),
    "RG": CodedConcept("RG", "DCM", "Imagen radiográfica"),
    "PX": CodedConcept("PX", "DCM", "Radiografía panorámica"),
    "XA": CodedConcept("XA", "DCM", "Angiografía por rayos X"),
    "RF": CodedConcept("RF", "DCM", "Radiofluoroscopia"),
    "MG": CodedConcept("MG", "DCM", "Mamografía"),
    "CT": CodedConcept("CT", "DCM", "Tomografía computarizada"),
    "MR": CodedConcept("MR", "DCM", "Resonancia magnética"),
    "OT": CodedConcept("OT", "DCM", "Otra"),
}
#: DCM 121139 "Modality", the concept name of the library's modality descriptor.
MODALITY_CONCEPT_VALUE = "121139"

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


def uses_scheme(dataset: Dataset, scheme: str) -> bool:
    """Whether any code anywhere in ``dataset`` (content tree included) is of ``scheme``."""
    if dataset.get("CodingSchemeDesignator") == scheme:
        return True
    return any(
        uses_scheme(item, scheme)
        for element in dataset
        if element.VR == "SQ" and element.keyword != "CodingSchemeIdentificationSequence"
        for item in element.value
    )


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
