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

Prints per-finding precision, recall and F1 and their micro and macro averages.

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

from engine.labeler import get_labeler
from engine.labeler.labeler import NOT_ABNORMAL
from training.data.iu_xray import IUXRayDataset
from training.findings import Presence
from training.metrics.clinical import ClinicalScores, clinical_scores

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IU = REPO.parent / "shared" / "data" / "iu_xray"
DEFAULT_ES = REPO / "tests" / "training" / "data" / "spanish_findings.jsonl"
HELDOUT_FILE = REPO / "scripts" / "iu_labeler_heldout.txt"
HELDOUT_SEED = 12
HELDOUT_FRACTION = 0.3
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


def validate_iu(root: Path, uncertain_as: str = "negative", part: str = "all",
                heldout: frozenset[str] | None = None) -> ClinicalScores:
    """English labeler vs the IU X-Ray MeSH annotations, over the annotated reports of ``part``:
    ``"all"``, ``"tuned"`` (not held out) or ``"heldout"``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    held = read_heldout() if heldout is None else heldout
    dataset = IUXRayDataset(root, layout="openi", include_unsplit=True)
    labeler = get_labeler("en")
    refs: list[dict[str, Presence]] = []
    preds: list[dict[str, Presence]] = []
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
        preds.append(labeler.label(text))
    # Score only findings that the MeSH mapping can express: the others have no reference.
    keys = sorted({k for r in refs for k in r})
    return clinical_scores(refs, preds, keys=keys, uncertain_as=uncertain_as)


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


def format_scores(title: str, scores: ClinicalScores) -> str:
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
    lines.append(f"studies: {scores.n_studies}, uncertain counted as {scores.uncertain_as}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iu", type=Path, default=None, help="IU X-Ray folder (OpenI reports)")
    parser.add_argument("--spanish", type=Path, default=None, help="Spanish JSONL test set")
    parser.add_argument("--uncertain-as", choices=("negative", "positive"), default="negative")
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
            scores = validate_iu(args.iu, args.uncertain_as, part, held)
            print(format_scores(
                f"English labeler vs IU X-Ray manual MeSH annotations: {title}", scores))
            print()
            out[f"iu_mesh_{part}"] = scores.as_dict()
    if args.spanish is not None:
        scores, exact = validate_spanish(args.spanish, args.uncertain_as)
        print()
        print(format_scores("Spanish labeler vs hand-labeled Spanish sentences", scores))
        print(f"labels exactly right (present/absent/uncertain): {exact:.3f}")
        out["spanish"] = {**scores.as_dict(), "exact_label_accuracy": exact}
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
