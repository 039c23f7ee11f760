#!/usr/bin/env python
"""Validate the findings labeler against labels written by people.

English: the IU X-Ray reports (OpenI XML) against their manual MeSH annotations, mapped to the
finding set by :mod:`training.label_maps`. The labeler reads FINDINGS and IMPRESSION; reports
indexed "No Indexing" or without any annotation are skipped.

Spanish: the hand-written sentences of ``tests/training/data/spanish_findings.jsonl`` (one
object a line: ``text`` and ``findings``, key -> present/absent/uncertain), written for this
purpose by the project; the IU reports are never translated (their licence forbids modified
copies).

Honest figures: a fixed part of the IU reports (:data:`HELDOUT_FILE`, 30% of the report ids
drawn with ``random.Random(12)``) is held out: nobody reads those reports while changing rules.
Rules are tuned on the rest. Both figures are printed: the tuned part shows how well the rules
fit what their authors read, the held-out part what to expect on reports nobody read.

How the two sides are made comparable:

- ``no_finding`` of the reference is derived as the labeler and CheXpert define it (no finding
  of the set other than support devices), not taken from MeSH's "normal", which means that
  nothing at all was indexed (:func:`mesh_reference`).
- Reports annotated but without FINDINGS or IMPRESSION text are skipped: there is nothing to
  read.
- Uncertainty. MeSH has no uncertainty level; the labeler has one, graded
  (:data:`engine.labeler.Certainty`): "probable" where a report hedges only how something it sees
  is read ("atelectasis or scarring", "A versus B", "probable", "likely", "borderline" heart
  size), "possible" where it raises a possibility ("may represent", "possibly", "suggest",
  "cannot exclude"). On the tuned part MeSH indexes 244 of 279 findings read as probable and 21
  of 250 read as possible (printed for each part). Three mappings are printed: uncertain as negative
  ("strict", U-Zeros, how ``training evaluate`` scores clinical efficacy, as CheXpert-based
  papers do), as positive (U-Ones, CheXpert's other mapping), and graded (probable as positive,
  possible as negative). Strict misses the first kind, U-Ones counts the second; the graded
  mapping is the one that asks the labeler what MeSH's indexers recorded, so it is the chosen
  mapping here (:data:`CHOSEN_MAPPING`). The grading was fixed on the tuned part. The labeler's
  readings are not bent toward MeSH's habit: both grades stay "uncertain" in its output.

Prints per-finding precision, recall and F1 (chosen mapping) and, for each mapping, micro F1,
macro F1 and macro F1 over the findings with at least :data:`MIN_POSITIVES` positives in the
part, with 95% bootstrap intervals over reports.

    python scripts/validate_labeler.py --iu ../shared/data/iu_xray
    python scripts/validate_labeler.py --spanish tests/training/data/spanish_findings.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from engine.labeler import Certainty, get_labeler
from engine.labeler.labeler import CERTAINTY_VALUES, NOT_ABNORMAL
from training.data.iu_xray import IUXRayDataset
from training.findings import Presence
from training.metrics.bootstrap import (
    DEFAULT_RESAMPLES,
    Interval,
    Resampler,
    intervals_from_samples,
)
from training.metrics.clinical import ClinicalScores, clinical_scores

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IU = REPO.parent / "shared" / "data" / "iu_xray"
DEFAULT_ES = REPO / "tests" / "training" / "data" / "spanish_findings.jsonl"
HELDOUT_FILE = REPO / "scripts" / "iu_labeler_heldout.txt"
HELDOUT_SEED = 12
HELDOUT_FRACTION = 0.3
#: How a finding the labeler reads as uncertain is compared with MeSH (see the module docstring):
#: mapping -> (its name, how each certainty counts).
MAPPINGS: dict[str, tuple[str, dict[str, bool]]] = {
    "negative": ("strict", {"present": True, "probable": False, "possible": False}),
    "positive": ("U-Ones", {"present": True, "probable": True, "possible": True}),
    "probable": ("graded", {"present": True, "probable": True, "possible": False}),
}
CHOSEN_MAPPING = "probable"
#: Macro F1 is also given over the findings with at least this many positives in the part: the
#: F1 of a finding with 2 positives moves by 0.3 with one report.
MIN_POSITIVES = 10
PARTS: tuple[str, ...] = ("all", "tuned", "heldout")


def draw_heldout(report_ids: Iterable[str], fraction: float = HELDOUT_FRACTION,
                 seed: int = HELDOUT_SEED) -> list[str]:
    """The held-out report ids: a seeded sample of the ids sorted by their number."""
    ids = sorted(set(report_ids), key=lambda s: (len(s), s))
    return sorted(random.Random(seed).sample(ids, round(fraction * len(ids))),
                  key=lambda s: (len(s), s))


def read_heldout(path: Path = HELDOUT_FILE) -> frozenset[str]:
    """The report ids listed in the held-out file (``#`` lines are comments)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(x.strip() for x in lines if x.strip() and not x.startswith("#"))


def mesh_reference(findings: Mapping[str, Presence]) -> dict[str, Presence]:
    """The MeSH findings of one report, with ``no_finding`` as the labeler (and CheXpert) define
    it: present when no finding other than support devices is. MeSH's own "normal" means that
    nothing at all was indexed, so a report that names only a pacemaker, or only terms outside
    the finding set ("Technical Quality of Image Unsatisfactory"), is not "normal" in MeSH but
    is "No Finding" in CheXpert's sense."""
    ref = dict(findings)
    if not any(p == "present" for k, p in ref.items() if k not in NOT_ABNORMAL):
        ref["no_finding"] = "present"
    return ref


def counts_as_positive(certainty: str | None, mapping: str = CHOSEN_MAPPING) -> bool:
    """Whether a labeler reading (``None``: not mentioned) counts as a positive under
    ``mapping`` (a key of :data:`MAPPINGS`)."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {sorted(MAPPINGS)}, got {mapping!r}")
    return MAPPINGS[mapping][1].get(certainty or "absent", False)


class IUComparison:
    """The MeSH reference and the labeler's graded reading of each annotated report of one
    part, over ``keys``: the findings that the MeSH mapping can express (the others have no
    reference)."""

    def __init__(self, refs: list[dict[str, Presence]], grades: list[dict[str, Certainty]],
                 keys: tuple[str, ...]) -> None:
        self.refs = refs
        self.grades = grades
        self.keys = keys

    def scores(self, mapping: str = CHOSEN_MAPPING) -> ClinicalScores:
        # Each reading as present or absent under the mapping, then scored with nothing left
        # uncertain, so that every mapping goes through the same clinical_scores.
        preds: list[dict[str, Presence]] = [
            {k: "present" if counts_as_positive(c, mapping) else "absent" for k, c in g.items()}
            for g in self.grades
        ]
        return clinical_scores(self.refs, preds, keys=self.keys, uncertain_as="negative")

    def frequent_keys(self, min_positives: int = MIN_POSITIVES) -> tuple[str, ...]:
        """The findings with at least ``min_positives`` reference positives in this part."""
        return tuple(k for k in self.keys
                     if sum(r.get(k) == "present" for r in self.refs) >= min_positives)

    def intervals(self, mapping: str = CHOSEN_MAPPING, min_positives: int = MIN_POSITIVES,
                  n_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Interval]:
        """Micro F1, macro F1, and macro F1 over the findings with at least ``min_positives``
        reference positives, each with a 95% bootstrap interval over reports."""
        keys = list(self.keys)
        ref = np.array([[r.get(k) == "present" for k in keys] for r in self.refs])
        pred = np.array([[counts_as_positive(g.get(k), mapping) for k in keys]
                         for g in self.grades])
        frequent = np.array([k in self.frequent_keys(min_positives) for k in keys])
        resampler = Resampler(len(self.refs), n_resamples=n_resamples)
        columns = [ref & pred, ~ref & pred, ref & ~pred]
        full = [c.sum(axis=0)[None, :].astype(np.float64) for c in columns]
        weights = resampler.weights()
        drawn = [weights @ c.astype(np.float64) for c in columns]

        def figures(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
            with np.errstate(invalid="ignore", divide="ignore"):
                micro = 2 * tp.sum(1) / (2 * tp.sum(1) + fp.sum(1) + fn.sum(1))
                denom = 2 * tp + fp + fn
                f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
            # Macro over the findings someone has in the drawn set, as clinical_scores does.
            return {"micro_f1": micro, "macro_f1": np.nanmean(f1, axis=1),
                    f"macro_f1_min{min_positives}": np.nanmean(f1[:, frequent], axis=1)}

        estimates = {k: float(v[0]) for k, v in figures(*full).items()}
        return intervals_from_samples(estimates, figures(*drawn), resampler)

    def hedges(self) -> dict[str, tuple[int, int]]:
        """Per certainty grade: (readings MeSH indexes as present, readings in all)."""
        out: dict[str, tuple[int, int]] = {}
        for ref, grade in zip(self.refs, self.grades, strict=True):
            for key, certainty in grade.items():
                if key in NOT_ABNORMAL or key not in self.keys:
                    continue
                hit, total = out.get(certainty, (0, 0))
                out[certainty] = (hit + (ref.get(key) == "present"), total + 1)
        return out


def compare_iu(root: Path, part: str = "all",
               heldout: frozenset[str] | None = None) -> IUComparison:
    """The English labeler's reading and the IU X-Ray MeSH annotations of the annotated reports
    of ``part``: ``"all"``, ``"tuned"`` (not held out) or ``"heldout"``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    held = read_heldout() if heldout is None else heldout
    dataset = IUXRayDataset(root, layout="openi", include_unsplit=True)
    labeler = get_labeler("en")
    refs: list[dict[str, Presence]] = []
    grades: list[dict[str, Certainty]] = []
    for record in dataset:
        mesh = record.meta.get("mesh", "")
        if not mesh or mesh.startswith("No Indexing"):
            continue
        if part != "all" and (record.meta.get("report_id") in held) != (part == "heldout"):
            continue
        text = record.report("en")
        if not text.strip():  # annotated, but no FINDINGS or IMPRESSION to read
            continue
        refs.append(mesh_reference(record.findings))
        grades.append(labeler.grade(text))
    return IUComparison(refs, grades, tuple(sorted({k for r in refs for k in r})))


def validate_iu(root: Path, mapping: str = CHOSEN_MAPPING, part: str = "all",
                heldout: frozenset[str] | None = None) -> ClinicalScores:
    """English labeler vs the IU X-Ray MeSH annotations of ``part`` (see :func:`compare_iu`)."""
    return compare_iu(root, part, heldout).scores(mapping)


def validate_spanish(path: Path, uncertain_as: str = "negative") -> tuple[ClinicalScores, float]:
    """Spanish labeler vs hand-labeled sentences; also the share of exactly right labels."""
    labeler = get_labeler("es")
    refs: list[dict[str, Presence]] = []
    preds: list[dict[str, Presence]] = []
    exact = 0
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        ref = item["findings"]
        pred = labeler.label(item["text"])
        refs.append(ref)
        preds.append(pred)
        # Every labeled finding, with its presence (absent and uncertain included).
        for key, presence in ref.items():
            total += 1
            exact += pred.get(key) == presence
    # Every finding of the set: a finding the labeler invents counts as a false positive.
    return clinical_scores(refs, preds, uncertain_as=uncertain_as), exact / max(total, 1)


def format_scores(title: str, scores: ClinicalScores, counting: str | None = None) -> str:
    """The per-finding table; ``counting`` says how uncertain readings were counted."""
    lines = [
        title,
        f"{'finding':28s} {'P':>6s} {'R':>6s} {'F1':>6s} {'support':>8s} {'pred':>6s}",
    ]
    for key, s in sorted(scores.per_finding.items(), key=lambda kv: -kv[1].support):
        lines.append(
            f"{key:28s} {s.precision:6.3f} {s.recall:6.3f} {s.f1:6.3f} {s.support:8d} "
            f"{s.tp + s.fp:6d}"
        )
    m = scores.micro
    lines.append(f"{'micro':28s} {m.precision:6.3f} {m.recall:6.3f} {m.f1:6.3f} {m.support:8d}")
    lines.append(
        f"{'macro':28s} {scores.macro_precision:6.3f} {scores.macro_recall:6.3f} "
        f"{scores.macro_f1:6.3f}"
    )
    counting = counting or f"uncertain counted as {scores.uncertain_as}"
    lines.append(f"studies: {scores.n_studies}, {counting}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iu", type=Path, default=None, help="IU X-Ray folder (OpenI reports)")
    parser.add_argument("--spanish", type=Path, default=None, help="Spanish JSONL test set")
    parser.add_argument("--mapping", choices=tuple(MAPPINGS), default=CHOSEN_MAPPING,
                        help="how the per-finding table counts uncertain readings: negative "
                             "(strict), positive (U-Ones) or probable (graded); all three are "
                             "summarised")
    parser.add_argument("--min-positives", type=int, default=MIN_POSITIVES,
                        help="also average F1 over the findings with this many positives")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                        help="bootstrap resamples (reports) for the 95%% intervals")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.iu is None and args.spanish is None:
        args.iu, args.spanish = DEFAULT_IU, DEFAULT_ES
    out: dict[str, object] = {}
    if args.iu is not None:
        held = read_heldout()
        for part, title in (("tuned", "reports the rules were tuned on"),
                            ("heldout", f"held-out reports ({HELDOUT_FILE.name}), never read")):
            comparison = compare_iu(args.iu, part, held)
            scores = comparison.scores(args.mapping)
            print(format_scores(
                f"English labeler vs IU X-Ray manual MeSH annotations: {title}", scores,
                f"uncertain counted by the {MAPPINGS[args.mapping][0]} mapping"))
            out[f"iu_mesh_{part}"] = {**scores.as_dict(), "mapping": args.mapping}
            for mapping, (name, _) in MAPPINGS.items():
                intervals = comparison.intervals(mapping, args.min_positives, args.resamples)
                chosen = " (chosen)" if mapping == CHOSEN_MAPPING else ""
                print(f"uncertain as {mapping} ({name}){chosen}: " + "; ".join(
                    f"{k} {v}" for k, v in intervals.items()))
                out[f"iu_mesh_{part}_intervals_uncertain_{mapping}"] = {
                    k: v.as_dict() for k, v in intervals.items()}
            hedges = comparison.hedges()
            print("readings MeSH indexes as present: " + "; ".join(
                f"{c} {hedges[c][0]} of {hedges[c][1]}" for c in CERTAINTY_VALUES if c in hedges))
            out[f"iu_mesh_{part}_indexed_by_certainty"] = {
                c: {"indexed": n, "readings": t} for c, (n, t) in hedges.items()}
            frequent = comparison.frequent_keys(args.min_positives)
            print(f"findings with at least {args.min_positives} positives: {len(frequent)} of "
                  f"{len(comparison.keys)}")
            print()
    if args.spanish is not None:
        # The Spanish set is labelled present/absent/uncertain: scored strict.
        scores, exact = validate_spanish(args.spanish)
        print()
        print(format_scores("Spanish labeler vs hand-labeled Spanish sentences", scores))
        print(f"labels exactly right (present/absent/uncertain): {exact:.3f}")
        out["spanish"] = {**scores.as_dict(), "exact_label_accuracy": exact}
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
