"""Engine test fixtures: engines on the session's tiny artifact (``tests/conftest.py``) and the
real DICOM files."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

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
