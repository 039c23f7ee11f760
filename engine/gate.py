"""The gate: is this image what the engine was made for (an adult human chest radiograph)?

The header part runs before any pixel is decoded: modality, presentation intent, image type,
species, body part, patient age, matrix size and field of view. An image that fails is never
given to the model; a study whose images all fail is *not reportable*, with every reason kept,
so the operator sees why no draft was written. The thresholds are the engine's (its manifest's
``gate``), because what is plausible depends on what the engine was trained on.

The image-based part looks at the pixels: the Mahalanobis distance of the encoder's pooled
features (the embedding its finding head reads) to their distribution on the engine's training
images (:class:`FeatureStatistics`: mean and a diagonal or shrinkage covariance, kept in the
artifact's ``gate.feature_stats`` file). The runtime measures it after encoding; an image
farther than ``gate.max_feature_distance`` (calibrated on the validation split by
``scripts/calibrate_image_gate.py``) does not look like the chest radiographs the engine
learned, and its study is not reportable. An artifact without the features output or the
statistics is served with this check off, and the runtime says so (:func:`load_image_gate`).
"""

from __future__ import annotations

import io
import logging
import math
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

# SNOMED CT 337915000 "Homo sapiens", the species code of a human patient (CID 7454).
HUMAN_SPECIES_CODES = frozenset({"337915000", "L-85B00"})
_HUMAN_SPECIES_TEXT = re.compile(r"\b(homo sapiens|human|humano|humana)\b", re.IGNORECASE)
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}


class GateSpec(BaseModel):
    """What the engine accepts. Every bound is a setting of the engine, kept in its manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: tuple[str, ...] = ("CR", "DX")
    body_parts: tuple[str, ...] = Field(
        default=("CHEST", "THORAX", "TORAX", "TÓRAX", "LUNG", "PULMON", "PULMÓN", "PECHO"),
        description="Body Part Examined values taken as chest; an absent value is accepted.",
    )
    refused_image_types: tuple[str, ...] = ("LOCALIZER", "SCOUT", "DOSE_INFO", "SCREEN SAVE")
    min_patient_age_years: float | None = Field(
        default=12.0,
        description="Younger patients are refused (the engine learned adult anatomy); "
        "an absent or unreadable age is accepted.",
    )
    min_matrix: int = Field(default=256, ge=1, description="Smallest Rows or Columns accepted.")
    min_field_of_view_mm: float = Field(
        default=150.0,
        description="Smallest image extent (from the pixel spacing) plausible for an adult "
        "chest. Kept low on purpose: downsampled exports often keep the original spacing.",
    )
    max_field_of_view_mm: float = 650.0
    max_feature_distance: float | None = Field(
        default=None,
        gt=0.0,
        allow_inf_nan=False,
        description="Image-based check: largest Mahalanobis distance of the encoder's "
        "features to the training distribution, calibrated on the validation split; None "
        "turns it off.",
    )
    feature_stats: str | None = Field(
        default=None,
        min_length=1,
        description="The artifact's file (.npz, FeatureStatistics) holding the training "
        "distribution of the encoder's features; set exactly when max_feature_distance is.",
    )

    @model_validator(mode="after")
    def _image_check_complete(self) -> GateSpec:
        if (self.max_feature_distance is None) != (self.feature_stats is None):
            raise ValueError(
                "gate.max_feature_distance and gate.feature_stats go together (the threshold "
                f"and the statistics it is measured with), got {self.max_feature_distance!r} "
                f"and {self.feature_stats!r}"
            )
        return self


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one image: accepted when ``reasons`` is empty."""

    sop_instance_uid: str
    reasons: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        return not self.reasons


def patient_age_years(ds: Dataset) -> float | None:
    """Patient Age (``nnnD|W|M|Y``; a bare number read as years) in years, or None."""
    match = _AGE.match(str(getattr(ds, "PatientAge", "") or ""))
    if match is None:
        return None
    return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()]


def _is_non_human(ds: Dataset) -> str | None:
    for item in getattr(ds, "PatientSpeciesCodeSequence", None) or []:
        code = str(getattr(item, "CodeValue", "") or "")
        if code and code not in HUMAN_SPECIES_CODES:
            meaning = str(getattr(item, "CodeMeaning", "") or code)
            return f"the patient's species is {meaning!r}, not human"
    species = str(getattr(ds, "PatientSpeciesDescription", "") or "").strip()
    if species and not _HUMAN_SPECIES_TEXT.search(species):
        return f"the patient's species is {species!r}, not human"
    breed = str(getattr(ds, "PatientBreedDescription", "") or "").strip()
    if breed or getattr(ds, "PatientBreedCodeSequence", None):
        return f"the patient has a breed ({breed or 'coded'}): a veterinary image"
    return None


