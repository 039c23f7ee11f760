"""Coverage and faithfulness figures of the bridge (see scripts/bridge_coverage.py)."""

from __future__ import annotations

import logging
from collections import Counter

from engine.labeler import get_labeler
from training.bridge.bridge import bridge_report
from training.bridge.english_words import english_words_in
from training.bridge.parse_en import clean

logger = logging.getLogger(__name__)


def measure(reports: list[str]) -> dict[str, object]:
    """Coverage, agreement and leftover English for a list of English reports."""
    en, es = get_labeler("en"), get_labeler("es")
    n_sent = n_ok = n_reports_full = n_reports_some = 0
    unknown_words: Counter[str] = Counter()
    dropped_examples: Counter[str] = Counter()
    mentioned: Counter[str] = Counter()
    agreed: Counter[str] = Counter()
    agreed_ce: Counter[str] = Counter()
    confusions: Counter[tuple[str, str, str]] = Counter()
    english_left: Counter[str] = Counter()
    for report in reports:
        bridged = bridge_report(report)
        n_reports_full += bridged.complete and bool(bridged.sentences)
        n_reports_some += any(s.realised for s in bridged.sentences)
        for sent in bridged.sentences:
            n_sent += 1
            if not sent.realised:
                unknown_words.update(set(sent.unknown))
                dropped_examples[" ".join(sorted(set(sent.unknown)))] += 1
                continue
            n_ok += 1
            spanish = " ".join(sent.spanish)
            english_left.update(english_words_in(spanish))
            src = en.label(clean(sent.source), sections=False)
            dst = es.label(spanish, sections=False)
            for key in set(src) | set(dst):
                if key == "no_finding":
                    continue
                mentioned[key] += 1
                if src.get(key) == dst.get(key):
                    agreed[key] += 1
                # As clinical-efficacy metrics read labels: not mentioned counts as absent.
                if src.get(key, "absent") == dst.get(key, "absent"):
                    agreed_ce[key] += 1
                else:
                    confusions[(key, str(src.get(key)), str(dst.get(key)))] += 1
    return {
        "sentences": n_sent,
        "sentences_realised": n_ok,
        "reports": len(reports),
        "reports_fully_realised": n_reports_full,
        "reports_with_target": n_reports_some,
        "unknown_words": unknown_words.most_common(40),
        "dropped_types": dropped_examples.most_common(25),
        "agreement": {
            k: (agreed[k] / mentioned[k], agreed_ce[k] / mentioned[k], mentioned[k])
            for k in sorted(mentioned)
        },
        "confusions": confusions.most_common(25),
        "english_left": english_left.most_common(20),
    }
