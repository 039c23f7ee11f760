"""Evaluate generated reports against a dataset split: text similarity and clinical correctness.

``evaluate_predictions`` scores reports already generated (one per study id) against the
references of a dataset split; ``write_results`` writes ``metrics.json`` and ``metrics.md``.
``predict_with_engine`` generates them first with an engine artifact: it writes the split's
study list and runs ``python -m engine.predict`` in a subprocess, so training never imports the
engine runtime (the two meet only through the artifact format).

Predictions file (JSON Lines, one study a line)::

    {"study_id": "CXR3030_IM-1405", "report": "No acute cardiopulmonary abnormality."}

(``prediction``, ``generated`` or ``text`` are accepted for ``report``; other keys, such as the
engine's ``sections`` and ``findings``, are ignored.) A line ``{"study_id": ..., "error": ...}``
records a study the engine could not report: it is not scored, and is counted as failed rather
than missing. A ``.json`` file holding one object that maps study id to report text is accepted
too.

Reference findings are, by default, the labeler's reading of the reference text, so both sides
are read by the same labeler (as papers do with the CheXpert labeler);
``reference_labels="dataset"`` uses the dataset's own labels instead (IU X-Ray MeSH, PadChest).

Each dataset is scored by default with the protocol of the papers it is compared with
(:data:`PROTOCOLS`; IU X-Ray: FINDINGS only, R2Gen's cleaning, references read back as R2Gen's
decoder reads them with the training split's vocabulary, see :func:`protocol_vocabulary`), and
the protocol is written into ``metrics.json``. Every metric gets a 95% bootstrap interval
(:mod:`training.metrics.bootstrap`; studies resampled, or patients where the dataset knows
them), and two baselines are scored the same way beside the system (:func:`make_baselines`):
one constant normal report for every study, and a random training report for each study.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.labeler import get_labeler
from training.data.records import SECTIONS, StudyRecord
from training.exceptions import MetricError, PredictionsError
from training.findings import FINDINGS_BY_KEY, Presence
from training.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, Interval, Resampler
from training.metrics.clinical import (
    ClinicalScores,
    clinical_intervals,
    clinical_summary,
)
from training.metrics.nlg import (
    METRIC_NAMES,
    MeteorScorer,
    NLGCorpus,
    R2GenVocabulary,
    nlg_intervals,
)

logger = logging.getLogger(__name__)

TEXT_FIELDS: tuple[str, ...] = ("report", "prediction", "generated", "text")
REFERENCE_LABELS: tuple[str, ...] = ("labeler", "dataset")
_FIX_PRED = (
    'Write one JSON object per line: {"study_id": "...", "report": "..."}, with the study ids '
    "of the dataset (see `training datasets`)"
)


@dataclass(frozen=True)
class Protocol:
    """How references are prepared and scored, so that numbers stand beside a paper's table."""

    name: str
    sections: tuple[str, ...]
    tokenizer: str
    description: str
    comparable_with: tuple[str, ...] = ()
    notes: str = ""
    #: R2Gen reads its references back from token ids (:class:`R2GenVocabulary`): words seen
    #: fewer than this many times in the training reports become ``<unk>`` (0: not applied).
    vocabulary_threshold: int = 0
    #: ... and references are cut to ``max_seq_length - 1`` tokens (BOS counts).
    max_seq_length: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sections"] = list(self.sections)
        out["comparable_with"] = list(self.comparable_with)
        return out


_R2GEN_NOTE = (
    "As in R2Gen, references are read back from token ids: cut to their first max_seq_length - 1 "
    "tokens, and words seen fewer than vocabulary_threshold times in the cleaned training "
    "reports read <unk>; generated reports get the same <unk> but are not cut. English only."
)