def _field_of_view_mm(ds: Dataset) -> float | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = getattr(ds, keyword, None)
        try:
            row_mm, col_mm = float(spacing[0]), float(spacing[1])  # type: ignore[index]
        except (TypeError, ValueError, IndexError):
            continue
        if row_mm > 0 and col_mm > 0:
            rows = int(getattr(ds, "Rows", 0) or 0)
            cols = int(getattr(ds, "Columns", 0) or 0)
            return max(rows * row_mm, cols * col_mm)
    return None


def check_image_header(ds: Dataset, spec: GateSpec) -> GateDecision:
    """Every reason the header gives to keep this image away from the engine."""
    reasons: list[str] = []
    modality = str(getattr(ds, "Modality", "") or "").strip().upper()
    if modality not in spec.modalities:
        reasons.append(
            f"Modality {modality or '(absent)'} is not one the engine reads "
            f"({', '.join(spec.modalities)})"
        )
    intent = str(getattr(ds, "PresentationIntentType", "") or "").strip().upper()
    if intent == "FOR PROCESSING":
        reasons.append(
            "a DX image For Processing holds raw detector data; send the For Presentation image"
        )
    image_type = {str(v).strip().upper() for v in (getattr(ds, "ImageType", None) or [])}
    refused_types = sorted(image_type & {t.upper() for t in spec.refused_image_types})
    if refused_types:
        reasons.append(f"Image Type {'/'.join(refused_types)} is not a diagnostic radiograph")
    non_human = _is_non_human(ds)
    if non_human:
        reasons.append(non_human)
    body_part = str(getattr(ds, "BodyPartExamined", "") or "").strip().upper()
    if body_part and body_part not in {b.upper() for b in spec.body_parts}:
        reasons.append(f"Body Part Examined {body_part} is not the chest")
    age = patient_age_years(ds)
    minimum_age = spec.min_patient_age_years
    if age is not None and minimum_age is not None and age < minimum_age:
        reasons.append(
            f"patient age {age:.1f} years is below the engine's minimum of "
            f"{minimum_age:g} (it learned adult anatomy)"
        )
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    if min(rows, cols) < spec.min_matrix:
        reasons.append(
            f"the image is {cols}x{rows} pixels, below the {spec.min_matrix} pixels a chest "
            "radiograph has on its shorter side"
        )
    fov = _field_of_view_mm(ds)
    if fov is not None and not spec.min_field_of_view_mm <= fov <= spec.max_field_of_view_mm:
        reasons.append(
            f"the image covers {fov:.0f} mm, outside the {spec.min_field_of_view_mm:.0f}-"
            f"{spec.max_field_of_view_mm:.0f} mm of an adult chest radiograph"
        )
    return GateDecision(str(getattr(ds, "SOPInstanceUID", "") or ""), tuple(reasons))


def check_study_headers(
    datasets: Sequence[Dataset], spec: GateSpec
) -> tuple[list[Dataset], list[GateDecision]]:
    """The images the engine may look at, and the gate's decision on every image."""
    decisions = [check_image_header(ds, spec) for ds in datasets]
    accepted = [ds for ds, d in zip(datasets, decisions, strict=True) if d.accepted]
    for decision in decisions:
        if not decision.accepted:
            logger.info(
                "gate refuses image %s: %s", decision.sop_instance_uid, "; ".join(decision.reasons)
            )
    return accepted, decisions


def refusal_summary(decisions: Sequence[GateDecision]) -> str:
    """One line an operator can read: why no image of the study was accepted."""
    parts = [f"{d.sop_instance_uid or '?'}: {'; '.join(d.reasons)}" for d in decisions if d.reasons]
    return "not a chest radiograph the engine was made for — " + " | ".join(parts)


# -- the image-based check ----------------------------------------------------------------


#: How the covariance of the training features is estimated (:meth:`FeatureStatistics.fit`).
COVARIANCES = ("diagonal", "ledoit-wolf")


