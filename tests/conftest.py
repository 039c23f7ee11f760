"""Fixtures shared by every test package: paths to the real shared data and the repository,
a fresh PostgreSQL database, and the tiny random-weight engine artifact."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from engine.artifact import EngineArtifact

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (present in development and in CI)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}; tests that read real data need it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dicom_dir(shared_data: Path) -> Path:
    """The real chest radiographs as DICOM files."""
    return shared_data / "dicom"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (from ``tests/pg_start.sh``)."""
    base = os.environ.get("CXR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("CXR_TEST_POSTGRES_URL is unset; `source tests/pg_start.sh` starts a server")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cxr_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def tiny_artifact_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., EngineArtifact]:
    """``factory(seed=0, num_views=1)``: a tiny artifact, exported once per session."""
    base = tmp_path_factory.mktemp("engines")

    def factory(seed: int = 0, num_views: int = 1) -> EngineArtifact:
        # Imported here: collecting tests that never build an engine must not import torch.
        from tests.support.tiny_engine import session_tiny_artifact

        # The exporter logs every ONNX rewrite at INFO; keep test output readable.
        logging.getLogger("onnx_ir").setLevel(logging.WARNING)
        return session_tiny_artifact(base, seed, num_views)

    return factory


@pytest.fixture(scope="session")
def tiny_artifact(tiny_artifact_factory: Callable[..., EngineArtifact]) -> EngineArtifact:
    """The default tiny artifact (seed 0, one view); ``purpose="test"``, random weights."""
    return tiny_artifact_factory()
