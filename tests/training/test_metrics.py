"""NLG metrics against pycocoevalcap and hand-computed values; clinical metrics on counted cases."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.findings import Presence
from training.metrics.bootstrap import Resampler, bootstrap_ci, percentile_interval
from training.metrics.clinical import (
    CHEXPERT5_KEYS,
    PRF,
    clinical_intervals,
    clinical_scores,
    clinical_scores_from_text,
    clinical_summary,
    rollup_chexpert,
)
from training.metrics.nlg import (
    MeteorScorer,
    NLGCorpus,
    R2GenVocabulary,
    clean_report_r2gen,
    meteor_aggregate,
    nlg_intervals,
    nlg_scores,
)

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


# -- R2Gen's cleaning, faithful -------------------------------------------------------------


def test_r2gen_cleaning_keeps_empty_sentences_like_the_original() -> None:
    # R2Gen's filter compares a string with a list, so an empty sentence survives as "".
    assert clean_report_r2gen("Normal heart. . Clear lungs.") == "normal heart .  . clear lungs ."
    assert clean_report_r2gen('Heart: normal (size); "no" effusion!') == (
        "heart normal size no effusion ."
    )


def test_r2gen_cleaning_of_the_xml_findings_equals_r2gen_references(shared_data: Path) -> None:
    """R2Gen's annotation.json references are the XML FINDINGS: after cleaning, token for token."""
    from training.data.iu_xray import IUXRayDataset

    ann = json.loads((shared_data / "iu_xray" / "r2gen_split_annotation.json").read_text())
    xml = {r.study_id: r for r in IUXRayDataset(shared_data / "iu_xray", layout="openi")}
    compared = 0
    for entries in ann.values():
        for entry in entries:
            record = xml.get(entry["id"])
            if record is None:
                continue
            ours = clean_report_r2gen(record.report("en", ("findings",))).split()
            assert ours == clean_report_r2gen(entry["report"]).split(), entry["id"]
            compared += 1
    assert compared > 2900


def test_r2gen_vocabulary_reads_references_as_r2gen_decodes_them() -> None:
    train = ["Heart normal. Lungs clear."] * 3 + ["Heart enlarged. Rare word."] * 2
    vocab = R2GenVocabulary.from_reports(train, threshold=3, max_seq_length=6)
    # Seen 3 times or more: heart, normal, lungs, clear, "." (heart: 5, ".": 10).
    assert vocab.words == frozenset({"heart", "normal", "lungs", "clear", "."})
    assert vocab.describe()["vocabulary_size"] == 6  # with <unk>, as R2Gen counts it
    # BOS + 5 tokens fit in 6 ids: a decoded reference keeps 5 tokens; a hypothesis is not cut.
    cleaned = clean_report_r2gen("Heart enlarged. Lungs clear.")
    assert vocab.reference(cleaned) == "heart <unk> . lungs clear"
    assert vocab.hypothesis(cleaned) == "heart <unk> . lungs clear ."
    with pytest.raises(ValueError, match="threshold"):
        R2GenVocabulary(frozenset(), 0, 60)


def test_r2gen_vocabulary_changes_what_is_scored() -> None:
    """A word rarer than the threshold matches R2Gen's <unk> on both sides; a reference longer
    than the cut is scored on its first tokens only."""
    long_ref = "The heart is normal. " + "The lungs are clear. " * 20
    refs = [long_ref, "Mild cardiomegaly with zebra stripes."]
    hyps = ["The heart is normal. The lungs are clear.", "Mild cardiomegaly with okapi stripes."]
    train = ["The heart is normal. The lungs are clear. Mild cardiomegaly with stripes."] * 3
    vocab = R2GenVocabulary.from_reports(train)
    plain = nlg_scores(refs, hyps, meteor=False)
    decoded = nlg_scores(refs, hyps, meteor=False, vocabulary=vocab)
    assert decoded["BLEU-4"] > plain["BLEU-4"]
    with NLGCorpus(refs, hyps, meteor=False, vocabulary=vocab) as corpus:
        assert corpus.scores()["BLEU-4"] == pytest.approx(decoded["BLEU-4"])
    # Each reference is 59 tokens at most (R2Gen's IU X-Ray max_seq_length of 60 with BOS).
    assert len(vocab.reference(clean_report_r2gen(long_ref)).split()) == 59
    with pytest.raises(ValueError, match="r2gen"):
        NLGCorpus(refs, hyps, meteor=False, tokenizer="none", vocabulary=vocab)


# -- Bootstrap ------------------------------------------------------------------------------


