"""The report writers: structured text from coded findings, laterality from boxes, and the
check that replaces a contradicting neural report."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from engine.labeler import get_labeler
from engine.language.lexicon import FINDING_NOUNS
from engine.result import (
    EngineIdentity,
    FindingCode,
    FindingResult,
    Presence,
    Region,
    StudyReport,
)
from engine.writers import choose_text, contradictions, laterality_from_region, write_structured
from training.bridge.english_words import english_words_in
from training.findings import FINDINGS


def _f(key: str, presence: Presence, p: float, laterality: str | None = None) -> FindingResult:
    spec = next(f for f in FINDINGS if f.key == key)
    return FindingResult(key, FindingCode(spec.code_value, "SCT", spec.name_es), presence, p,
                         laterality=laterality)  # type: ignore[arg-type]


def _random_findings(rng: random.Random) -> list[FindingResult]:
    out = []
    for spec in FINDINGS:
        if spec.key == "no_finding":
            continue
        presence = rng.choices(["absent", "present", "uncertain"], weights=[6, 1, 1])[0]
        p = {"absent": 0.05, "present": 0.9, "uncertain": rng.uniform(0.25, 0.45)}[presence]
        side = rng.choice([None, "left", "right", "bilateral"]) if spec.locatable else None
        out.append(_f(spec.key, presence, p, side))  # type: ignore[arg-type]
    abnormal = any(f.presence != "absent" and f.key != "support_devices" for f in out)
    out.append(_f("no_finding", "absent" if abnormal else "present", 0.5))
    return out


def test_structured_report_of_a_normal_study() -> None:
    findings = [_f(k, "absent", 0.02) for k in FINDING_NOUNS if k != "no_finding"]
    findings.append(_f("no_finding", "present", 0.95))
    sections = dict(write_structured(findings))
    assert list(sections) == ["Hallazgos", "Impresión"]
    assert sections["Hallazgos"] == (
        "Índice cardiotorácico conservado. Mediastino de anchura normal. "
        "No se observan condensaciones, infiltrados pulmonares, atelectasias, neumotórax ni edema "
        "pulmonar. Senos costofrénicos libres."
    )
    assert sections["Impresión"] == "Sin hallazgos patológicos significativos."


def test_a_small_finding_set_states_each_acute_finding_it_rules_out() -> None:
    """An engine of six findings says what it ruled out, not only the costophrenic angles."""
    keys = ("edema", "pneumonia", "atelectasis", "pleural_effusion", "infiltration")
    findings = [_f(k, "absent", 0.05) for k in keys] + [_f("no_finding", "present", 0.8)]
    hallazgos = dict(write_structured(findings))["Hallazgos"]
    assert hallazgos == (
        "No se observan infiltrados pulmonares, atelectasias, neumonía ni edema pulmonar. "
        "Senos costofrénicos libres."
    )
    read = get_labeler("es").label(hallazgos)
    assert all(read[k] == "absent" for k in keys)


def test_structured_report_states_side_and_probability_band() -> None:
    findings = [
        _f("pleural_effusion", "present", 0.93, "left"),
        _f("pneumonia", "uncertain", 0.45),
        _f("atelectasis", "uncertain", 0.22),
        _f("cardiomegaly", "absent", 0.03),
        _f("pneumothorax", "absent", 0.01),
    ]
    bands = {"pneumonia": (0.2, 0.5), "atelectasis": (0.2, 0.5)}
    sections = dict(write_structured(findings, bands=bands))
    assert sections["Hallazgos"] == (
        "Derrame pleural izquierdo. Probable neumonía. No se descarta atelectasia. "
        "Índice cardiotorácico conservado. No se observa neumotórax."
    )
    assert sections["Impresión"] == (
        "Derrame pleural izquierdo. Probable neumonía. No se descarta atelectasia."
    )


@pytest.mark.parametrize("seed", range(40))
def test_structured_report_never_contradicts_its_findings(seed: int) -> None:
    findings = _random_findings(random.Random(seed))
    sections = write_structured(findings)
    text = " ".join(body for _, body in sections)
    assert contradictions(text, findings) == ()
    assert not english_words_in(text)
    said = get_labeler("es").label(text, sections=False)
    for f in findings:
        if f.presence == "present" and f.key in FINDING_NOUNS and f.key != "no_finding":
            assert said.get(f.key) == "present", (f.key, text)


def test_laterality_from_a_box_on_a_frontal_image() -> None:
    width = 1000
    left_of_image = Region("1.2.3", 100, 400, 300, 600)
    right_of_image = Region("1.2.3", 650, 400, 900, 600)
    across = Region("1.2.3", 200, 400, 800, 600)
    assert laterality_from_region(left_of_image, width) == "right"  # patient right
    assert laterality_from_region(right_of_image, width) == "left"
    assert laterality_from_region(across, width) == "bilateral"
    # A flipped image (Patient Orientation "R\\F") swaps the sides.
    assert laterality_from_region(left_of_image, width, row_direction="R") == "left"
    assert laterality_from_region(left_of_image, width, view="LATERAL") is None
    assert laterality_from_region(left_of_image, width, row_direction="P") is None
    with pytest.raises(ValueError, match="image_width"):
        laterality_from_region(left_of_image, 0)


FINDINGS_EFFUSION = [
    _f("pleural_effusion", "present", 0.9, "right"),
    _f("cardiomegaly", "absent", 0.05),
    _f("pneumothorax", "absent", 0.02),
    _f("pneumonia", "uncertain", 0.35),
]


def test_neural_text_that_agrees_is_kept() -> None:
    neural = (("Hallazgos", "Derrame pleural derecho. Sin neumotórax."),
              ("Impresión", "Derrame pleural derecho."))
    written = choose_text("neural", FINDINGS_EFFUSION, neural)
    assert written.writer == "neural" and written.sections == neural
    assert "check passed" in written.reason


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("No se observa derrame pleural.", "pleural_effusion: coded present, text says absent"),
        ("Derrame pleural derecho. Cardiomegalia.",
         "cardiomegaly: coded absent, text says present"),
        ("Derrame pleural derecho. No se descarta neumotórax.",
         "pneumothorax: coded absent, text says uncertain"),
        ("Derrame pleural derecho y neumonía basal.",
         "pneumonia: coded uncertain, text says present"),
        ("derrame pleural derecho. indice cardiotoracico aumentado",  # dictated, no accents
         "cardiomegaly: coded absent, text says present"),
    ],
)
def test_neural_text_that_contradicts_is_replaced_by_the_structured_report(
    text: str, why: str
) -> None:
    written = choose_text("neural", FINDINGS_EFFUSION, (("Hallazgos", text),))
    assert written.writer == "structured"
    assert why in written.reason
    assert written.sections == write_structured(FINDINGS_EFFUSION)


def test_empty_neural_text_and_the_structured_setting() -> None:
    empty = choose_text("neural", FINDINGS_EFFUSION, (("Hallazgos", "  "),))
    assert empty.writer == "structured" and "no text" in empty.reason
    structured = choose_text("structured", FINDINGS_EFFUSION)
    assert structured.writer == "structured" and structured.sections == write_structured(
        FINDINGS_EFFUSION)
    with pytest.raises(ValueError, match="writer"):
        choose_text("template", FINDINGS_EFFUSION)


def test_the_sr_narrative_records_which_writer_wrote_the_text_and_why(
    real_datasets: dict[str, Dataset],
) -> None:
    from dicomnode.report.narrative import diagnostic_imaging_report

    source = real_datasets["rg1_chest_cr_uncompressed.dcm"]
    written = choose_text("neural", FINDINGS_EFFUSION, (("Hallazgos", "Cardiomegalia."),))
    engine = EngineIdentity("cxr-test", "1.0", "a" * 64)

    def report(writer: str, reason: str) -> StudyReport:
        return StudyReport(
            str(source.StudyInstanceUID), (str(source.SOPInstanceUID),),
            tuple(FINDINGS_EFFUSION), written.sections, engine, writer=writer,
            writer_reason=reason,
        )

    def comments(r: StudyReport) -> list[str]:
        tree = diagnostic_imaging_report(r, [source])
        return [i.TextValue for i in tree.ContentSequence if i.ValueType == "TEXT"]

    recorded = comments(report(written.writer, written.reason))
    assert any(c.startswith("Texto redactado por: structured. Motivo: neural report "
                            "contradicted") for c in recorded), recorded
    assert not any("redactado por" in c for c in comments(report("", "")))


def test_sr_with_the_writer_note_passes_dciodvfy(
    real_datasets: dict[str, Dataset], tmp_path: Path
) -> None:
    from dicomnode.report import build_report_objects
    from tests.support.dicom_peers import dciodvfy_errors

    source = real_datasets["rg1_chest_cr_uncompressed.dcm"]
    written = choose_text("neural", FINDINGS_EFFUSION, (("Hallazgos", "Cardiomegalia."),))
    report = StudyReport(
        str(source.StudyInstanceUID), (str(source.SOPInstanceUID),), tuple(FINDINGS_EFFUSION),
        written.sections, EngineIdentity("cxr-test", "1.0", "a" * 64),
        writer=written.writer, writer_reason=written.reason,
    )
    narrative = build_report_objects(report, [source])[0]
    path = tmp_path / "narrative.dcm"
    narrative.save_as(path, enforce_file_format=True)
    errors, output = dciodvfy_errors(path)
    assert not errors, output


def test_structured_writer_takes_the_side_from_the_box() -> None:
    box_on_image_left = Region("1.2.3", 50, 300, 400, 700)  # patient right on a PA frontal
    effusion = FindingResult("pleural_effusion",
                             FindingCode("60046008", "SCT", "Derrame pleural"), "present", 0.9,
                             region=box_on_image_left)
    sections = dict(write_structured([effusion], image_width=1000))
    assert sections["Hallazgos"] == "Derrame pleural derecho."
    flipped = dict(write_structured([effusion], image_width=1000, row_direction="R"))
    assert flipped["Hallazgos"] == "Derrame pleural izquierdo."
    assert dict(write_structured([effusion]))["Hallazgos"] == "Derrame pleural."


def test_devices_alone_leave_the_impression_normal() -> None:
    findings = [_f("support_devices", "present", 0.9), _f("cardiomegaly", "absent", 0.02),
                _f("pleural_effusion", "absent", 0.02)]
    sections = dict(write_structured(findings))
    assert sections["Impresión"] == (
        "Sin hallazgos patológicos significativos. Dispositivos médicos."
    )
    assert sections["Hallazgos"].startswith("Dispositivos médicos. Índice cardiotorácico")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        # A present finding left out reads as a normal study to a hurried reader.
        ("Sin neumotórax. Índice cardiotorácico conservado.",
         "pleural_effusion: coded present, text does not mention it"),
    ],
)
def test_neural_text_that_omits_a_present_finding_is_replaced(text: str, why: str) -> None:
    written = choose_text("neural", FINDINGS_EFFUSION, (("Hallazgos", text),))
    assert written.writer == "structured"
    assert why in written.reason
