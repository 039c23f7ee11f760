"""Bootstrap confidence intervals for any metric computed over a set of studies.

The nonparametric bootstrap (Efron and Tibshirani 1993) as report-generation and CXR
classification papers use it: draw the test set again with replacement, recompute the metric
on the drawn set (corpus-level metrics such as BLEU and CIDEr are recomputed on the whole drawn
corpus, not averaged per study), and take the 2.5th and 97.5th percentiles of the resampled
values as the 95% interval.

Where a patient has several studies, resample patients (each drawn patient brings all their
studies): studies of one patient are not independent, and resampling them one by one makes the
interval too narrow. Pass ``groups`` (a patient id per study) for that.

The same :class:`Resampler` (same seed) gives the same draws to every metric, so the intervals
of two metrics or two systems scored on one split come from the same resamples.

    resampler = Resampler(len(refs), n_resamples=1000, seed=12)
    intervals = bootstrap_ci(lambda idx: {"auroc": auroc(y[idx], p[idx])}, resampler)
    intervals["auroc"].low, intervals["auroc"].high
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 12
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int
    #: Resamples where the metric was defined (a resample without any positive has no recall).
    n_valid: int
    unit: str

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "n_resamples": self.n_resamples,
            "n_valid": self.n_valid,
            "unit": self.unit,
        }

    def __str__(self) -> str:
        return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}]"


class Resampler:
    """Seeded bootstrap draws over ``n_items`` studies, or over their groups (patients).

    ``indices()`` yields, per resample, the study indices of the drawn set (a study drawn twice
    appears twice); ``weights()`` gives the same draws as a ``(n_resamples, n_items)`` matrix of
    counts, for metrics that are sums over studies (vectorized).
    """

    def __init__(
        self,
        n_items: int,
        *,
        groups: Sequence[object] | None = None,
        n_resamples: int = DEFAULT_RESAMPLES,
        seed: int = DEFAULT_SEED,
    ) -> None:
        if n_items < 1:
            raise ValueError(f"n_items must be at least 1, got {n_items}")
        if n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
        if groups is not None and len(groups) != n_items:
            raise ValueError(f"groups has {len(groups)} entries for {n_items} items")
        self.n_items = n_items
        self.n_resamples = n_resamples
        self.seed = seed
        self.unit = "study"
        members: list[np.ndarray]
        if groups is None:
            members = [np.array([i]) for i in range(n_items)]
        else:
            by_group: dict[object, list[int]] = {}
            for i, g in enumerate(groups):
                by_group.setdefault(g, []).append(i)
            members = [np.array(v) for v in by_group.values()]
            self.unit = "patient" if len(members) < n_items else "study"
        self._members = members
        rng = np.random.default_rng(seed)
        self._draws = rng.integers(0, len(members), size=(n_resamples, len(members)))

    @property
    def n_units(self) -> int:
        """How many independent units (studies or patients) are drawn."""
        return len(self._members)

    def indices(self) -> Iterator[np.ndarray]:
        """The study indices of each resample."""
        single = all(len(m) == 1 for m in self._members)
        for draw in self._draws:
            if single:
                yield np.fromiter((self._members[g][0] for g in draw), dtype=np.intp,
                                  count=len(draw))
            else:
                yield np.concatenate([self._members[g] for g in draw])

    def weights(self) -> np.ndarray:
        """Counts: how often each study is in each resample, shape (n_resamples, n_items)."""
        out = np.zeros((self.n_resamples, self.n_items), dtype=np.float64)
        for r, idx in enumerate(self.indices()):
            np.add.at(out[r], idx, 1.0)
        return out

    def describe(self) -> dict[str, object]:
        return {"n_resamples": self.n_resamples, "seed": self.seed, "unit": self.unit,
                "n_units": self.n_units}


def percentile_interval(values: Sequence[float] | np.ndarray,
                        level: float = DEFAULT_LEVEL) -> tuple[float, float, int]:
    """The percentile interval of resampled values, ignoring undefined (NaN) ones; returns
    ``(low, high, n_valid)`` (NaN bounds when no value is defined)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return math.nan, math.nan, 0
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(arr, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high), int(arr.size)


def intervals_from_samples(
    estimates: Mapping[str, float],
    samples: Mapping[str, Sequence[float] | np.ndarray],
    resampler: Resampler,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Interval]:
    """:class:`Interval` per metric from point estimates and resampled values."""
    out = {}
    for name, estimate in estimates.items():
        low, high, n_valid = percentile_interval(samples[name], level)
        out[name] = Interval(float(estimate), low, high, level, resampler.n_resamples, n_valid,
                             resampler.unit)
    return out


def bootstrap_ci(
    statistic: Callable[[np.ndarray], Mapping[str, float]],
    resampler: Resampler,
    *,
    level: float = DEFAULT_LEVEL,
    estimate: Mapping[str, float] | None = None,
) -> dict[str, Interval]:
    """Percentile intervals of every value ``statistic`` returns.

    ``statistic`` takes the study indices of a drawn set (an integer array, repeats allowed) and
    returns metric name -> value (NaN where undefined). ``estimate`` is the point estimate on
    the whole set (computed with all indices when not given).
    """
    if estimate is None:
        estimate = statistic(np.arange(resampler.n_items))
    samples: dict[str, list[float]] = {name: [] for name in estimate}
    for idx in resampler.indices():
        values = statistic(idx)
        for name in samples:
            samples[name].append(float(values.get(name, math.nan)))
    return intervals_from_samples(estimate, samples, resampler, level)


__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "Interval",
    "Resampler",
    "bootstrap_ci",
    "intervals_from_samples",
    "percentile_interval",
]
