"""Engine test fixtures: the tiny random-weight artifact (built once per session through the
real export path) and the real DICOM files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from tiny_engine import session_tiny_artifact

from engine.artifact import EngineArtifact
from engine.runtime import Engine, create_engine

REAL_FILES = (
    "rg1_chest_cr_uncompressed.dcm",
    "rg1_chest_cr_j2k_lossless.dcm",
    "rg1_chest_cr_j2k_lossy.dcm",
    "siim_chest_cr_jpeg_baseline.dcm",
    "siim_chest_cr_monochrome1.dcm",
    "highdicom_dx_canine_thorax.dcm",
)


@pytest.fixture(scope="session")
def tiny_artifact_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., EngineArtifact]:
    """``factory(seed=0, num_views=1)``: a tiny artifact, exported once per session."""
    base = tmp_path_factory.mktemp("engines")

    def factory(seed: int = 0, num_views: int = 1) -> EngineArtifact:
        # The exporter logs every ONNX rewrite at INFO; keep test output readable.
        logging.getLogger("onnx_ir").setLevel(logging.WARNING)
        return session_tiny_artifact(base, seed, num_views)

    return factory


@pytest.fixture(scope="session")
def tiny_artifact(tiny_artifact_factory: Callable[..., EngineArtifact]) -> EngineArtifact:
    return tiny_artifact_factory()


@pytest.fixture(scope="session")
def tiny_artifact_dir(tiny_artifact: EngineArtifact) -> Path:
    """The artifact directory; tests that damage it work on a copy."""
    return tiny_artifact.root


@pytest.fixture(scope="session")
def real_datasets(dicom_dir: Path) -> dict[str, Dataset]:
    return {name: pydicom.dcmread(dicom_dir / name) for name in REAL_FILES}


@pytest.fixture(scope="session")
def ort_engine(tiny_artifact: EngineArtifact) -> Engine:
    return create_engine(tiny_artifact, "onnxruntime", allow_test_artifact=True)


@pytest.fixture(scope="session")
def torch_engine(tiny_artifact: EngineArtifact) -> Engine:
    return create_engine(tiny_artifact, "torch", allow_test_artifact=True)