@dataclass(frozen=True)
class FeatureStatistics:
    """The training distribution of the encoder's features: mean and precision matrix.

    ``covariance`` says how the precision was estimated: ``diagonal`` (each feature
    standardised by its own training spread, correlations ignored) or ``ledoit-wolf`` (the
    full covariance shrunk towards a scaled identity, Ledoit & Wolf 2004, ``shrinkage`` its
    intensity). With a few hundred images in a few hundred dimensions the sample covariance is
    singular; both keep every direction's variance positive. Stored as ``.npz`` (``mean [D]``,
    ``precision [D, D]``, ``covariance``, ``shrinkage``, ``n_images``) so the runtime measures
    either the same way.
    """

    mean: NDArray[np.float64]
    precision: NDArray[np.float64]
    shrinkage: float
    n_images: int
    covariance: str = "ledoit-wolf"

    def __post_init__(self) -> None:
        if self.mean.ndim != 1 or self.precision.shape != (self.mean.size, self.mean.size):
            raise ValueError(
                f"FeatureStatistics: mean {self.mean.shape} and precision "
                f"{self.precision.shape} must be [D] and [D, D]"
            )
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.precision))):
            raise ValueError("FeatureStatistics: mean and precision must be finite")
        if self.covariance not in COVARIANCES:
            raise ValueError(
                f"FeatureStatistics: covariance must be one of {COVARIANCES}, "
                f"got {self.covariance!r}"
            )

    @property
    def dim(self) -> int:
        return int(self.mean.size)

    @classmethod
    def fit(
        cls, features: NDArray[np.floating], covariance: str = "diagonal"
    ) -> FeatureStatistics:
        """Mean and covariance (``covariance``: one of :data:`COVARIANCES`) of
        ``features [N, D]`` (N >= 2)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"features must be [N >= 2, D], got {x.shape}")
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
        n, d = x.shape
        mean = x.mean(axis=0)
        centred = x - mean
        if covariance == "diagonal":
            variance = centred.var(axis=0)
            # A feature that never varied in training must not divide by zero.
            variance = np.maximum(variance, 1e-6 * max(float(variance.mean()), 1e-12))
            return cls(mean, np.diag(1.0 / variance), 0.0, int(n), covariance)
        sample = centred.T @ centred / n
        mu = float(np.trace(sample)) / d
        target = mu * np.eye(d)
        delta = float(np.sum((sample - target) ** 2)) / d
        squares = centred**2
        beta_sum = float(np.sum(squares.T @ squares) - n * np.sum(sample**2))
        beta = min(delta, beta_sum / (n * n * d))
        shrinkage = beta / delta if delta > 0 else 1.0
        shrunk = shrinkage * target + (1.0 - shrinkage) * sample
        precision = np.linalg.pinv(shrunk, hermitian=True)
        return cls(mean, precision, float(shrinkage), int(n), "ledoit-wolf")

    def distances(self, features: NDArray[np.floating]) -> NDArray[np.float64]:
        """Mahalanobis distance of each row of ``features [B, D]``."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must be [B, {self.dim}], got {x.shape}")
        centred = x - self.mean
        squared = np.einsum("bi,ij,bj->b", centred, self.precision, centred)
        return np.sqrt(np.maximum(squared, 0.0))

    def save(self, path: str | Path) -> None:
        """Write the ``.npz``; the zip entries carry a fixed date, so the same statistics give
        the same bytes (and the same checksum in the manifest) on every run."""
        arrays = {
            "mean": self.mean,
            "precision": self.precision,
            "shrinkage": np.float64(self.shrinkage),
            "n_images": np.int64(self.n_images),
            "covariance": np.str_(self.covariance),
        }
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, buffer.getvalue(), compresslevel=9)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStatistics:
        with np.load(path, allow_pickle=False) as data:
            missing = {"mean", "precision", "shrinkage", "n_images", "covariance"} - set(
                data.files
            )
            if missing:
                raise ValueError(f"{path}: feature statistics lack {sorted(missing)}")
            return cls(
                np.asarray(data["mean"], dtype=np.float64),
                np.asarray(data["precision"], dtype=np.float64),
                float(data["shrinkage"]),
                int(data["n_images"]),
                str(data["covariance"]),
            )


@dataclass(frozen=True)
class ImageGate:
    """The image-based check: features farther than ``max_distance`` are refused."""

    statistics: FeatureStatistics
    max_distance: float

    def reasons(self, features: NDArray[np.floating]) -> list[tuple[float, str | None]]:
        """Per image: its distance, and why it is refused (None when it passes)."""
        out: list[tuple[float, str | None]] = []
        for distance in self.statistics.distances(features):
            value = float(distance)
            if math.isfinite(value) and value <= self.max_distance:
                out.append((value, None))
            else:
                out.append(
                    (
                        value,
                        "the pixels do not look like the chest radiographs the engine was "
                        f"trained on (feature distance {value:.1f} above the engine's "
                        f"{self.max_distance:.1f}, gate.max_feature_distance)",
                    )
                )
        return out


def load_image_gate(
    root: Path, spec: GateSpec, *, has_features: bool
) -> tuple[ImageGate | None, str]:
    """The engine's image gate, or None and why it is off (said once when an engine loads)."""
    if spec.max_feature_distance is None or spec.feature_stats is None:
        return None, "the engine's manifest sets no gate.max_feature_distance"
    if not has_features:
        return None, "the engine's encoder has no 'features' output (an older export)"
    path = root / spec.feature_stats
    try:
        statistics = FeatureStatistics.load(path)
    except (OSError, ValueError) as exc:
        return None, f"{path} cannot be read ({exc})"
    return ImageGate(statistics, spec.max_feature_distance), (
        f"on: feature distance at most {spec.max_feature_distance:.2f} "
        f"({statistics.covariance} covariance of {statistics.n_images} training images, "
        f"{statistics.dim} features)"
    )
