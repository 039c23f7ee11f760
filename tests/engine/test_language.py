"""The Spanish grammar: agreement, word order, negation grouping, and what the Spanish
labeler reads back from every realisation."""

from __future__ import annotations

import itertools

import pytest

from engine.labeler import get_labeler
from engine.language import Location, Statement, realise, realise_one
from engine.language.grammar import _UNLOCATED, NORMAL_SENTENCES, NORMAL_STYLE, ZONE_NOUNS
from engine.language.lexicon import FINDING_NOUNS, adj
from training.bridge.english_words import english_words_in


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (Statement("pleural_effusion", severity=("small",), location=Location("right")),
         "Pequeño derrame pleural derecho."),
        (Statement("atelectasis", severity=("linear",), plural=True,
                   location=Location("bilateral", "base")),
         "Atelectasias laminares en ambas bases."),
        (Statement("consolidation", location=Location("left", "lower_lobe")),
         "Condensación en el lóbulo inferior izquierdo."),
        (Statement("opacity" if False else "lung_opacity", location=Location(None, "lingula")),
         "Opacidad en la língula."),
        (Statement("pneumonia", "uncertain", hedge="cannot_exclude",
                   location=Location("left", "base")),
         "No se descarta neumonía en la base izquierda."),
        (Statement("nodule", "uncertain", hedge="possible", plural=True),
         "Posibles nódulos pulmonares."),
        (Statement("nodule", size_mm=11, location=Location("right", "upper_lobe"),
                   change="unchanged"),
         "Nódulo de 11 mm en el lóbulo superior derecho, sin cambios respecto al estudio previo."),
        (Statement("nodule", size_mm=7.5), "Nódulo pulmonar de 7,5 mm."),
        (Statement("fracture", change="old", location=Location("right", "clavicle")),
         "Fractura antigua de la clavícula derecha."),
        (Statement("elevated_hemidiaphragm", location=Location("left")),
         "Elevación del hemidiafragma izquierdo."),
        (Statement("cardiomegaly", severity=("mild",)), "Cardiomegalia leve."),
        (Statement("cardiomegaly", "absent", normal_style=True),
         "Índice cardiotorácico conservado."),
        (Statement("pleural_effusion", "absent", normal_style=True),
         "Senos costofrénicos libres."),
        (Statement("pleural_effusion", "absent", change="resolved", location=Location("left")),
         "Resolución del derrame pleural izquierdo."),
        (Statement("support_devices", "absent", change="resolved", device="nasogastric_tube"),
         "Retirada de la sonda nasogástrica."),
        (Statement("granuloma", severity=("large", "calcified"),
                   location=Location("left", "lower_lobe")),
         "Granuloma calcificado de gran tamaño en el lóbulo inferior izquierdo."),
        (Statement("pleural_effusion", location=Location("bilateral", "costophrenic")),
         "Pinzamiento de ambos senos costofrénicos."),
        (Statement("spondylosis", location=Location(None, "thoracic_spine")),
         "Cambios degenerativos en la columna dorsal."),
        (Statement("no_finding"), "Sin hallazgos patológicos significativos."),
    ],
)
def test_realisation(statement: Statement, expected: str) -> None:
    assert realise_one(statement) == expected


def test_negations_are_grouped_with_ni_and_the_verb_agrees_with_the_first_noun() -> None:
    plural_first = realise([Statement("consolidation", "absent"),
                            Statement("pleural_effusion", "absent")])
    assert plural_first == ["No se observan condensaciones ni derrame pleural."]
    singular_first = realise([Statement("pneumothorax", "absent"),
                              Statement("pleural_effusion", "absent"),
                              Statement("nodule", "absent")])
    assert singular_first == ["No se observa neumotórax, derrame pleural ni nódulos pulmonares."]


def test_adjectives_agree_in_gender_and_number() -> None:
    derecho = adj("derecho")
    assert [derecho.agree(g, p) for g, p in itertools.product("mf", (False, True))] == [
        "derecho", "derechos", "derecha", "derechas"]
    bilateral = adj("bilateral")
    assert bilateral.agree("f", True) == "bilaterales"
    for key, noun in FINDING_NOUNS.items():
        st = Statement(key, location=Location("left"), plural=noun.count)
        text = realise_one(st)
        side = "izquierd" + ("o" if noun.gender == "m" else "a")
        if key not in _UNLOCATED and key != "elevated_hemidiaphragm":
            assert side in text, (key, text)


def test_every_zone_and_side_is_spanish() -> None:
    for zone, side in itertools.product(ZONE_NOUNS, ("right", "left", "bilateral", None)):
        text = realise_one(Statement("lung_opacity", location=Location(side, zone)))  # type: ignore[arg-type]
        assert not english_words_in(text), text
        assert text.endswith(".") and text[0].isupper()


def test_normal_statements_are_full_spanish_sentences() -> None:
    for text in [*NORMAL_SENTENCES.values(), *NORMAL_STYLE.values()]:
        assert text.endswith(".") and text[0].isupper()
        assert not english_words_in(text), text


PRESENCES = ("present", "absent", "uncertain")


@pytest.mark.parametrize("key", sorted(FINDING_NOUNS))
def test_the_spanish_labeler_reads_back_what_was_realised(key: str) -> None:
    """For every finding, presence, side and hedge, the Spanish labeler reads the sentence
    the grammar wrote as stating that finding with that presence."""
    labeler = get_labeler("es")
    cases = []
    for presence, side in itertools.product(PRESENCES, (None, "right", "bilateral")):
        hedges = ("possible", "probable", "cannot_exclude", "suspected") if (
            presence == "uncertain") else (None,)
        for hedge in hedges:
            cases.append(Statement(key, presence, hedge=hedge,  # type: ignore[arg-type]
                                   location=Location(side) if side else None))  # type: ignore[arg-type]
    for st in cases:
        text = " ".join(realise([st]))
        got = labeler.label(text, sections=False).get(key)
        assert got == st.presence, (st, text, got)
