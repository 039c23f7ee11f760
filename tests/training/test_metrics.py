"""NLG metrics against pycocoevalcap and hand-computed values; clinical metrics on counted cases."""

from __future__ import annotations

import math
import shutil

import pytest

from training.metrics.clinical import PRF, clinical_scores, clinical_scores_from_text
from training.metrics.nlg import MeteorScorer, clean_report_r2gen, nlg_scores

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")

REFS = [
    "The heart is enlarged. There is a small left pleural effusion.",
    "No acute cardiopulmonary abnormality. The lungs are clear.",
    "Mild cardiomegaly. No pneumothorax.",
]
HYPS = [
    "The heart is normal. There is a small left pleural effusion.",
    "The lungs are clear. No acute cardiopulmonary abnormality.",
    "No pneumothorax or effusion.",
]


def test_r2gen_cleaning() -> None:
    assert clean_report_r2gen("The heart is normal. No effusion, no pneumothorax.") == (
        "the heart is normal . no effusion no pneumothorax ."
    )
    assert clean_report_r2gen("1. Clear lungs.. 2. No effusion.") == "clear lungs . no effusion ."


def test_hand_computed_bleu1_and_rouge_l() -> None:
    # "the heart is normal ." vs "the heart is enlarged .": 4 of 5 unigrams match, same length.
    scores = nlg_scores(["The heart is enlarged."], ["The heart is normal."], meteor=False)
    assert scores["BLEU-1"] == pytest.approx(4 / 5, abs=1e-6)
    # bigrams: "the heart", "heart is" match out of 4
    assert scores["BLEU-2"] == pytest.approx(math.sqrt(4 / 5 * 2 / 4), abs=1e-6)
    # LCS = 4 tokens of 5 each: P = R = 0.8, so F(beta=1.2) = 0.8.
    assert scores["ROUGE-L"] == pytest.approx(0.8, abs=1e-9)


def test_identical_reports_score_one() -> None:
    scores = nlg_scores(REFS, REFS, meteor=False)
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L"):
        assert scores[name] == pytest.approx(1.0, abs=1e-6)
    assert scores["CIDEr"] > 5.0  # 10 x mean cosine, with document frequencies from refs


def test_matches_pycocoevalcap_called_directly() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {str(i): [clean_report_r2gen(r)] for i, r in enumerate(REFS)}
    res = {str(i): [clean_report_r2gen(h)] for i, h in enumerate(HYPS)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    ours = nlg_scores(REFS, HYPS, meteor=False)
    for n in range(4):
        assert ours[f"BLEU-{n + 1}"] == pytest.approx(bleu[n], rel=1e-12)
    assert ours["ROUGE-L"] == pytest.approx(rouge, rel=1e-12)
    assert ours["CIDEr"] == pytest.approx(cider, rel=1e-12)
    assert 0 < ours["BLEU-4"] < ours["BLEU-1"] < 1


@needs_java
def test_meteor_matches_pycocoevalcap_meteor() -> None:
    from pycocoevalcap.meteor.meteor import Meteor

    gts = {str(i): [clean_report_r2gen(r)] for i, r in enumerate(REFS)}
    res = {str(i): [clean_report_r2gen(h)] for i, h in enumerate(HYPS)}
    reference = Meteor()
    try:
        expected, expected_each = reference.compute_score(gts, res)
    finally:
        del reference
    # One more Java start only (the English paraphrase table takes seconds to load).
    with MeteorScorer("en") as scorer:
        got, got_each = scorer.compute_score(gts, res)
    assert got == pytest.approx(expected, rel=1e-9)
    assert got_each == pytest.approx(expected_each, rel=1e-9)
    assert 0.0 < got < 1.0


@needs_java
def test_spanish_meteor_runs_with_exact_and_stem() -> None:
    scores = nlg_scores(["Sin derrame pleural ni neumotórax."],
                        ["Sin derrames pleurales."], lang="es")
    assert 0.0 < scores["METEOR"] < 1.0
    same = nlg_scores(["Sin derrame pleural."], ["Sin derrame pleural."], lang="es")
    assert same["METEOR"] == pytest.approx(1.0, abs=1e-6)


def test_empty_generated_report_scores_zero() -> None:
    scores = nlg_scores(["No effusion.", "Cardiomegaly."], ["", "  "], meteor=False)
    assert scores["BLEU-1"] < 1e-6
    assert scores["ROUGE-L"] == 0.0
    assert scores["CIDEr"] == 0.0


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        nlg_scores(["a"], ["a", "b"], meteor=False)


def test_prf_counts() -> None:
    s = PRF.from_counts(tp=3, fp=1, fn=2)
    assert (s.precision, s.recall) == (0.75, 0.6)
    assert s.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert PRF.from_counts(0, 0, 0).f1 == 0.0


def test_clinical_scores_counted_by_hand() -> None:
    refs = [{"cardiomegaly": "present", "pleural_effusion": "present"},
            {"pneumonia": "uncertain"},
            {"no_finding": "present"}]
    preds = [{"cardiomegaly": "present"},
             {"pneumonia": "present"},
             {"no_finding": "present", "pleural_effusion": "absent"}]
    s = clinical_scores(refs, preds)
    assert s.per_finding["cardiomegaly"].f1 == 1.0
    assert s.per_finding["pleural_effusion"].recall == 0.0
    assert s.per_finding["pneumonia"].fp == 1  # uncertain reference counts as negative
    # tp = cardiomegaly + no_finding = 2; fp = pneumonia = 1; fn = effusion = 1
    assert (s.micro.tp, s.micro.fp, s.micro.fn) == (2, 1, 1)
    assert s.macro_f1 == pytest.approx((1 + 0 + 0 + 1) / 4)
    lenient = clinical_scores(refs, preds, uncertain_as="positive")
    assert lenient.per_finding["pneumonia"].tp == 1


def test_clinical_from_text_in_both_languages() -> None:
    en = clinical_scores_from_text(["Small left pleural effusion."],
                                   ["There is a small left effusion."], "en")
    assert en.per_finding["pleural_effusion"].f1 == 1.0
    es = clinical_scores_from_text(["Derrame pleural izquierdo."],
                                   ["Sin derrame pleural."], "es")
    assert es.per_finding["pleural_effusion"].recall == 0.0
    assert es.per_finding["no_finding"].fp == 1