def test_resampler_is_seeded_and_resamples_patients_whole() -> None:
    a = [list(i) for i in Resampler(6, n_resamples=5, seed=3).indices()]
    b = [list(i) for i in Resampler(6, n_resamples=5, seed=3).indices()]
    assert a == b
    assert a != [list(i) for i in Resampler(6, n_resamples=5, seed=4).indices()]
    groups = ["p1", "p1", "p1", "p2", "p3", "p3"]
    r = Resampler(6, groups=groups, n_resamples=50, seed=0)
    assert r.unit == "patient" and r.n_units == 3
    for idx in r.indices():
        drawn = list(idx)
        # A drawn patient brings all their studies.
        assert drawn.count(0) == drawn.count(1) == drawn.count(2)
        assert drawn.count(4) == drawn.count(5)
    w = r.weights()
    assert w.shape == (50, 6) and np.all(w[:, 0] == w[:, 1])


def test_percentile_interval_and_bootstrap_of_a_mean() -> None:
    assert percentile_interval(list(range(101)), 0.9) == pytest.approx((5.0, 95.0, 101))
    low, high, n = percentile_interval([math.nan, 1.0, 2.0, 3.0])
    assert n == 3 and 1.0 <= low <= high <= 3.0
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, size=400)
    resampler = Resampler(len(x), n_resamples=2000, seed=5)
    iv = bootstrap_ci(lambda idx: {"mean": float(x[idx].mean())}, resampler)["mean"]
    se = x.std(ddof=1) / math.sqrt(len(x))
    # The percentile interval of a mean is close to the normal-theory one (mean +- 1.96 SE).
    assert iv.estimate == pytest.approx(x.mean())
    assert iv.low == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert iv.high == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)
    assert iv.n_valid == 2000 and iv.unit == "study"


def test_undefined_resamples_are_left_out() -> None:
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    resampler = Resampler(len(y), n_resamples=300, seed=2)

    def recall_like(idx: np.ndarray) -> dict[str, float]:
        pos = y[idx].sum()
        return {"share": float(pos / len(idx)), "defined": 1.0 if pos else math.nan}

    iv = bootstrap_ci(recall_like, resampler)
    assert 0 < iv["defined"].n_valid < 300
    assert iv["share"].n_valid == 300


# -- NLG on resamples: each resample scored as a corpus, as pycocoevalcap would ---------------


