"""Impresión of the structured writer: a summary by clinical weight, hedged once, never a copy
of Hallazgos, never a finding the coded findings do not hold; read back by the Spanish labeler."""

from __future__ import annotations

import random

import pytest

from engine.labeler import get_labeler
from engine.result import FindingResult
from engine.writers import contradictions, write_structured
from engine.writers.structured import (
    CLINICAL_ORDER,
    NO_FINDINGS,
    NOT_CONCLUSIVE,
    impression,
    join_phrases,
)
from tests.engine.test_writers import _f, _random_findings
from training.bridge.english_words import english_words_in
from training.findings import FINDINGS

BANDS = {f.key: (0.2, 0.5) for f in FINDINGS}


def _sections(findings: list[FindingResult]) -> dict[str, str]:
    return dict(write_structured(findings, bands=BANDS))


def test_a_normal_study_has_the_normal_impression_only_when_coded_normal() -> None:
    absent = [_f(k, "absent", 0.03) for k in ("pneumonia", "pleural_effusion", "atelectasis")]
    assert _sections([*absent, _f("no_finding", "present", 0.9)])["Impresión"] == NO_FINDINGS
    # The model called nothing, but did not call the study normal either.
    for presence in ("uncertain", "absent"):
        sections = _sections([*absent, _f("no_finding", presence, 0.4)])  # type: ignore[arg-type]
        assert sections["Impresión"] == NOT_CONCLUSIVE
        assert sections["Hallazgos"] != sections["Impresión"]


def test_present_findings_are_combined_by_clinical_weight_not_probability() -> None:
    findings = [
        _f("atelectasis", "present", 0.95, "left"),
        _f("pleural_effusion", "present", 0.70, "right"),
        _f("pneumothorax", "present", 0.60, "right"),
        _f("no_finding", "uncertain", 0.2),
    ]
    text = _sections(findings)["Impresión"]
    assert text == "Neumotórax derecho, derrame pleural derecho y atelectasia izquierda."
    assert CLINICAL_ORDER.index("pneumothorax") < CLINICAL_ORDER.index("atelectasis")


def test_findings_on_one_side_share_it_and_y_becomes_e() -> None:
    findings = [_f("pleural_effusion", "present", 0.9, "right"),
                _f("atelectasis", "present", 0.8, "right")]
    assert _sections(findings)["Impresión"] == (
        "Derrame pleural y atelectasia en el hemitórax derecho."
    )
    both = [_f("pneumonia", "present", 0.9), _f("infiltration", "present", 0.8)]
    assert _sections(both)["Impresión"] == "Neumonía e infiltrado pulmonar."
    assert join_phrases(["edema", "hiperinsuflación"]) == "edema e hiperinsuflación"
    assert join_phrases(["edema", "hielo"]) == "edema y hielo"  # a diphthong keeps "y"
    assert join_phrases(["a", "b", "c"]) == "a, b y c"


def test_uncertain_findings_are_hedged_once_per_band() -> None:
    findings = [
        _f("pleural_effusion", "present", 0.9, "left"),
        _f("edema", "uncertain", 0.25),
        _f("atelectasis", "uncertain", 0.22),
        _f("pneumonia", "uncertain", 0.45),
    ]
    text = _sections(findings)["Impresión"]
    assert text == (
        "Derrame pleural izquierdo. Probable neumonía. "
        "No se descartan edema pulmonar y atelectasia."
    )
    assert text.lower().count("no se descarta") == 1
    two_probable = [_f("edema", "uncertain", 0.45), _f("pneumonia", "uncertain", 0.48)]
    assert _sections(two_probable)["Impresión"] == (
        "Hallazgos sugestivos de neumonía y edema pulmonar."
    )


def test_devices_close_the_impression() -> None:
    findings = [_f("support_devices", "present", 0.9), _f("pneumonia", "present", 0.8),
                _f("no_finding", "uncertain", 0.3)]
    assert _sections(findings)["Impresión"] == "Neumonía. Dispositivos médicos."


def test_an_unknown_finding_is_named_by_its_coded_name() -> None:
    from engine.result import FindingCode

    odd = FindingResult("pectus", FindingCode("1", "99CXR", "Pectus excavatum"), "present", 0.9)
    assert impression([odd]) == "Pectus excavatum."


@pytest.mark.parametrize("seed", range(60))
def test_impression_summarises_only_what_is_coded(seed: int) -> None:
    findings = _random_findings(random.Random(1000 + seed))
    sections = _sections(findings)
    hallazgos, summary = sections["Hallazgos"], sections["Impresión"]
    assert summary and summary != hallazgos
    assert not english_words_in(summary)
    coded = {f.key: f.presence for f in findings}
    labeler = get_labeler("es")
    # Read back alone, Impresión names nothing the coded findings do not hold, with the same
    # presence (devices aside: "Dispositivos médicos" is the whole class).
    for key, said in labeler.label(summary, sections=False).items():
        if key == "no_finding":
            assert coded.get("no_finding") == "present" or not any(
                p != "absent" for k, p in coded.items() if k not in ("no_finding",
                                                                    "support_devices"))
            continue
        assert coded.get(key) == said, (key, said, summary)
    # The whole text agrees with the coded findings (as the check reads it).
    assert contradictions(f"{hallazgos} {summary}", findings) == ()
    # Every finding Impresión names, Hallazgos names too.
    for key in labeler.label(summary, sections=False):
        if key != "no_finding":
            assert key in labeler.label(hallazgos, sections=False), (key, hallazgos)


@pytest.mark.parametrize(
    ("findings", "expected"),
    [
        # Side adjectives agree with the noun's gender and number.
        ([_f("atelectasis", "present", 0.9, "left")], "Atelectasia izquierda."),
        ([_f("pleural_effusion", "present", 0.9, "left")], "Derrame pleural izquierdo."),
        ([_f("infiltration", "present", 0.9, "bilateral")], "Infiltrado pulmonar bilateral."),
        ([_f("bronchiectasis", "uncertain", 0.3)], "No se descartan bronquiectasias."),
        ([_f("pneumonia", "uncertain", 0.3, "right")], "No se descarta neumonía derecha."),
    ],
)
def test_agreement(findings: list[FindingResult], expected: str) -> None:
    assert _sections(findings)["Impresión"] == expected


def test_a_coded_normal_study_with_an_uncertain_finding_is_not_called_normal() -> None:
    findings = [_f("no_finding", "present", 0.8), _f("atelectasis", "uncertain", 0.25),
                _f("pleural_effusion", "absent", 0.02)]
    text = _sections(findings)["Impresión"]
    assert text == "Sin hallazgos patológicos concluyentes. No se descarta atelectasia."
    assert NO_FINDINGS not in text
