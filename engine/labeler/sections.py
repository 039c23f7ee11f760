"""Cut a radiology report into its sections (FINDINGS, IMPRESSION, ...), in English or Spanish.

Headers are recognised at the start of a line or inline (``"... IMPRESSION: ..."``), with or
without a colon when they stand alone on their line. Text before the first header goes to
``"other"``. Headers are matched on accent-free lower-case text, so ``IMPRESIÓN`` and
``Impresion`` both count.
"""

from __future__ import annotations

import logging
import re

from engine.labeler.text import fold

logger = logging.getLogger(__name__)

#: Header spelling (accent-free, lower case) -> canonical section name.
HEADERS: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "findings and impression": "findings",
    "findings/impression": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "comparison": "comparison",
    "comparisons": "comparison",
    "indication": "indication",
    "indications": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "clinical indication": "indication",
    "history": "history",
    "clinical history": "history",
    "technique": "technique",
    "examination": "technique",
    "exam": "technique",
    "procedure": "technique",
    "notification": "other",
    "recommendation": "other",
    "recommendations": "other",
    "recommendation(s)": "other",
    "hallazgos": "findings",
    "descripcion": "findings",
    "informe": "findings",
    "impresion": "impression",
    "impresion diagnostica": "impression",
    "conclusion diagnostica": "impression",
    "conclusiones": "impression",
    "juicio diagnostico": "impression",
    "diagnostico": "impression",
    "comparacion": "comparison",
    "indicacion": "indication",
    "motivo": "indication",
    "motivo de consulta": "indication",
    "motivo del estudio": "indication",
    "antecedentes": "history",
    "historia clinica": "history",
    "tecnica": "technique",
    "exploracion": "technique",
}

_HEADER_ALT = "|".join(
    re.escape(h) for h in sorted(HEADERS, key=len, reverse=True)
)
# An inline header needs a colon; a header alone on its line may omit it.
_HEADER_RE = re.compile(
    rf"(?:(?<![\w])(?P<h1>{_HEADER_ALT})\s*:)|(?:^[ \t]*(?P<h2>{_HEADER_ALT})[ \t]*$)",
    re.MULTILINE,
)

#: Sections the labeler reads; the others (indication, history...) speak of the question,
#: not of the image.
LABELED_SECTIONS: tuple[str, ...] = ("findings", "impression")


def split_sections(text: str, lang: str = "en") -> dict[str, str]:
    """The sections of ``text``: canonical name -> text (whitespace collapsed).

    A section that appears twice is joined. Text before any header is ``"other"``. ``lang`` is
    accepted for symmetry; both languages' headers are always recognised.
    """
    del lang
    folded = fold(text)
    out: dict[str, list[str]] = {}
    last_name, last_end = "other", 0
    for match in _HEADER_RE.finditer(folded):
        chunk = text[last_end : match.start()]
        out.setdefault(last_name, []).append(chunk)
        header = (match.group("h1") or match.group("h2") or "").strip()
        last_name, last_end = HEADERS[header], match.end()
    out.setdefault(last_name, []).append(text[last_end:])
    result = {}
    for name, chunks in out.items():
        joined = " ".join(" ".join(c.split()) for c in chunks if c.strip())
        if joined:
            result[name] = joined
    return result


def labeled_text(text: str, lang: str = "en") -> str:
    """The part of a report that describes the image: FINDINGS and IMPRESSION when headed.

    A report without those headers (a generated draft, a PadChest sentence list) is read whole,
    minus any indication, history, comparison or technique section.
    """
    sections = split_sections(text, lang)
    kept = [sections[s] for s in LABELED_SECTIONS if s in sections]
    if kept:
        return " ".join(kept)
    return sections.get("other", "")
