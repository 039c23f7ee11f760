"""The English -> Spanish bridge: parse, realise, drop what it cannot read, no English left."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from training.bridge import bridge_report, parse_sentence, spanish_reference, spanish_target
from training.bridge.coverage import measure
from training.bridge.english_words import english_words_in


def test_spanish_target_signature() -> None:
    sig = inspect.signature(spanish_target)
    assert list(sig.parameters) == ["report_text"]
    assert sig.return_annotation in ("str | None", str | None)


@pytest.mark.parametrize(
    ("english", "spanish"),
    [
        ("The heart is normal in size. The lungs are clear. No pneumothorax or pleural "
         "effusion.",
         "Índice cardiotorácico conservado. Parénquima pulmonar sin alteraciones. "
         "No se observa neumotórax ni derrame pleural."),
        ("Small left pleural effusion. Mild cardiomegaly.",
         "Pequeño derrame pleural izquierdo. Cardiomegalia leve."),
        ("Patchy opacity in the right lower lobe, possibly pneumonia.",
         "Opacidad parcheada en el lóbulo inferior derecho. Posible neumonía."),
        ("Stable calcified granuloma in the left upper lobe.",
         "Granuloma calcificado estable en el lóbulo superior izquierdo."),
        ("Cannot exclude a small right apical pneumothorax.",
         "No se descarta pequeño neumotórax en el vértice derecho."),
        ("Bibasilar atelectasis.", "Atelectasia en ambas bases."),
        ("Degenerative changes of the thoracic spine.",
         "Cambios degenerativos en la columna dorsal."),
        ("No acute cardiopulmonary abnormality.", "Sin hallazgos cardiopulmonares agudos."),
    ],
)
def test_reports_are_realised_in_spanish(english: str, spanish: str) -> None:
    assert spanish_target(english) == spanish


def test_unparseable_sentences_are_dropped_and_reported_never_passed_through() -> None:
    report = "Small right pleural effusion. The patient was shielded by the technologist."
    bridged = bridge_report(report)
    assert [s.source for s in bridged.dropped] == ["The patient was shielded by the technologist."]
    assert "patient" in bridged.dropped[0].unknown
    assert spanish_target(report) == "Pequeño derrame pleural derecho."
    assert spanish_target("The patient was shielded by the technologist.") is None
    assert not bridged.complete


def test_sections_become_hallazgos_and_impresion() -> None:
    report = "FINDINGS: Heart size is normal. No focal consolidation.\nIMPRESSION: Normal chest."
    assert spanish_reference(report, headings=True) == (
        "Hallazgos: Índice cardiotorácico conservado. No se observan condensaciones focales.\n"
        "Impresión: Sin hallazgos patológicos significativos."
    )
    assert bridge_report(report).complete


def test_de_identification_tokens_are_not_words() -> None:
    parsed = parse_sentence("There is XXXX biapical scarring.")
    assert parsed.ok and not parsed.unknown


@pytest.mark.parametrize(
    ("english", "spanish"),
    [
        # "calcified" is the atheromatosis, not a calcified elongation.
        ("The descending aorta is tortuous and calcified.",
         "Elongación aórtica. Ateromatosis aórtica."),
        # A sign of a finding the sentence names is not a second, certain statement of it.
        ("Mild blunting of both costophrenic angles which could reflect small effusions.",
         "Posible pinzamiento de ambos senos costofrénicos."),
        ("Blunting of the left costophrenic angle.",
         "Pinzamiento del seno costofrénico izquierdo."),
    ],
)
def test_english_and_spanish_readings_agree(english: str, spanish: str) -> None:
    from engine.labeler import get_labeler

    assert spanish_target(english) == spanish
    en = {k: v for k, v in get_labeler("en").label(english).items() if k != "no_finding"}
    es = {k: v for k, v in get_labeler("es").label(spanish).items() if k != "no_finding"}
    assert en == es


def test_a_sign_beside_its_denied_finding_is_not_realised() -> None:
    # "blunting ... without effusion": Spanish would have to deny the effusion and state its
    # sign; the sentence is dropped and reported rather than contradicted.
    parsed = parse_sentence("Slight blunting of the right costophrenic angle, without effusion.")
    assert not parsed.ok and "blunting" in parsed.unknown


def test_words_the_bridge_does_not_know_make_a_sentence_unparseable() -> None:
    # "lordotic" carries meaning the grammar cannot say: the sentence must not be realised.
    assert not parse_sentence("Apical lordotic view shows clear lungs.").ok


@pytest.fixture(scope="module")
def test_split_figures(shared_data: Path) -> dict[str, object]:
    path = shared_data / "iu_xray" / "r2gen_split_annotation.json"
    if not path.exists():
        pytest.skip(f"{path} not available")
    records = json.loads(path.read_text(encoding="utf-8"))["test"]
    return measure([r["report"] for r in records])


def test_no_english_word_in_any_spanish_output_of_the_test_split(
    test_split_figures: dict[str, object],
) -> None:
    assert test_split_figures["english_left"] == []
    assert english_words_in("The lungs are clear") == ["the", "lungs", "are", "clear"]


def test_per_finding_agreement_on_the_test_split(test_split_figures: dict[str, object]) -> None:
    agreement = test_split_figures["agreement"]
    assert isinstance(agreement, dict)
    low = {k: round(ce, 3) for k, (_, ce, n) in agreement.items() if ce < 0.95 and n >= 5}
    assert low == {}
    sentences = test_split_figures["sentences_realised"]
    assert isinstance(sentences, int) and sentences >= 0.78 * 2529  # coverage must not regress


def test_evaluate_lang_es_scores_against_bridge_references(
    shared_data: Path, tmp_path: Path
) -> None:
    """`training evaluate --lang es` on English-only IU X-Ray: Spanish references come from
    the bridge, and the clinical F1 of the Spanish output is read with the Spanish labeler."""
    from training.cli import main

    ann = json.loads((shared_data / "iu_xray" / "r2gen_split_annotation.json").read_text())
    normal = ("Índice cardiotorácico conservado. Parénquima pulmonar sin alteraciones. "
              "No se observa neumotórax ni derrame pleural.")
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"study_id": e["id"], "report": normal}) + "\n"
                             for e in ann["test"]), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["evaluate", "--predictions", str(preds), "--dataset", "iu_xray",
                 "--root", str(shared_data / "iu_xray"), "--split", "test", "--lang", "es",
                 "--sections", "findings", "--no-meteor", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert metrics["lang"] == "es"
    assert metrics["n_studies"] >= 580  # the few whose findings the bridge cannot read drop
    assert 0.0 < metrics["nlg"]["BLEU-1"] < 1.0
    clinical = metrics["clinical"]["per_finding"]
    assert clinical["no_finding"]["recall"] == 1.0
    assert clinical["cardiomegaly"]["recall"] == 0.0


def test_side_by_side_sheet(shared_data: Path, tmp_path: Path) -> None:
    import runpy

    script = Path(__file__).parents[2] / "scripts" / "side_by_side.py"
    module = runpy.run_path(str(script))
    ann = json.loads((shared_data / "iu_xray" / "r2gen_split_annotation.json").read_text())
    study = ann["test"][0]["id"]
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"study_id": study, "report": "Cardiomegalia leve."}) + "\n")
    out = tmp_path / "sheet.html"
    assert module["main"](["iu", "--annotation", str(shared_data / "iu_xray" /
                                               "r2gen_split_annotation.json"),
                           "--n", "1", "--predictions", str(preds), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert study in page and "Cardiomegalia leve." in page and 'lang="es"' in page


@pytest.mark.parametrize(
    ("english", "spanish"),
    [
        ("Endotracheal tube terminates 3 cm above the carina.",
         "Tubo endotraqueal con extremo a 3 cm por encima de la carina."),
        ("Right internal jugular central venous catheter with tip in the SVC.",
         "Catéter venoso central yugular derecho con extremo en la vena cava superior."),
        ("Nasogastric tube tip in the stomach.", "Sonda nasogástrica con extremo en el estómago."),
        ("Interval increase in size of the left pleural effusion.",
         "Derrame pleural izquierdo, que ha aumentado respecto al estudio previo."),
        ("Heart size is mildly enlarged.", "Cardiomegalia leve."),
        ("Elevated right hemidiaphragm.", "Elevación del hemidiafragma derecho."),
        ("Emphysematous changes in the upper lobes.", "Enfisema en los lóbulos superiores."),
    ],
)
def test_devices_changes_and_places(english: str, spanish: str) -> None:
    assert spanish_target(english) == spanish
