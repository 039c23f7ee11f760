"""The image gate's parts without an engine: the feature statistics and the manifest's fields."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.artifact import ENCODER_FEATURES, ENCODER_OUTPUTS, EngineManifest
from engine.gate import COVARIANCES, FeatureStatistics, GateSpec, ImageGate, load_image_gate

BUNDLED = Path(__file__).resolve().parents[2] / "engines" / "cxr-unpaired-es"


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_statistics_measure_distance_from_the_training_features(covariance: str) -> None:
    rng = np.random.default_rng(0)
    scales = np.linspace(0.5, 2.0, 32)
    train = rng.normal(size=(200, 32)) * scales + 5.0
    stats = FeatureStatistics.fit(train, covariance)
    assert 0.0 <= stats.shrinkage <= 1.0 and stats.n_images == 200 and stats.dim == 32
    assert stats.covariance == covariance
    inside = stats.distances(rng.normal(size=(200, 32)) * scales + 5.0)
    # Mahalanobis: the same shift counts more along a narrow axis than along a wide one.
    narrow, wide = np.full((1, 32), 5.0), np.full((1, 32), 5.0)
    narrow[0, 0] += 3.0
    wide[0, -1] += 3.0
    assert stats.distances(narrow)[0] > 1.5 * stats.distances(wide)[0]
    far = np.full((1, 32), 5.0) + 2.0 * scales
    assert stats.distances(far)[0] > 1.5 * np.percentile(inside, 99)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_statistics_stay_usable_with_fewer_images_than_features(covariance: str) -> None:
    train = np.random.default_rng(1).normal(size=(20, 64))
    train[:, 3] = 1.0  # a feature that never varies
    stats = FeatureStatistics.fit(train, covariance)
    assert stats.shrinkage > 0.0 or covariance == "diagonal"
    assert np.all(np.isfinite(stats.distances(train)))


def test_statistics_refuse_an_unknown_covariance() -> None:
    with pytest.raises(ValueError, match="covariance"):
        FeatureStatistics.fit(np.zeros((4, 2)), "empirical")


def test_statistics_file_round_trips_with_the_same_bytes(tmp_path: Path) -> None:
    stats = FeatureStatistics.fit(np.random.default_rng(2).normal(size=(50, 8)), "ledoit-wolf")
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    stats.save(first)
    stats.save(second)
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(
        second.read_bytes()
    ).digest()
    loaded = FeatureStatistics.load(first)
    np.testing.assert_array_equal(loaded.precision, stats.precision)
    assert (loaded.shrinkage, loaded.n_images, loaded.covariance) == (
        stats.shrinkage,
        stats.n_images,
        "ledoit-wolf",
    )


def test_the_gate_refuses_beyond_its_threshold_and_says_why() -> None:
    stats = FeatureStatistics(np.zeros(2), np.eye(2), 0.0, 10, "diagonal")
    gate = ImageGate(stats, 5.0)
    (near, far, nan) = gate.reasons(np.array([[3.0, 4.0], [3.0, 4.1], [np.nan, 0.0]]))
    assert near == (5.0, None)
    assert far[1] is not None and "gate.max_feature_distance" in far[1]
    assert nan[1] is not None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"max_feature_distance": 20.0}, "max_feature_distance"),
        ({"feature_stats": "feature_stats.npz"}, "feature_stats"),
        ({"max_feature_distance": -1.0, "feature_stats": "s.npz"}, "max_feature_distance"),
        ({"max_feature_distance": float("nan"), "feature_stats": "s.npz"},
         "max_feature_distance"),
        ({"max_feature_distance": "far", "feature_stats": "s.npz"}, "max_feature_distance"),
        ({"max_feature_distance": 20.0, "feature_stats": ""}, "feature_stats"),
    ],
)
def test_gate_spec_validates_the_image_fields(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        GateSpec(**fields)


def _bundled_manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((BUNDLED / "manifest.json").read_text(encoding="utf-8"))
    return data


def test_the_manifest_ties_the_statistics_to_the_features_output() -> None:
    data = _bundled_manifest()
    assert EngineManifest.model_validate(data).has_image_features
    data["graphs"]["encoder"]["outputs"] = list(ENCODER_OUTPUTS)
    with pytest.raises(ValueError, match=r"gate\.feature_stats"):
        EngineManifest.model_validate(data)


def test_the_features_output_needs_format_1_2() -> None:
    data = _bundled_manifest()
    data["format_version"] = "1.1"
    with pytest.raises(ValueError, match=r"graphs\.encoder\.outputs"):
        EngineManifest.model_validate(data)


def test_only_the_features_output_may_follow_the_four() -> None:
    data = _bundled_manifest()
    data["graphs"]["encoder"]["outputs"] = [*ENCODER_OUTPUTS, "embedding"]
    with pytest.raises(ValueError, match="graph 'encoder' must have"):
        EngineManifest.model_validate(data)
    data["graphs"]["encoder"]["outputs"] = [*ENCODER_OUTPUTS, ENCODER_FEATURES]
    assert EngineManifest.model_validate(data).has_image_features


def test_an_unset_or_unreadable_gate_is_off_with_a_reason(tmp_path: Path) -> None:
    gate, why = load_image_gate(tmp_path, GateSpec(), has_features=True)
    assert gate is None and "max_feature_distance" in why
    spec = GateSpec(max_feature_distance=10.0, feature_stats="feature_stats.npz")
    gate, why = load_image_gate(tmp_path, spec, has_features=False)
    assert gate is None and "'features' output" in why
    gate, why = load_image_gate(tmp_path, spec, has_features=True)
    assert gate is None and "feature_stats.npz" in why
