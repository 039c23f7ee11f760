"""Clinical correctness: do the generated report's findings match the reference's?

Both reports are turned into findings by the same labeler (:mod:`engine.labeler`), as the
"clinical efficacy" metrics of report-generation papers do with the CheXpert labeler. A finding
counts as positive when ``present``; ``uncertain`` counts as negative unless
``uncertain_as="positive"``. Scores per finding, micro-averaged (pooled counts) and
macro-averaged over the findings that occur in the references or the predictions at least once
(a finding nobody mentions is left out rather than scored 0 or 1), or, for the fixed label sets
of published scores (``macro_over="all"``), over every finding of the set with 0 for one that
nobody has, as scikit-learn's ``f1_score(average="macro", zero_division=0)`` does.

The flat finding set (:mod:`training.findings`) stays what the report and the SR speak of. For
scores that can be set beside papers, :func:`rollup_chexpert` rolls it up onto the 14 CheXpert
observations the way CheXpert's own labeler files its phrases (Irvin et al. 2019;
``phrases/mention/*.txt`` of stanfordmlgroup/chexpert-labeler):

- Lung Lesion covers ``mass`` and ``nodule`` (its phrases: mass, nodule, nodular density,
  cavitary lesion, tumor).
- Pleural Other covers ``pleural_thickening`` and ``fibrosis`` (its phrases: pleural
  thickening, fibrosis, fibrothorax, pleural scar).
- Lung Opacity covers ``infiltration``, ``interstitial_pattern`` and ``scarring`` (its phrases:
  opacity, infiltrate, interstitial markings and pattern, reticulation, scar).
- The other findings of the flat set (granuloma, calcification, spine and aorta findings,
  emphysema, hernia, ...) are none of the 14 and are left out.
- No Finding is read again after the roll-up, as CheXpert's labeler sets it: present when none
  of the 12 pathology observations (all but No Finding and Support Devices) is present or
  uncertain.

The parent-child links between the 14 themselves (Lung Opacity over Edema, Consolidation,
Pneumonia, Lung Lesion and Atelectasis; Enlarged Cardiomediastinum over Cardiomegaly) are not
propagated, because CheXpert's labeler does not propagate them either and published scores come
from its labels as they are.

:func:`clinical_summary` gives the sets that PromptMRG and MAIRA-2 report: the 14 observations
and the 5 of the CheXpert competition (atelectasis, cardiomegaly, consolidation, edema, pleural
effusion), micro and macro, and micro F1 without No Finding. :func:`clinical_intervals` adds
bootstrap confidence intervals (:mod:`training.metrics.bootstrap`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from engine.labeler import get_labeler
from training.findings import CHEXPERT_KEYS, Presence, finding_keys
from training.metrics.bootstrap import Interval, Resampler, intervals_from_samples

logger = logging.getLogger(__name__)

UNCERTAIN_POLICIES: tuple[str, ...] = ("negative", "positive")
MACRO_OVER: tuple[str, ...] = ("observed", "all")

#: Flat finding -> the CheXpert observation whose phrases cover it (the 14 map to themselves).
CHEXPERT_ROLLUP: dict[str, str] = {
    **{k: k for k in CHEXPERT_KEYS},
    "mass": "lung_lesion",
    "nodule": "lung_lesion",
    "pleural_thickening": "pleural_other",
    "fibrosis": "pleural_other",
    "infiltration": "lung_opacity",
    "interstitial_pattern": "lung_opacity",
    "scarring": "lung_opacity",
}

#: The 5 observations of the CheXpert competition, scored as "F1-5" by MAIRA-2 and others.
CHEXPERT5_KEYS: tuple[str, ...] = (
    "atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion"
)
#: The 12 pathology observations: what makes a study not "No Finding".
_CHEXPERT_PATHOLOGIES: frozenset[str] = frozenset(CHEXPERT_KEYS) - {"no_finding",
                                                                     "support_devices"}
_RANK: dict[str, int] = {"absent": 0, "uncertain": 1, "present": 2}


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


def rollup_chexpert(labels: Mapping[str, Presence]) -> dict[str, Presence]:
    """One study's flat findings rolled up onto the 14 CheXpert observations (see the module
    docstring): an observation takes the strongest presence among the findings it covers."""
    out: dict[str, Presence] = {}
    for key, presence in labels.items():
        target = CHEXPERT_ROLLUP.get(key)
        if target is None or target == "no_finding":
            continue
        old = out.get(target)
        if old is None or _RANK[presence] > _RANK[old]:
            out[target] = presence
    if labels and not any(out.get(k) in ("present", "uncertain") for k in _CHEXPERT_PATHOLOGIES):
        out["no_finding"] = "present"
    return out


def _matrices(
    references: Sequence[Mapping[str, Presence]],
    predictions: Sequence[Mapping[str, Presence]],
    keys: Sequence[str],
    uncertain_as: str,
) -> tuple[np.ndarray, np.ndarray]:
    ref = np.array([[positive(r.get(k), uncertain_as) for k in keys] for r in references],
                   dtype=bool).reshape(len(references), len(keys))
    pred = np.array([[positive(p.get(k), uncertain_as) for k in keys] for p in predictions],
                    dtype=bool).reshape(len(predictions), len(keys))
    return ref, pred


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def _summary_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray,
                         macro_over: str) -> dict[str, np.ndarray]:
    """Micro and macro precision, recall, F1 from counts of shape (..., n_keys)."""
    p = _ratio(tp, tp + fp)
    r = _ratio(tp, tp + fn)
    f = _ratio(2 * p * r, p + r)
    mask = np.ones_like(tp, dtype=bool) if macro_over == "all" else (tp + fp + fn) > 0
    n = mask.sum(axis=-1)

    def macro(x: np.ndarray) -> np.ndarray:
        return _ratio((x * mask).sum(axis=-1), n.astype(np.float64))

    ttp, tfp, tfn = tp.sum(axis=-1), fp.sum(axis=-1), fn.sum(axis=-1)
    mp, mr = _ratio(ttp, ttp + tfp), _ratio(ttp, ttp + tfn)
    return {
        "micro_precision": mp,
        "micro_recall": mr,
        "micro_f1": _ratio(2 * mp * mr, mp + mr),
        "macro_precision": macro(p),
        "macro_recall": macro(r),
        "macro_f1": macro(f),
    }


def clinical_scores(
    references: Sequence[Mapping[str, Presence]],
    predictions: Sequence[Mapping[str, Presence]],
    keys: Sequence[str] | None = None,
    uncertain_as: str = "negative",
    macro_over: str = "observed",
) -> ClinicalScores:
    """Scores of predicted findings against reference findings, study by study.

    ``macro_over="observed"`` averages over the findings someone has; ``"all"`` over every key
    (0 for a finding nobody has), as published scores on a fixed label set do.
    """
    if macro_over not in MACRO_OVER:
        raise ValueError(f"macro_over must be one of {MACRO_OVER}, got {macro_over!r}")
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
    per = {k: PRF.from_counts(*c) for k, c in counts.items() if any(c) or macro_over == "all"}
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


#: Named label sets of :func:`clinical_summary`: (keys or None for the flat set, rolled up onto
#: CheXpert, macro_over).
SUMMARY_SETS: dict[str, tuple[tuple[str, ...] | None, bool, str]] = {
    "findings": (None, False, "observed"),
    "findings_without_no_finding": (
        tuple(k for k in finding_keys() if k != "no_finding"), False, "observed"),
    "chexpert14": (CHEXPERT_KEYS, True, "all"),
    "chexpert13_without_no_finding": (
        tuple(k for k in CHEXPERT_KEYS if k != "no_finding"), True, "all"),
    "chexpert5": (CHEXPERT5_KEYS, True, "all"),
}


def clinical_summary(
    references: Sequence[Mapping[str, Presence]],
    predictions: Sequence[Mapping[str, Presence]],
    uncertain_as: str = "negative",
) -> dict[str, ClinicalScores]:
    """Scores on every set of :data:`SUMMARY_SETS`: the flat findings, with and without
    No Finding, and the CheXpert roll-up on 14, 13 (without No Finding) and 5 observations."""
    rolled_refs = [rollup_chexpert(r) for r in references]
    rolled_preds = [rollup_chexpert(p) for p in predictions]
    out = {}
    for name, (keys, rolled, macro_over) in SUMMARY_SETS.items():
        refs, preds = (rolled_refs, rolled_preds) if rolled else (references, predictions)
        out[name] = clinical_scores(refs, preds, keys, uncertain_as, macro_over)
    return out


def clinical_intervals(
    references: Sequence[Mapping[str, Presence]],
    predictions: Sequence[Mapping[str, Presence]],
    resampler: Resampler,
    uncertain_as: str = "negative",
    level: float = 0.95,
) -> dict[str, dict[str, Interval]]:
    """Bootstrap intervals of the micro and macro scores of every set of
    :func:`clinical_summary`, and of each finding's F1 (``f1/<key>``): set name -> metric ->
    :class:`~training.metrics.bootstrap.Interval`."""
    if len(references) != len(predictions) or len(references) != resampler.n_items:
        raise ValueError("references, predictions and the resampler must cover the same studies")
    weights = resampler.weights()
    rolled_refs = [rollup_chexpert(r) for r in references]
    rolled_preds = [rollup_chexpert(p) for p in predictions]
    out: dict[str, dict[str, Interval]] = {}
    for name, (keys, rolled, macro_over) in SUMMARY_SETS.items():
        refs, preds = (rolled_refs, rolled_preds) if rolled else (references, predictions)
        keys = keys if keys is not None else finding_keys()
        ref, pred = _matrices(refs, preds, keys, uncertain_as)
        columns = [ref & pred, ~ref & pred, ref & ~pred]
        full = [c.sum(axis=0).astype(np.float64) for c in columns]
        drawn = [weights @ c.astype(np.float64) for c in columns]
        estimates = {k: float(v) for k, v in
                     _summary_from_counts(full[0], full[1], full[2], macro_over).items()}
        samples = _summary_from_counts(drawn[0], drawn[1], drawn[2], macro_over)
        for j, key in enumerate(keys):
            tp, fp, fn = (c[j] for c in full)
            if tp + fp + fn == 0 and macro_over != "all":
                continue
            estimates[f"f1/{key}"] = PRF.from_counts(int(tp), int(fp), int(fn)).f1
            dtp, dfp, dfn = (c[:, j] for c in drawn)
            dp, dr = _ratio(dtp, dtp + dfp), _ratio(dtp, dtp + dfn)
            samples[f"f1/{key}"] = _ratio(2 * dp * dr, dp + dr)
        out[name] = intervals_from_samples(estimates, samples, resampler, level)
    return out


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
    "CHEXPERT5_KEYS",
    "CHEXPERT_KEYS",
    "CHEXPERT_ROLLUP",
    "PRF",
    "SUMMARY_SETS",
    "ClinicalScores",
    "clinical_intervals",
    "clinical_scores",
    "clinical_scores_from_text",
    "clinical_summary",
    "positive",
    "rollup_chexpert",
]