#: The published protocol of each dataset; a dataset not listed is scored on FINDINGS and
#: IMPRESSION with R2Gen's cleaning.
PROTOCOLS: dict[str, Protocol] = {
    "iu_xray": Protocol(
        name="r2gen-iu-xray",
        sections=("findings",),
        tokenizer="r2gen",
        description="IU X-Ray, R2Gen split (test: 590 studies), references = FINDINGS section "
        "only, R2Gen's clean_report_iu_xray, pycocoevalcap BLEU/METEOR/ROUGE-L/CIDEr",
        comparable_with=("R2Gen (Chen et al. 2020)", "R2GenCMN (Chen et al. 2021)",
                         "PromptMRG (Jin et al. 2024)"),
        notes=_R2GEN_NOTE,
        vocabulary_threshold=3,  # R2Gen's run_iu_xray.sh: --threshold 3 --max_seq_length 60
        max_seq_length=60,
    ),
    "mimic_cxr": Protocol(
        name="r2gen-mimic-cxr",
        sections=("findings",),
        tokenizer="r2gen",
        description="MIMIC-CXR, references = FINDINGS section only, R2Gen's cleaning, "
        "pycocoevalcap metrics",
        comparable_with=("R2Gen (Chen et al. 2020)", "R2GenCMN (Chen et al. 2021)",
                         "PromptMRG (Jin et al. 2024)", "MAIRA-2 (Bannur et al. 2024)"),
        notes=_R2GEN_NOTE,
        vocabulary_threshold=10,  # R2Gen's run_mimic_cxr.sh: --threshold 10 --max_seq_length 100
        max_seq_length=100,
    ),
}


def protocol_for(dataset: str, sections: Sequence[str] | None = None,
                 tokenizer: str | None = None) -> Protocol:
    """The published protocol of ``dataset``; a section or tokenizer choice that departs from
    it gives a ``custom`` protocol that claims comparability with no paper."""
    base = PROTOCOLS.get(dataset) or Protocol(
        name="findings-impression",
        sections=SECTIONS,
        tokenizer="r2gen",
        description="references = FINDINGS and IMPRESSION, R2Gen's cleaning",
    )
    chosen_sections = tuple(sections) if sections else base.sections
    chosen_tokenizer = tokenizer or base.tokenizer
    if chosen_sections == base.sections and chosen_tokenizer == base.tokenizer:
        return base
    return Protocol(
        name="custom",
        sections=chosen_sections,
        tokenizer=chosen_tokenizer,
        description=f"references = {'+'.join(chosen_sections)}, tokenizer {chosen_tokenizer} "
        f"(departs from {base.name})",
    )


#: A normal report for the constant baseline when the training split has none to offer.
NORMAL_REPORT: dict[str, str] = {
    "en": "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear. "
    "No pleural effusion or pneumothorax.",
    "es": "Silueta cardiomediastínica dentro de la normalidad. No se observan consolidaciones "
    "ni derrame pleural. Sin neumotórax.",
}
BASELINES: tuple[str, ...] = ("constant_normal", "random_train")


def make_baselines(
    studies: Sequence[str],
    train_records: Sequence[StudyRecord],
    *,
    lang: str = "en",
    sections: Sequence[str] = SECTIONS,
    seed: int = DEFAULT_SEED,
) -> dict[str, dict[str, str]]:
    """The baseline predictions for ``studies``: baseline name -> study id -> report.

    - ``constant_normal``: the most frequent training report that the labeler reads as normal
      (no finding present or uncertain), the same for every study; a fixed normal report when
      the training split has none.
    - ``random_train``: for each study, a training report drawn with ``random.Random(seed)``.
    """
    texts = [t for t in (r.report(lang, tuple(sections)) for r in train_records) if t.strip()]
    labeler = get_labeler(lang)
    normal = Counter(
        t for t in texts if labeler.label(t, sections=False).get("no_finding") == "present"
    )
    if normal:
        top = max(normal.values())
        constant = min(t for t, n in normal.items() if n == top)
    else:
        constant = NORMAL_REPORT[lang]
    out: dict[str, dict[str, str]] = {"constant_normal": {s: constant for s in studies}}
    if texts:
        rng = random.Random(seed)
        out["random_train"] = {s: rng.choice(texts) for s in studies}
    else:
        logger.warning("no training report in %r: the random-report baseline is skipped", lang)
    return out


@dataclass
class SystemScores:
    """The scores of one system (the model, or a baseline) on the scored studies."""

    nlg: dict[str, Any]
    clinical: dict[str, ClinicalScores]
    intervals: dict[str, dict[str, Interval]] = field(default_factory=dict)
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "nlg": self.nlg,
            "clinical_summary": {k: v.as_dict() for k, v in self.clinical.items()},
            "intervals": {
                group: {k: v.as_dict() for k, v in items.items()}
                for group, items in self.intervals.items()
            },
        }


