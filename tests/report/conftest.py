"""Fixtures for the report-object and delivery tests: real source headers, engine results,
and real DICOM peers (storescp, Orthanc) from :mod:`support.dicom_peers`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset

from tests.support.dicom_peers import Peer, start_orthanc, start_storescp


def read_header(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


@pytest.fixture(scope="session")
def rg1_sources(dicom_dir: Path) -> list[Dataset]:
    """Three CR images (one study): uncompressed, JPEG 2000 lossless and lossy."""
    return [read_header(p) for p in sorted(dicom_dir.glob("rg1_*.dcm"))]


@pytest.fixture(scope="session")
def siim_sources(dicom_dir: Path) -> list[Dataset]:
    """Secondary Capture with Modality CR: two files that share one SOP Instance UID."""
    return [read_header(p) for p in sorted(dicom_dir.glob("siim_*.dcm"))]


@pytest.fixture(scope="session")
def dx_sources(dicom_dir: Path) -> list[Dataset]:
    """A DX lateral thorax of a dog: a real DX object with all projection descriptors."""
    return [read_header(dicom_dir / "highdicom_dx_canine_thorax.dcm")]


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Peer]:
    peer = start_storescp(tmp_path)
    yield peer
    peer.stop()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Peer]:
    peer = start_orthanc(tmp_path)
    yield peer
    peer.stop()