def _resampled_reference(idx: np.ndarray) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {str(j): [clean_report_r2gen(REFS_LONG[i])] for j, i in enumerate(idx)}
    res = {str(j): [clean_report_r2gen(HYPS_LONG[i])] for j, i in enumerate(idx)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU-{n + 1}": bleu[n] for n in range(4)}
    out["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    return out


REFS_LONG = [
    *REFS,
    "Small right pleural effusion. Heart size normal.",
    "The lungs are clear. There is no pneumothorax.",
    "Mild cardiomegaly with pulmonary vascular congestion.",
]
HYPS_LONG = [
    *HYPS,
    "Small left pleural effusion.",
    "The lungs are clear. There is no pneumothorax.",
    "Cardiomegaly. No edema.",
]


def test_nlg_corpus_resample_equals_pycocoevalcap_on_the_drawn_corpus() -> None:
    with NLGCorpus(REFS_LONG, HYPS_LONG, meteor=False) as corpus:
        for seed in range(3):
            idx = np.random.default_rng(seed).integers(0, len(REFS_LONG), len(REFS_LONG))
            ours = corpus.scores(idx)
            expected = _resampled_reference(idx)
            for name, value in expected.items():
                assert ours[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
        whole = corpus.scores()
    assert whole["BLEU-4"] == pytest.approx(
        _resampled_reference(np.arange(len(REFS_LONG)))["BLEU-4"], rel=1e-12)


@needs_java
def test_meteor_of_resamples_equals_the_jar() -> None:
    refs = REFS_LONG
    hyps = list(HYPS_LONG)
    hyps[1] = refs[1]  # a perfectly matched segment: Meteor adds no chunks for it
    with NLGCorpus(refs, hyps) as corpus:
        assert corpus._meteor_numbers is not None  # the Python aggregation matched the jar
        idx = np.array([0, 1, 1, 3, 4, 5])
        fast = corpus.scores(idx)["METEOR"]
        assert corpus._meteor is not None
        jar, _ = corpus._meteor.evaluate([corpus._meteor_stats[i] for i in idx])
    assert fast == pytest.approx(jar, rel=1e-9)
    stats = np.array([[8, 8, 5, 5, 2, 2, 5, 5] + [0] * 12 + [2, 7, 7]], dtype=float)
    assert meteor_aggregate(stats[0]) == pytest.approx(0.41876817326873383, rel=1e-12)


def test_nlg_intervals_contain_the_estimate() -> None:
    with NLGCorpus(REFS_LONG, HYPS_LONG, meteor=False) as corpus:
        iv = nlg_intervals(corpus, Resampler(len(REFS_LONG), n_resamples=200, seed=1))
    assert set(iv) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}
    for name, interval in iv.items():
        assert interval.low <= interval.estimate <= interval.high, name
        assert interval.high > interval.low


# -- CheXpert roll-up and the published label sets -------------------------------------------


def test_rollup_follows_chexpert_phrases() -> None:
    assert rollup_chexpert({"mass": "present", "nodule": "absent"}) == {"lung_lesion": "present"}
    assert rollup_chexpert({"fibrosis": "uncertain", "pleural_thickening": "absent"}) == {
        "pleural_other": "uncertain"}
    assert rollup_chexpert({"interstitial_pattern": "present", "lung_opacity": "absent",
                            "infiltration": "uncertain"})["lung_opacity"] == "present"
    # Findings that are none of the 14 leave the study "No Finding", as CheXpert reads it.
    assert rollup_chexpert({"granuloma": "present", "scoliosis": "present"}) == {
        "no_finding": "present"}
    assert rollup_chexpert({"support_devices": "present"}) == {
        "support_devices": "present", "no_finding": "present"}
    assert "no_finding" not in rollup_chexpert({"nodule": "uncertain", "no_finding": "present"})
    assert rollup_chexpert({}) == {}


def test_summary_sets_counted_by_hand() -> None:
    refs = [{"cardiomegaly": "present", "nodule": "present"},
            {"no_finding": "present"},
            {"pleural_effusion": "present", "granuloma": "present"}]
    preds = [{"cardiomegaly": "present", "mass": "present"},
             {"no_finding": "present"},
             {"no_finding": "present", "granuloma": "present"}]
    s = clinical_summary(refs, preds)
    c14 = s["chexpert14"]
    # lung_lesion: nodule vs mass roll up to the same observation -> tp.
    assert c14.per_finding["lung_lesion"].tp == 1
    assert c14.per_finding["pleural_effusion"].fn == 1
    assert c14.per_finding["no_finding"].fp == 1  # study 3: effusion missed
    assert len(c14.per_finding) == 14  # macro over all 14, zeros included (scikit-learn)
    # tp: cardiomegaly, lung_lesion, no_finding(study 2); fp: no_finding(3); fn: effusion
    assert (c14.micro.tp, c14.micro.fp, c14.micro.fn) == (3, 1, 1)
    assert c14.macro_f1 == pytest.approx((1 + 1 + 0 + 2 / 3) / 14)
    c13 = s["chexpert13_without_no_finding"]
    assert (c13.micro.tp, c13.micro.fp, c13.micro.fn) == (2, 0, 1)
    c5 = s["chexpert5"]
    assert set(c5.per_finding) == set(CHEXPERT5_KEYS)
    assert c5.micro.f1 == pytest.approx(2 / 3)
    flat = s["findings"]
    assert flat.per_finding["nodule"].fn == 1 and flat.per_finding["mass"].fp == 1
    assert "no_finding" not in s["findings_without_no_finding"].per_finding


def test_clinical_intervals_match_the_point_estimates() -> None:
    rng = random.Random(0)
    keys = ["cardiomegaly", "nodule", "pleural_effusion", "edema", "atelectasis"]

    def draw() -> dict[str, Presence]:
        return {k: rng.choice(("present", "absent", "uncertain")) for k in keys
                if rng.random() < 0.4}

    refs = [draw() for _ in range(120)]
    preds = [draw() for _ in range(120)]
    resampler = Resampler(120, n_resamples=300, seed=4)
    intervals = clinical_intervals(refs, preds, resampler)
    summary = clinical_summary(refs, preds)
    for name, scores in summary.items():
        iv = intervals[name]
        assert iv["micro_f1"].estimate == pytest.approx(scores.micro.f1)
        assert iv["macro_f1"].estimate == pytest.approx(scores.macro_f1)
        assert iv["micro_f1"].low <= scores.micro.f1 <= iv["micro_f1"].high
        for key, prf in scores.per_finding.items():
            assert iv[f"f1/{key}"].estimate == pytest.approx(prf.f1)
    # The same draws, scored one by one with clinical_summary, give the same samples.
    first = next(iter(resampler.indices()))
    again = clinical_summary([refs[i] for i in first], [preds[i] for i in first])
    one = Resampler(120, n_resamples=1, seed=4)
    assert list(next(iter(one.indices()))) == list(first)
    single = clinical_intervals(refs, preds, one)
    assert single["chexpert14"]["micro_f1"].low == pytest.approx(again["chexpert14"].micro.f1)