def score_system(
    refs: Sequence[str],
    hyps: Sequence[str],
    ref_labels: Sequence[Mapping[str, Presence]],
    *,
    lang: str,
    tokenizer: str,
    meteor: bool,
    uncertain_as: str,
    resampler: Resampler | None,
    level: float = 0.95,
    description: str = "",
    meteor_scorer: MeteorScorer | None = None,
    vocabulary: R2GenVocabulary | None = None,
) -> tuple[SystemScores, list[dict[str, Presence]]]:
    """NLG and clinical scores of ``hyps``, with intervals when ``resampler`` is given; also
    the generated reports' findings."""
    labeler = get_labeler(lang)
    hyp_labels = [labeler.label(t) for t in hyps]
    with NLGCorpus(refs, hyps, lang=lang, tokenizer=tokenizer, meteor=meteor,
                   meteor_scorer=meteor_scorer, vocabulary=vocabulary) as corpus:
        nlg: dict[str, Any] = dict(corpus.scores())
        if corpus.meteor_error:
            nlg["meteor_error"] = corpus.meteor_error
        nlg["tokenizer"] = tokenizer
        nlg["n"] = len(refs)
        intervals: dict[str, dict[str, Interval]] = {}
        if resampler is not None:
            intervals["nlg"] = nlg_intervals(corpus, resampler, level)
    clinical = clinical_summary(ref_labels, hyp_labels, uncertain_as)
    if resampler is not None:
        intervals.update(clinical_intervals(ref_labels, hyp_labels, resampler, uncertain_as,
                                            level))
    return SystemScores(nlg, clinical, intervals, description), hyp_labels


@dataclass(frozen=True)
class Predictions:
    """A predictions file's content: study id -> report, and study id -> error for the
    studies the engine could not report."""

    reports: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)


def read_predictions(path: str | Path) -> dict[str, str]:
    """Study id -> generated report, from JSON Lines (or a ``.json`` id -> text mapping)."""
    return load_predictions(path).reports


