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
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.labeler import get_labeler
from training.data.records import SECTIONS, StudyRecord
from training.exceptions import PredictionsError
from training.findings import CHEXPERT_KEYS, FINDINGS_BY_KEY, Presence
from training.metrics.clinical import ClinicalScores, clinical_scores
from training.metrics.nlg import METRIC_NAMES, nlg_scores

logger = logging.getLogger(__name__)

TEXT_FIELDS: tuple[str, ...] = ("report", "prediction", "generated", "text")
REFERENCE_LABELS: tuple[str, ...] = ("labeler", "dataset")
_FIX_PRED = (
    'Write one JSON object per line: {"study_id": "...", "report": "..."}, with the study ids '
    "of the dataset (see `training datasets`)"
)


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
    sections: Sequence[str] = SECTIONS,
    tokenizer: str = "r2gen",
    meteor: bool = True,
    uncertain_as: str = "negative",
    reference_labels: str = "labeler",
    allow_missing: bool = False,
    dataset: str = "",
    split: str | None = None,
    predictions_path: str | Path = "<predictions>",
    failed: Mapping[str, str] | None = None,
) -> EvaluationResult:
    """Score ``predictions`` against the ``lang`` reports of ``records``.

    Studies without reference text in ``lang`` are skipped. Every remaining study needs a
    prediction unless ``allow_missing``; predictions for studies not in ``records`` are ignored
    and counted. Studies in ``failed`` (id -> error, the engine could not report them) are not
    scored and are listed in the result instead of counting as missing.
    """
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
    nlg = nlg_scores(refs, hyps, lang=lang, tokenizer=tokenizer, meteor=meteor)
    labeler = get_labeler(lang)
    ref_labels: list[Mapping[str, Presence]]
    if reference_labels == "dataset":
        ref_labels = [r.findings for r in scored]
    else:
        ref_labels = [labeler.label(t, sections=False) for t in refs]
    hyp_labels = [labeler.label(t) for t in hyps]
    clinical = clinical_scores(ref_labels, hyp_labels, uncertain_as=uncertain_as)
    # The 14 CheXpert observations alone: the label set of published "clinical efficacy" scores.
    chexpert14 = clinical_scores(ref_labels, hyp_labels, CHEXPERT_KEYS, uncertain_as)
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
        per_study=per_study,
        settings={
            "sections": list(sections),
            "tokenizer": tokenizer,
            "uncertain_as": uncertain_as,
            "reference_labels": reference_labels,
            "labeler": f"engine.labeler ({lang})",
        },
        missing=missing,
        unknown=unknown,
        failed=dict(sorted(failures.items())),
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def to_markdown(result: EvaluationResult) -> str:
    """The metrics as Markdown tables."""
    name_field = "name_es" if result.lang == "es" else "name_en"
    lines = [
        f"# Evaluation: {result.dataset} / {result.split or 'all'} / {result.lang}",
        "",
        f"Studies scored: {result.n_studies}. Missing predictions: {len(result.missing)}. "
        f"Predictions for unknown studies: {len(result.unknown)}. "
        f"Studies the engine could not report (not scored): {len(result.failed)}.",
        f"Settings: {', '.join(f'{k}={v}' for k, v in result.settings.items())}.",
        "",
        "## Text similarity",
        "",
        "| " + " | ".join(METRIC_NAMES) + " |",
        "|" + "---:|" * len(METRIC_NAMES),
        "| " + " | ".join(_fmt(result.nlg.get(m)) for m in METRIC_NAMES) + " |",
        "",
        "## Clinical correctness (findings)",
        "",
        "| average | precision | recall | F1 |",
        "|---|---:|---:|---:|",
    ]
    c = result.clinical
    lines.append(
        f"| micro | {c.micro.precision:.4f} | {c.micro.recall:.4f} | {c.micro.f1:.4f} |"
    )
    lines.append(
        f"| macro ({len(c.per_finding)} findings) | {c.macro_precision:.4f} | "
        f"{c.macro_recall:.4f} | {c.macro_f1:.4f} |"
    )
    c14 = result.clinical_chexpert14
    if c14 is not None:
        lines.append(
            f"| micro, CheXpert 14 | {c14.micro.precision:.4f} | {c14.micro.recall:.4f} | "
            f"{c14.micro.f1:.4f} |"
        )
        lines.append(
            f"| macro, CheXpert 14 ({len(c14.per_finding)} findings) | "
            f"{c14.macro_precision:.4f} | {c14.macro_recall:.4f} | {c14.macro_f1:.4f} |"
        )
    lines += [
        "",
        "| finding | precision | recall | F1 | support | predicted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, s in sorted(c.per_finding.items(), key=lambda kv: -kv[1].support):
        name = getattr(FINDINGS_BY_KEY[key], name_field)
        lines.append(
            f"| {name} (`{key}`) | {s.precision:.4f} | {s.recall:.4f} | {s.f1:.4f} | "
            f"{s.support} | {s.tp + s.fp} |"
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
