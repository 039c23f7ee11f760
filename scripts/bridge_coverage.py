"""Coverage and faithfulness of the English -> Spanish bridge on the IU X-Ray R2Gen split.

Prints, for one split: the share of sentences and of reports fully realised in Spanish, the
most frequent words that made sentences unparseable (the untranslatable sentence types), and
per finding the agreement between the English labeler on each source sentence and the Spanish
labeler on its Spanish realisation. Nothing translated is written anywhere.

    PYTHONPATH=. python scripts/bridge_coverage.py --split train
    PYTHONPATH=. python scripts/bridge_coverage.py --split test --min-agreement 0.95
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from training.bridge.coverage import measure

logger = logging.getLogger(__name__)

DEFAULT_ANNOTATION = Path("../shared/data/iu_xray/r2gen_split_annotation.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation", type=Path, default=DEFAULT_ANNOTATION)
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--limit", type=int, default=0, help="first N reports only")
    parser.add_argument("--min-agreement", type=float, default=0.95,
                        help="exit 1 if any finding's agreement is below this")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    records = json.loads(args.annotation.read_text(encoding="utf-8"))[args.split]
    reports = [r["report"] for r in records]
    if args.limit:
        reports = reports[: args.limit]
    m = measure(reports)
    s, so = m["sentences"], m["sentences_realised"]
    r, rf, rs = m["reports"], m["reports_fully_realised"], m["reports_with_target"]
    assert isinstance(s, int) and isinstance(so, int) and isinstance(r, int)
    assert isinstance(rf, int) and isinstance(rs, int)
    print(f"split {args.split}: {r} reports, {s} sentences")
    print(f"sentences realised: {so}/{s} = {so / max(s, 1):.3f}")
    print(f"reports fully realised: {rf}/{r} = {rf / max(r, 1):.3f}; "
          f"with a non-empty target: {rs}/{r} = {rs / max(r, 1):.3f}")
    print("\nwords that made sentences untranslatable (sentences containing each):")
    for word, n in m["unknown_words"]:  # type: ignore[attr-defined]
        print(f"  {n:5d}  {word}")
    print("\nuntranslatable sentence types (their unknown words):")
    for words, n in m["dropped_types"]:  # type: ignore[attr-defined]
        print(f"  {n:5d}  {words}")
    print("\nper-finding agreement, English labeler on the source sentence vs Spanish labeler "
          "on its realisation, over the sentences where either mentions the finding.\n"
          "strict: present/absent/uncertain/not mentioned must match; ce: not mentioned "
          "counts as absent (as clinical-efficacy metrics read labels)")
    print(f"  {'finding':28s} strict  ce     n")
    worst = 1.0
    agreement = m["agreement"]
    assert isinstance(agreement, dict)
    for key, (strict, ce, n) in agreement.items():
        worst = min(worst, ce)
        flag = "" if ce >= args.min_agreement else "  < target (ce)"
        print(f"  {key:28s} {strict:.3f}  {ce:.3f}  {n}{flag}")
    print("\nmost frequent disagreements (finding, English, Spanish):")
    for (key, a, b), n in m["confusions"]:  # type: ignore[attr-defined]
        print(f"  {n:5d}  {key}: {a} -> {b}")
    print(f"\nEnglish words left in Spanish output: {m['english_left'] or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(m, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0 if worst >= args.min_agreement and not m["english_left"] else 1


if __name__ == "__main__":
    sys.exit(main())