def load_predictions(path: str | Path) -> Predictions:
    """The reports and the failed studies of a predictions file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise PredictionsError(path, "not found", _FIX_PRED)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PredictionsError(path, f"not valid JSON ({exc})", _FIX_PRED) from exc
        if not isinstance(whole, dict):
            raise PredictionsError(path, "a .json file must map study id to report", _FIX_PRED)
        return Predictions({str(k): str(v) for k, v in whole.items()})
    out: dict[str, str] = {}
    errors: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PredictionsError(path, f"line {number} is not JSON ({exc})", _FIX_PRED) from exc
        if not isinstance(item, dict) or "study_id" not in item:
            raise PredictionsError(path, f"line {number} has no 'study_id'", _FIX_PRED)
        study_id = str(item["study_id"])
        if study_id in out or study_id in errors:
            raise PredictionsError(path, f"study {study_id} appears twice", _FIX_PRED)
        if item.get("error"):
            errors[study_id] = str(item["error"])
            continue
        field_name = next((f for f in TEXT_FIELDS if f in item), None)
        if field_name is None:
            raise PredictionsError(
                path, f"line {number} has none of the text fields {TEXT_FIELDS}", _FIX_PRED
            )
        out[study_id] = str(item[field_name] or "")
    if not out:
        if errors:
            first, message = next(iter(errors.items()))
            raise PredictionsError(
                path,
                f"every study failed ({len(errors)}; first: {first}: {message})",
                "Fix what the first error names (image files, engine) and predict again",
            )
        raise PredictionsError(path, "holds no prediction", _FIX_PRED)
    if errors:
        logger.warning("%s: %d studies failed and are not scored", path, len(errors))
    return Predictions(out, errors)


def scorable(
    records: Sequence[StudyRecord], lang: str = "en", sections: Sequence[str] = SECTIONS
) -> list[StudyRecord]:
    """The records that have reference text in ``lang`` (the others cannot be scored)."""
    return [r for r in records if r.report(lang, tuple(sections))]


@dataclass
class EvaluationResult:
    """All metrics of one evaluation, and how they were computed."""

    dataset: str
    split: str | None
    lang: str
    n_studies: int
    nlg: dict[str, Any]
    clinical: ClinicalScores
    clinical_chexpert14: ClinicalScores | None = None
    #: Every clinical set of :func:`training.metrics.clinical.clinical_summary`.
    clinical_sets: dict[str, ClinicalScores] = field(default_factory=dict)
    #: Bootstrap intervals: "nlg" or a clinical set name -> metric -> interval.
    intervals: dict[str, dict[str, Interval]] = field(default_factory=dict)
    protocol: Protocol | None = None
    #: Baseline name -> its scores, computed the same way.
    baselines: dict[str, SystemScores] = field(default_factory=dict)
    bootstrap: dict[str, Any] = field(default_factory=dict)
    per_study: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    #: Study id -> error, for the studies the engine could not report (not scored).
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "lang": self.lang,
            "n_studies": self.n_studies,
            "nlg": self.nlg,
            "clinical": self.clinical.as_dict(),
            "clinical_chexpert14": (
                self.clinical_chexpert14.as_dict() if self.clinical_chexpert14 else None
            ),
            "clinical_summary": {k: v.as_dict() for k, v in self.clinical_sets.items()},
            "intervals": {
                group: {k: v.as_dict() for k, v in items.items()}
                for group, items in self.intervals.items()
            },
            "protocol": self.protocol.as_dict() if self.protocol else None,
            "bootstrap": self.bootstrap,
            "baselines": {k: v.as_dict() for k, v in self.baselines.items()},
            "settings": self.settings,
            "missing_predictions": len(self.missing),
            "unknown_predictions": len(self.unknown),
            "failed_predictions": len(self.failed),
            "failed_studies": self.failed,
        }


def evaluate_predictions(
    predictions: Mapping[str, str],
    records: Sequence[StudyRecord],
    *,
    lang: str = "en",
    sections: Sequence[str] | None = None,
    tokenizer: str | None = None,
    meteor: bool = True,
    uncertain_as: str = "negative",
    reference_labels: str = "labeler",
    allow_missing: bool = False,
    dataset: str = "",
    split: str | None = None,
    predictions_path: str | Path = "<predictions>",
    failed: Mapping[str, str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
    train_records: Sequence[StudyRecord] | None = None,
    score_baselines: bool = True,
) -> EvaluationResult:
    """Score ``predictions`` against the ``lang`` reports of ``records``.

    ``sections`` and ``tokenizer`` default to the dataset's published protocol
    (:func:`protocol_for`). Studies without reference text in ``lang`` are skipped. Every
    remaining study needs a prediction unless ``allow_missing``; predictions for studies not in
    ``records`` are ignored and counted. Studies in ``failed`` (id -> error, the engine could
    not report them) are not scored and are listed in the result instead of counting as
    missing. ``n_resamples`` bootstrap resamples (0: no intervals) with ``seed`` give the
    intervals. ``train_records`` (the training split) give the protocol's R2Gen vocabulary
    (:func:`protocol_vocabulary`) and, with ``score_baselines``, the baselines of
    :func:`make_baselines`, scored beside the system.
    """
    name = dataset or (records[0].dataset if records else "")
    protocol = protocol_for(name, sections, tokenizer)
    sections, tokenizer = protocol.sections, protocol.tokenizer
    if reference_labels not in REFERENCE_LABELS:
        raise ValueError(f"reference_labels must be one of {REFERENCE_LABELS}")
    if lang == "es":  # English-only datasets: Spanish references derived by the bridge
        from training.bridge.references import with_spanish_references

        records = with_spanish_references(records)
    usable = scorable(records, lang, sections)
    if not usable:
        raise PredictionsError(
            predictions_path,
            f"the dataset split has no report text in {lang!r} (sections {list(sections)})",
            "Choose a dataset and language that have reports, e.g. iu_xray with --lang en, "
            "padchest or padchest_gr with --lang es",
        )
    ids = {r.study_id for r in usable}
    failures = {k: v for k, v in (failed or {}).items() if k in ids and k not in predictions}
    if failures:
        logger.warning("%d studies the engine could not report are not scored", len(failures))
    missing = sorted(ids - predictions.keys() - failures.keys())
    unknown = sorted(predictions.keys() - ids)
    if missing and not allow_missing:
        raise PredictionsError(
            predictions_path,
            f"{len(missing)} of {len(usable)} studies have no prediction (first: {missing[:3]})",
            "Predict every study of the split, or pass --allow-missing to score the others",
        )
    if unknown:
        logger.warning("%d predictions name studies not in the split (ignored)", len(unknown))
    scored = [r for r in usable if r.study_id in predictions]
    if not scored:
        raise PredictionsError(predictions_path, "no prediction matches a study", _FIX_PRED)
    refs = [r.report(lang, tuple(sections)) for r in scored]
    hyps = [predictions[r.study_id] for r in scored]
    labeler = get_labeler(lang)
    ref_labels: list[Mapping[str, Presence]]
    if reference_labels == "dataset":
        ref_labels = [r.findings for r in scored]
    else:
        ref_labels = [labeler.label(t, sections=False) for t in refs]
    resampler: Resampler | None = None
    bootstrap: dict[str, Any] = {"n_resamples": 0}
    if n_resamples > 0:
        patients = [r.patient_id for r in scored]
        groups = patients if all(patients) else None
        resampler = Resampler(len(scored), groups=groups, n_resamples=n_resamples, seed=seed)
        bootstrap = {**resampler.describe(), "level": level, "interval": "percentile"}
    vocabulary, decoding = protocol_vocabulary(protocol, lang, train_records)
    common: dict[str, Any] = {"lang": lang, "tokenizer": tokenizer, "meteor": meteor,
                              "uncertain_as": uncertain_as, "resampler": resampler,
                              "level": level, "vocabulary": vocabulary}
    baseline_records = train_records if score_baselines else None
    if meteor and baseline_records is not None:
        try:  # one Java process for the system and its baselines
            common["meteor_scorer"] = MeteorScorer(lang)
        except MetricError as exc:
            logger.warning("METEOR not computed: %s", exc)
    try:
        system, hyp_labels, baselines = _score_all(
            refs, hyps, ref_labels, scored, baseline_records, sections, seed, common)
    finally:
        if common.get("meteor_scorer") is not None:
            common["meteor_scorer"].close()
    clinical = system.clinical["findings"]
    chexpert14 = system.clinical["chexpert14"]
    nlg = system.nlg
    per_study = [
        {"study_id": r.study_id, "reference_findings": dict(ref), "generated_findings": hyp}
        for r, ref, hyp in zip(scored, ref_labels, hyp_labels, strict=True)
    ]
    return EvaluationResult(
        dataset=dataset or (scored[0].dataset if scored else ""),
        split=split,
        lang=lang,
        n_studies=len(scored),
        nlg=nlg,
        clinical=clinical,
        clinical_chexpert14=chexpert14,
        clinical_sets=system.clinical,
        intervals=system.intervals,
        protocol=protocol,
        baselines=baselines,
        bootstrap=bootstrap,
        per_study=per_study,
        settings={
            "protocol": protocol.name,
            "sections": list(sections),
            "tokenizer": tokenizer,
            "reference_decoding": decoding,
            "uncertain_as": uncertain_as,
            "reference_labels": reference_labels,
            "labeler": f"engine.labeler ({lang})",
        },
        missing=missing,
        unknown=unknown,
        failed=dict(sorted(failures.items())),
    )


def protocol_vocabulary(
    protocol: Protocol, lang: str, train_records: Sequence[StudyRecord] | None
) -> tuple[R2GenVocabulary | None, dict[str, Any]]:
    """The R2Gen vocabulary of ``protocol``, built from the training split's references in its
    sections, and a record of what was done (for ``metrics.json``)."""
    if not protocol.vocabulary_threshold:
        return None, {"applied": False, "reason": "not part of the protocol"}
    if lang != "en":
        return None, {"applied": False, "reason": "R2Gen's vocabulary is English"}
    texts = [t for t in (r.report(lang, protocol.sections) for r in train_records or ())
             if t.strip()]
    if not texts:
        logger.warning("no training reports: references are not cut nor <unk>'d as %s does, "
                       "so the figures are not exactly comparable", protocol.name)
        return None, {"applied": False, "reason": "no training reports given"}
    vocabulary = R2GenVocabulary.from_reports(texts, protocol.vocabulary_threshold,
                                              protocol.max_seq_length)
    return vocabulary, {"applied": True, "training_reports": len(texts),
                        **vocabulary.describe()}


_BASELINE_DESCRIPTIONS: dict[str, str] = {
    "constant_normal": "the same normal report (the training split's most frequent) for every "
    "study",
    "random_train": "a random training report for each study",
}


def _score_all(
    refs: list[str],
    hyps: list[str],
    ref_labels: Sequence[Mapping[str, Presence]],
    scored: Sequence[StudyRecord],
    train_records: Sequence[StudyRecord] | None,
    sections: Sequence[str],
    seed: int,
    common: dict[str, Any],
) -> tuple[SystemScores, list[dict[str, Presence]], dict[str, SystemScores]]:
    """The system's scores, its findings, and the baselines' scores (when ``train_records``)."""
    system, hyp_labels = score_system(refs, hyps, ref_labels, description="predictions",
                                      **common)
    baselines: dict[str, SystemScores] = {}
    if train_records is not None:
        ids = [r.study_id for r in scored]
        made = make_baselines(ids, train_records, lang=common["lang"], sections=sections,
                              seed=seed)
        for base_name, texts in made.items():
            logger.info("scoring the %s baseline", base_name)
            description = _BASELINE_DESCRIPTIONS[base_name]
            if base_name == "constant_normal" and ids:
                description += f": {texts[ids[0]]!r}"
            baselines[base_name], _ = score_system(
                refs, [texts[i] for i in ids], ref_labels, description=description, **common)
    return system, hyp_labels, baselines


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


#: The clinical figures of the side-by-side table: (set, metric, column title).
HEADLINE_CLINICAL: tuple[tuple[str, str, str], ...] = (
    ("chexpert14", "micro_f1", "micro F1-14"),
    ("chexpert14", "macro_f1", "macro F1-14"),
    ("chexpert5", "micro_f1", "micro F1-5"),
    ("chexpert5", "macro_f1", "macro F1-5"),
    ("chexpert13_without_no_finding", "micro_f1", "micro F1-13 (no No Finding)"),
    ("findings", "micro_f1", "micro F1, all findings"),
    ("findings", "macro_f1", "macro F1, all findings"),
    ("findings_without_no_finding", "micro_f1", "micro F1, findings w/o No Finding"),
)


def _clinical_value(scores: ClinicalScores, metric: str) -> float:
    kind, what = metric.split("_", 1)
    if kind == "micro":
        return float(getattr(scores.micro, {"precision": "precision", "recall": "recall",
                                            "f1": "f1"}[what]))
    return float(getattr(scores, f"macro_{what}"))


def _cell(value: Any, interval: Interval | None) -> str:
    if interval is None or value is None:
        return _fmt(value)
    return f"{value:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def _systems(result: EvaluationResult) -> list[tuple[str, SystemScores]]:
    own = SystemScores(result.nlg, result.clinical_sets, result.intervals, "predictions")
    return [("predictions", own), *result.baselines.items()]


def summary_tables(result: EvaluationResult) -> str:
    """The system and its baselines side by side (Markdown): text similarity, then clinical
    scores, each value with its bootstrap interval."""
    systems = _systems(result)
    lines = ["| system | " + " | ".join(METRIC_NAMES) + " |",
             "|---|" + "---:|" * len(METRIC_NAMES)]
    for name, sc in systems:
        nlg_iv = sc.intervals.get("nlg", {})
        cells = [_cell(sc.nlg.get(m), nlg_iv.get(m)) for m in METRIC_NAMES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    titles = [t for _, _, t in HEADLINE_CLINICAL]
    lines += ["", "| system | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(titles)]
    for name, sc in systems:
        cells = []
        for set_name, metric, _ in HEADLINE_CLINICAL:
            scores = sc.clinical.get(set_name)
            value = _clinical_value(scores, metric) if scores else None
            cells.append(_cell(value, sc.intervals.get(set_name, {}).get(metric)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(result: EvaluationResult) -> str:
    """The metrics as Markdown tables."""
    name_field = "name_es" if result.lang == "es" else "name_en"
    protocol = result.protocol
    boot = result.bootstrap
    lines = [
        f"# Evaluation: {result.dataset} / {result.split or 'all'} / {result.lang}",
        "",
        f"Studies scored: {result.n_studies}. Missing predictions: {len(result.missing)}. "
        f"Predictions for unknown studies: {len(result.unknown)}. "
        f"Studies the engine could not report (not scored): {len(result.failed)}.",
        f"Settings: {', '.join(f'{k}={v}' for k, v in result.settings.items())}.",
    ]
    if protocol is not None:
        lines.append(f"Protocol: {protocol.name}: {protocol.description}."
                     + (f" Comparable with: {', '.join(protocol.comparable_with)}."
                        if protocol.comparable_with else ""))
        if protocol.notes:
            lines.append(f"Note: {protocol.notes}")
    if boot.get("n_resamples"):
        lines.append(
            f"Intervals: {int(boot.get('level', 0.95) * 100)}% percentile bootstrap, "
            f"{boot['n_resamples']} resamples of {boot.get('n_units')} {boot.get('unit')}s, "
            f"seed {boot.get('seed')}."
        )
    lines += ["", "## Side by side with the baselines", "", summary_tables(result), ""]
    lines += ["## Clinical correctness, every label set", "",
              "| label set | micro P | micro R | micro F1 | macro P | macro R | macro F1 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for set_name, c in result.clinical_sets.items():
        iv = result.intervals.get(set_name, {})
        cells = [_cell(_clinical_value(c, m), iv.get(m)) for m in (
            "micro_precision", "micro_recall", "micro_f1",
            "macro_precision", "macro_recall", "macro_f1")]
        lines.append(f"| {set_name} ({len(c.per_finding)}) | " + " | ".join(cells) + " |")
    c = result.clinical
    flat_iv = result.intervals.get("findings", {})
    lines += [
        "",
        "| finding | precision | recall | F1 | support | predicted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, sc in sorted(c.per_finding.items(), key=lambda kv: -kv[1].support):
        name = getattr(FINDINGS_BY_KEY[key], name_field)
        lines.append(
            f"| {name} (`{key}`) | {sc.precision:.4f} | {sc.recall:.4f} | "
            f"{_cell(sc.f1, flat_iv.get(f'f1/{key}'))} | {sc.support} | {sc.tp + sc.fp} |"
        )
    if "meteor_error" in result.nlg:
        lines += ["", f"METEOR not computed: {result.nlg['meteor_error']}"]
    return "\n".join(lines) + "\n"


def write_results(result: EvaluationResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json``, ``metrics.md`` and ``per_study.jsonl`` (each study's findings on
    both sides, for reading the errors) into ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "per_study.jsonl").open("w", encoding="utf-8") as fh:
        for row in result.per_study:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    json_path = out / "metrics.json"
    md_path = out / "metrics.md"
    json_path.write_text(json.dumps(result.as_dict(), indent=2, ensure_ascii=False), "utf-8")
    md_path.write_text(to_markdown(result), encoding="utf-8")
    return json_path, md_path


# ---------------------------------------------------------------------------------------------
# Predictions from an engine artifact, through ``python -m engine.predict``


def write_study_list(records: Sequence[StudyRecord], path: str | Path) -> Path:
    """The study list ``engine.predict`` reads: one line per study, its image files (absolute
    paths) and their views (``null`` where the dataset does not say)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            images = [
                {"path": str(Path(i.path).resolve()),
                 "view": None if i.view == "UNKNOWN" else i.view}
                for i in record.images
            ]
            fh.write(json.dumps({"study_id": record.study_id, "images": images}) + "\n")
    return path


