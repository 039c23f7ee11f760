"""Fixtures for the receiving node: a node on a free loopback port with its own data directory."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from dicomnode.config import Config
from dicomnode.server import ReceivingNode

REAL_FILES = (
    "rg1_chest_cr_uncompressed.dcm",
    "rg1_chest_cr_j2k_lossless.dcm",
    "rg1_chest_cr_j2k_lossy.dcm",
    "siim_chest_cr_jpeg_baseline.dcm",
    "siim_chest_cr_monochrome1.dcm",
    "highdicom_dx_canine_thorax.dcm",
)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def node_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    """A config on loopback, any free port, with ``data_dir``; sections override the defaults."""
    base: dict[str, Any] = {
        "node": {
            "ae_title": "CXRNODE",
            "bind_address": "127.0.0.1",
            "port": 0,
            "data_dir": str(data_dir),
            "min_free_disk_mb": 1,
        },
        "stability": {"window_seconds": 3600, "check_interval_seconds": 3600},
    }
    return Config.model_validate(_merge(base, sections))


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., ReceivingNode]]:
    """Start a node (``start_node(**sections)``); every node started is stopped at teardown."""
    started: list[ReceivingNode] = []

    def _start(data_dir: Path | None = None, **sections: dict[str, Any]) -> ReceivingNode:
        node = ReceivingNode(node_config(data_dir or tmp_path / "data", **sections))
        node.start()
        started.append(node)
        return node

    yield _start
    for node in started:
        node.stop()


@pytest.fixture
def node(start_node: Callable[..., ReceivingNode]) -> ReceivingNode:
    return start_node()


def send_datasets(
    port: int,
    items: list[Dataset | Path],
    calling_ae: str = "TESTSCU",
    called_ae: str = "CXRNODE",
) -> list[int]:
    """C-STORE each item (a Dataset, or a file sent as it is) in one association.

    Returns the status of each; raises AssertionError when the association is refused.
    """
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    seen: set[tuple[str, str]] = set()
    for item in items:
        if isinstance(item, Dataset):
            key = (str(item.SOPClassUID), str(item.file_meta.TransferSyntaxUID))
        else:  # only the meta: the data set of a deliberately broken file may not parse
            meta = pydicom.filereader.read_file_meta_info(item)
            key = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        if key not in seen:
            seen.add(key)
            ae.add_requested_context(*key)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    assert assoc.is_established, "association was not accepted"
    statuses = []
    try:
        for item in items:
            status = assoc.send_c_store(item if isinstance(item, Dataset) else str(item))
            statuses.append(int(status.Status) if "Status" in status else -1)
    finally:
        assoc.release()
    return statuses


def renamed_copy(path: Path, study_uid: str | None = None) -> Dataset:
    """The file read in full with fresh Series/SOP (and optionally Study) UIDs."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    if study_uid is not None:
        ds.StudyInstanceUID = study_uid
    return ds
