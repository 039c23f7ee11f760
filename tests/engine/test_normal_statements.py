"""The neural-text check reads global normal statements: a text that calls the study normal
beside a finding coded present is replaced by the structured report, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.labeler import get_labeler
from engine.writers import choose_text, write_structured
from engine.writers.check import global_normal_statements
from tests.engine.test_writers import _f

SHEET = Path(__file__).parent / "data" / "normal_statements_es.tsv"


def _sheet() -> list[tuple[str, str]]:
    rows = []
    for line in SHEET.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            kind, text = line.split("\t")
            rows.append((kind, text))
    return rows


@pytest.mark.parametrize(("kind", "text"), _sheet())
def test_sentences_written_apart_from_the_rules(kind: str, text: str) -> None:
    found = global_normal_statements(text)
    read = "not" if not found else ("acute" if found[0].acute_only else "global")
    assert read == kind


EFFUSION = [
    _f("pleural_effusion", "present", 0.9, "right"),
    _f("pneumonia", "absent", 0.05),
    _f("no_finding", "uncertain", 0.3),
]


@pytest.mark.parametrize(
    "text",
    [
        # names the finding and also calls the study normal
        "Derrame pleural derecho. Sin hallazgos patológicos significativos.",
        "Pequeño derrame pleural derecho. Por lo demás normal. Estudio dentro de la normalidad.",
        "Impresión: tórax sin alteraciones. Derrame pleural derecho.",
        "derrame pleural derecho. exploracion dentro de limites normales",
        # calls it normal without naming it (also an omission)
        "Radiografía de tórax normal.",
    ],
)
def test_a_normal_statement_beside_a_present_finding_is_replaced(text: str) -> None:
    written = choose_text("neural", EFFUSION, (("Hallazgos", text),))
    assert written.writer == "structured"
    assert "pleural_effusion: coded present, text calls the study normal" in written.reason
    assert written.sections == write_structured(EFFUSION)


@pytest.mark.parametrize(
    "text",
    [
        "Derrame pleural derecho. Sin otros hallazgos significativos.",
        "Derrame pleural derecho. Resto del estudio dentro de la normalidad.",
        "Derrame pleural derecho. Parénquima pulmonar sin alteraciones.",
    ],
)
def test_qualified_normal_statements_beside_the_finding_are_kept(text: str) -> None:
    written = choose_text("neural", EFFUSION, (("Hallazgos", text),))
    assert written.writer == "neural", written.reason


def test_an_acute_only_statement_does_not_deny_a_chronic_finding() -> None:
    findings = [_f("cardiomegaly", "present", 0.9), _f("pneumonia", "absent", 0.05)]
    kept = choose_text("neural", findings,
                       (("Hallazgos", "Cardiomegalia. Sin hallazgos cardiopulmonares agudos."),))
    assert kept.writer == "neural", kept.reason
    acute = [_f("pneumonia", "present", 0.9)]
    replaced = choose_text("neural", acute,
                           (("Hallazgos", "Neumonía. Sin hallazgos cardiopulmonares agudos."),))
    assert replaced.writer == "structured"
    assert "pneumonia: coded present, text calls the study normal" in replaced.reason


def test_devices_and_a_normal_study_agree() -> None:
    findings = [_f("support_devices", "present", 0.9), _f("no_finding", "present", 0.8),
                _f("pneumonia", "absent", 0.05)]
    text = "Sin hallazgos patológicos significativos. Dispositivos médicos."
    assert choose_text("neural", findings, (("Impresión", text),)).writer == "neural"


def test_normal_statements_are_read_in_spanish_only() -> None:
    with pytest.raises(ValueError, match="language"):
        global_normal_statements("No acute cardiopulmonary abnormality.", lang="en")
    # An English engine's text is not checked (nor replaced) whatever it says.
    english = choose_text("neural", EFFUSION,
                          (("FINDINGS", "Right pleural effusion. Normal study."),), language="en")
    assert english.writer == "neural"
    # The English labeler is not given the Spanish normal statements.
    said = get_labeler("en").label("Right pleural effusion. No acute abnormality.",
                                   sections=False)
    assert said.get("pleural_effusion") == "present"
