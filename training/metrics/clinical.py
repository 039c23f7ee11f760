"""Clinical correctness: do the generated report's findings match the reference's?

Both reports are turned into findings by the same labeler (:mod:`engine.labeler`), as the
"clinical efficacy" metrics of report-generation papers do with the CheXpert labeler. A finding
counts as positive when ``present``; ``uncertain`` counts as negative unless
``uncertain_as="positive"``. Scores per finding, micro-averaged (pooled counts) and
macro-averaged over the findings that occur in the references or the predictions at least once
(a finding nobody mentions is left out rather than scored 0 or 1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from engine.labeler import get_labeler
from training.findings import CHEXPERT_KEYS, Presence, finding_keys

logger = logging.getLogger(__name__)

UNCERTAIN_POLICIES: tuple[str, ...] = ("negative", "positive")


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 with the counts behind them."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int

    @property
    def support(self) -> int:
        """Reference positives."""
        return self.tp + self.fn

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> PRF:
        """Scores from counts; a ratio with a zero denominator is 0, as in scikit-learn."""
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return cls(p, r, f, tp, fp, fn)

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = asdict(self)
        out["support"] = self.support
        return out


@dataclass(frozen=True)
class ClinicalScores:
    """Per-finding and averaged scores over a set of studies."""

    per_finding: dict[str, PRF]
    micro: PRF
    macro_precision: float
    macro_recall: float
    macro_f1: float
    n_studies: int
    uncertain_as: str

    def as_dict(self) -> dict[str, object]:
        return {
            "n_studies": self.n_studies,
            "uncertain_as": self.uncertain_as,
            "micro": self.micro.as_dict(),
            "macro": {
                "precision": self.macro_precision,
                "recall": self.macro_recall,
                "f1": self.macro_f1,
                "n_findings": len(self.per_finding),
            },
            "per_finding": {k: v.as_dict() for k, v in self.per_finding.items()},
        }


def positive(presence: Presence | None, uncertain_as: str = "negative") -> bool:
    """Whether a labeled presence counts as a positive finding."""
    if presence == "present":
        return True
    return presence == "uncertain" and uncertain_as == "positive"


def clinical_scores(
    references: Sequence[Mapping[str, Presence]],
    predictions: Sequence[Mapping[str, Presence]],
    keys: Sequence[str] | None = None,
    uncertain_as: str = "negative",
) -> ClinicalScores:
    """Scores of predicted findings against reference findings, study by study."""
    if len(references) != len(predictions):
        raise ValueError(
            f"references and predictions differ in length ({len(references)} vs "
            f"{len(predictions)})"
        )
    if uncertain_as not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain_as must be one of {UNCERTAIN_POLICIES}")
    keys = tuple(keys) if keys is not None else finding_keys()
    counts = {k: [0, 0, 0] for k in keys}
    for ref, pred in zip(references, predictions, strict=True):
        for k in keys:
            r = positive(ref.get(k), uncertain_as)
            p = positive(pred.get(k), uncertain_as)
            if r and p:
                counts[k][0] += 1
            elif p:
                counts[k][1] += 1
            elif r:
                counts[k][2] += 1
    per = {k: PRF.from_counts(*c) for k, c in counts.items() if any(c)}
    tp = sum(c[0] for c in counts.values())
    fp = sum(c[1] for c in counts.values())
    fn = sum(c[2] for c in counts.values())
    n = len(per)
    return ClinicalScores(
        per_finding=per,
        micro=PRF.from_counts(tp, fp, fn),
        macro_precision=sum(s.precision for s in per.values()) / n if n else 0.0,
        macro_recall=sum(s.recall for s in per.values()) / n if n else 0.0,
        macro_f1=sum(s.f1 for s in per.values()) / n if n else 0.0,
        n_studies=len(references),
        uncertain_as=uncertain_as,
    )


def clinical_scores_from_text(
    references: Sequence[str],
    generated: Sequence[str],
    lang: str = "en",
    keys: Sequence[str] | None = None,
    uncertain_as: str = "negative",
) -> ClinicalScores:
    """Label both sides with the ``lang`` labeler, then score (see :func:`clinical_scores`)."""
    labeler = get_labeler(lang)
    return clinical_scores(
        labeler.label_many(references), labeler.label_many(generated), keys, uncertain_as
    )


__all__ = [
    "CHEXPERT_KEYS",
    "PRF",
    "ClinicalScores",
    "clinical_scores",
    "clinical_scores_from_text",
    "positive",
]
