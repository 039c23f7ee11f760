"""The figures of an engine's model card, measured on the NIH ChestX-ray14 splits.

1. ``--calibrate``: the engine reports the validation split (``python -m engine.predict``, the
   runtime's own preprocessing and gate) and each finding's thresholds are set from those
   probabilities and written into the artifact's manifest:

   - ``threshold_present``: the probability that maximizes Youden's J (sensitivity +
     specificity - 1) on the validation split;
   - ``threshold_absent``: the rule-out side of the uncertain band: below the validation
     positives, so at most 5% of them (none when there are fewer than 20) read as absent;
     halfway between the last probability that keeps that and the next lower one, and never
     above ``threshold_present``. Between the two the finding reads as uncertain.

2. The engine reports the test split; per finding, the AUROC of its probability and the F1 of
   "present" (uncertain counts as not present) against the NIH labels, beside constant
   baselines (a constant score: AUROC 0.5; "always present": the F1 of the prevalence), with
   95% percentile bootstrap intervals resampling patients (``training.metrics.bootstrap``).
   Also: the Spanish labeler's clinical F1 of the engine's report text against the image
   labels and against the engine's own coded findings, and the studies the gate refused.

Writes ``metrics.json`` and ``metrics.md`` under ``--out`` (with each split's study list and
predictions, so the scores can be recomputed with ``--reuse``)::

    python scripts/model_card_metrics.py --engine engines/cxr-unpaired-es \\
        --nih ../shared/data/nih --out results/model-card --calibrate
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from engine.artifact import MANIFEST_NAME, EngineManifest
from engine.labeler import get_labeler
from training.data.nih import NIHChestXray14Dataset
from training.data.records import StudyRecord
from training.metrics.bootstrap import Interval, Resampler, bootstrap_ci
from training.metrics.clinical import clinical_scores
from training.train.data import with_implied_no_finding
from training.train.metrics import auroc

#: Rule-out side of the uncertain band: at most this share of validation positives below it.
ABSENT_MISS_RATE = 0.05


def write_study_list(records: list[StudyRecord], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            images = [{"path": str(i.path.resolve()), "view": i.view} for i in r.images]
            fh.write(json.dumps({"study_id": r.study_id, "images": images}) + "\n")


def run_predict(engine: Path, studies: Path, out: Path, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "engine.predict", "--engine", str(engine),
           "--studies", str(studies), "--out", str(out)]
    subprocess.run(cmd, check=True, env=env)


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    lines = (json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip())
    return {p["study_id"]: p for p in lines}


def labels_of(record: StudyRecord, keys: list[str]) -> dict[str, int]:
    found = with_implied_no_finding(record.findings)
    return {k: int(found.get(k) == "present") for k in keys if found.get(k) in ("present",
                                                                                "absent")}


def calibrate(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(present, absent) thresholds of one finding from validation probabilities."""
    pos, neg = probs[labels == 1], probs[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("calibration needs positives and negatives on the validation split")
    present, best = 0.5, -1.0
    for t in np.unique(probs):
        j = float((pos >= t).mean() - (neg >= t).mean())
        if j > best:
            best, present = j, float(t)
    ordered = np.sort(pos)
    allowed = math.floor(ABSENT_MISS_RATE * len(pos))  # positives that may read as absent
    keep_above = float(ordered[allowed])
    below = probs[probs < keep_above]
    absent = (keep_above + float(below.max())) / 2 if len(below) else keep_above / 2
    return present, float(min(absent, present))


def write_thresholds(
    engine: Path, thresholds: dict[str, tuple[float, float]], description: str | None
) -> None:
    """Rewrite the manifest's thresholds (and description); the file checksums stay as
    exported (only the manifest changes, and files added beside it stay unlisted)."""
    path = engine / MANIFEST_NAME
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for spec in manifest["findings"]:
        present, absent = thresholds[spec["key"]]
        spec["threshold_present"], spec["threshold_absent"] = round(present, 6), round(absent, 6)
    if description is not None:
        manifest["description"] = description
    EngineManifest.model_validate(manifest)
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def interval(iv: Interval) -> dict[str, float]:
    return {"estimate": iv.estimate, "low": iv.low, "high": iv.high}


def f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = float((pred & (y == 1)).sum())
    fp, fn = float((pred & (y == 0)).sum()), float((~pred & (y == 1)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan


def score_split(
    records: list[StudyRecord], preds: dict[str, dict[str, Any]], keys: list[str],
    thresholds: dict[str, tuple[float, float]], n_resamples: int, seed: int,
) -> dict[str, Any]:
    refused = [r for r in records if "error" in preds.get(r.study_id, {"error": "missing"})]
    scored = [r for r in records if r not in refused]
    out: dict[str, Any] = {
        "n_studies": len(records), "n_scored": len(scored), "n_patients":
        len({r.patient_id for r in scored}),
        "refused": dict(Counter(preds.get(r.study_id, {}).get("error_type", "missing")
                                for r in refused)),
    }
    resampler = Resampler(len(scored), groups=[r.patient_id for r in scored],
                          n_resamples=n_resamples, seed=seed)
    out["bootstrap"] = resampler.describe()
    per: dict[str, Any] = {}
    for key in keys:
        y = np.array([labels_of(r, keys).get(key, -1) for r in scored])
        p = np.array([preds[r.study_id]["probabilities"][key] for r in scored])
        hit = p >= thresholds[key][0]
        always = np.ones_like(hit)

        def stat(idx: np.ndarray, y: np.ndarray = y, p: np.ndarray = p, hit: np.ndarray = hit,
                 always: np.ndarray = always) -> dict[str, float]:
            yy = y[idx]
            keep = yy >= 0
            a = auroc(p[idx][keep], yy[keep])
            return {"auroc": math.nan if a is None else a,
                    "f1": f1(hit[idx][keep], yy[keep]),
                    "baseline_f1": f1(always[idx][keep], yy[keep])}

        ivs = bootstrap_ci(stat, resampler)
        labeled = y >= 0
        per[key] = {
            "positives": int((y == 1).sum()), "labeled": int(labeled.sum()),
            "auroc": interval(ivs["auroc"]), "f1": interval(ivs["f1"]),
            "baseline_auroc": 0.5, "baseline_f1": interval(ivs["baseline_f1"]),
            "threshold_present": thresholds[key][0], "threshold_absent": thresholds[key][1],
            "present": int(hit.sum()),
            "uncertain": int(((p > thresholds[key][1]) & ~hit).sum()),
        }
    out["per_finding"] = per
    aurocs = [v["auroc"]["estimate"] for v in per.values()]
    out["macro_auroc"] = float(np.nanmean(aurocs))

    # The Spanish labeler reads the engine's report text.
    labeler = get_labeler("es")
    text_labels = labeler.label_many([preds[r.study_id]["report"] for r in scored])
    image_labels = [{k: ("present" if v else "absent") for k, v in labels_of(r, keys).items()}
                    for r in scored]
    coded = [dict(preds[r.study_id]["findings"]) for r in scored]
    normal = [{k: ("present" if k == "no_finding" else "absent") for k in keys} for _ in scored]

    def clinical(refs: list[dict[str, Any]], hyp: list[dict[str, Any]]) -> dict[str, Any]:
        def stat(idx: np.ndarray) -> dict[str, float]:
            s = clinical_scores([refs[i] for i in idx], [hyp[i] for i in idx], keys)
            return {"micro_f1": s.micro.f1, "macro_f1": s.macro_f1}

        return {k: interval(v) for k, v in bootstrap_ci(stat, resampler).items()}

    out["clinical_f1_report_vs_image_labels"] = clinical(image_labels, text_labels)
    out["clinical_f1_normal_report_baseline"] = clinical(image_labels, normal)
    out["clinical_f1_coded_vs_image_labels"] = clinical(image_labels, coded)
    out["clinical_f1_report_vs_coded_findings"] = clinical(coded, text_labels)
    out["example_reports"] = [preds[r.study_id]["report"] for r in scored[:3]]
    return out


def markdown(metrics: dict[str, Any]) -> str:
    def ci(d: dict[str, float]) -> str:
        return f"{d['estimate']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

    test = metrics["test"]
    lines = [
        f"NIH test split: {test['n_scored']} of {test['n_studies']} images scored "
        f"({test['n_patients']} patients), refused by the gate: {test['refused'] or 'none'}; "
        f"95% bootstrap intervals over patients ({test['bootstrap']['n_resamples']} resamples).",
        "",
        "| Finding | Test positives | AUROC [95% CI] | Constant score AUROC | F1 [95% CI] | "
        "Always-present F1 [95% CI] | Present / absent threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, v in test["per_finding"].items():
        lines.append(
            f"| {key} | {v['positives']}/{v['labeled']} | {ci(v['auroc'])} | 0.500 | "
            f"{ci(v['f1'])} | {ci(v['baseline_f1'])} | {v['threshold_present']:.3f} / "
            f"{v['threshold_absent']:.3f} |"
        )
    lines += ["", f"Macro AUROC: {test['macro_auroc']:.3f}", ""]
    for name, label in (
        ("clinical_f1_report_vs_image_labels", "Spanish labeler on the report vs image labels"),
        ("clinical_f1_normal_report_baseline", "Constant normal report vs image labels"),
        ("clinical_f1_coded_vs_image_labels", "Coded findings vs image labels"),
        ("clinical_f1_report_vs_coded_findings", "Spanish labeler on the report vs coded"),
    ):
        v = test[name]
        lines.append(f"- {label}: micro F1 {ci(v['micro_f1'])}, macro F1 {ci(v['macro_f1'])}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", type=Path, required=True)
    p.add_argument("--nih", type=Path, default=Path("../shared/data/nih"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--calibrate", action="store_true",
                   help="set the thresholds from the validation split and write the manifest")
    p.add_argument("--description", default=None,
                   help="with --calibrate, also set the manifest's description")
    p.add_argument("--reuse", action="store_true", help="reuse existing predictions files")
    p.add_argument("--limit", type=int, default=0, help="first N studies of each split (smoke)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=12)
    args = p.parse_args(argv)

    manifest = json.loads((args.engine / MANIFEST_NAME).read_text(encoding="utf-8"))
    keys = [f["key"] for f in manifest["findings"]]
    metrics: dict[str, Any] = {"engine": {k: manifest[k] for k in ("name", "version")}}
    for split in (["val"] if args.calibrate else []) + ["test"]:
        records = list(NIHChestXray14Dataset(args.nih, split=split))
        if args.limit:
            records = records[: args.limit]
        studies = args.out / split / "studies.jsonl"
        preds_path = args.out / split / "predictions.jsonl"
        if not (args.reuse and preds_path.exists()):
            write_study_list(records, studies)
            run_predict(args.engine, studies, preds_path, args.threads)
        preds = read_predictions(preds_path)
        if split == "val":
            ok = [r for r in records if "error" not in preds[r.study_id]]
            thresholds = {}
            for key in keys:
                rows = [(preds[r.study_id]["probabilities"][key], labels_of(r, keys)[key])
                        for r in ok if key in labels_of(r, keys)]
                pr, y = np.array([a for a, _ in rows]), np.array([b for _, b in rows])
                if y.min() == y.max():  # the finding set should not hold such a finding
                    print(f"warning: {key}: one class only on the validation split; "
                          "its exported thresholds stay", file=sys.stderr)
                    spec = next(f for f in manifest["findings"] if f["key"] == key)
                    thresholds[key] = (spec["threshold_present"], spec["threshold_absent"])
                    continue
                thresholds[key] = calibrate(pr, y)
            write_thresholds(args.engine, thresholds, args.description)
            metrics["calibration"] = {
                "split": "val", "n_scored": len(ok), "n_studies": len(records),
                "rule": "present: Youden's J; absent: below all but "
                        f"{ABSENT_MISS_RATE:.0%} of validation positives",
                "thresholds": {k: {"present": v[0], "absent": v[1]}
                               for k, v in thresholds.items()},
            }
            continue
        manifest = json.loads((args.engine / MANIFEST_NAME).read_text(encoding="utf-8"))
        thresholds = {f["key"]: (f["threshold_present"], f["threshold_absent"])
                      for f in manifest["findings"]}
        metrics["test"] = score_split(records, preds, keys, thresholds, args.bootstrap,
                                      args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False)
                                           + "\n", encoding="utf-8")
    (args.out / "metrics.md").write_text(markdown(metrics), encoding="utf-8")
    print(markdown(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