def predict_with_engine(
    engine: str | Path,
    studies_path: str | Path,
    predictions_path: str | Path,
    *,
    backend: str = "onnxruntime",
    device: str | None = None,
    max_batch: int = 8,
    allow_test_artifact: bool = False,
    verbose: bool = False,
) -> list[str]:
    """Run ``python -m engine.predict`` on a study list; returns the command it ran.

    A subprocess keeps the engine runtime (and its backends) out of the training process; its
    messages go to this process's stderr. Studies it cannot report become error lines.
    """
    command = [
        sys.executable, "-m", "engine.predict",
        "--engine", str(Path(engine).resolve()),
        "--studies", str(studies_path),
        "--out", str(predictions_path),
        "--backend", backend,
        "--max-batch", str(max_batch),
    ]
    if device:
        command += ["--device", device]
    if allow_test_artifact:
        command.append("--allow-test-artifact")
    if verbose:
        command.append("--verbose")
    logger.info("running %s", " ".join(command))
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise PredictionsError(
            predictions_path,
            f"python -m engine.predict exited with status {done.returncode}",
            "Read its error above (engine folder, --backend, test artifact) and run again",
        )
    return command


def write_config(out_dir: str | Path, config: Mapping[str, Any]) -> Path:
    """``evaluate-config.json``: the effective arguments, so an evaluation can be repeated."""
    path = Path(out_dir) / "evaluate-config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False, default=str), "utf-8")
    return path
