"""End-to-end fixtures: a real node on loopback, the tiny engine, real peers and DCMTK tools.

Everything runs for real: DCMTK ``storescu`` sends, the node's listener and APScheduler jobs
(stability, delivery) run on their short test intervals, :class:`ReportingWorker` runs the
tiny random-weight engine (``allow_test_artifact=True``), and deliveries go to Orthanc or
DCMTK ``storescp`` over loopback.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.db import Delivery, Study, session_scope
from dicomnode.server import ReceivingNode
from dicomnode.worker import ReportEngine, ReportingWorker
from engine.artifact import EngineArtifact
from tests.node.conftest import node_config
from tests.support.dicom_peers import require_tool

# storescu proposes only uncompressed syntaxes unless told; the flag per file's syntax.
STORESCU_FLAG = {
    ExplicitVRLittleEndian: [],
    JPEG2000Lossless: ["-xv"],
    JPEG2000: ["-xw"],
    JPEGBaseline8Bit: ["-xy"],
}

# Short intervals so a whole round trip takes a second or two.
FAST: dict[str, dict[str, Any]] = {
    "stability": {"window_seconds": 0.3, "check_interval_seconds": 0.1},
    "delivery": {
        "check_interval_seconds": 0.2,
        "backoff_initial_seconds": 0.2,
        "backoff_max_seconds": 1.0,
    },
}


def storescu(port: int, paths: list[Path], calling_ae: str = "MODALITY") -> None:
    """Send each file with DCMTK storescu, proposing the file's own transfer syntax."""
    tool = require_tool("storescu")
    for path in paths:
        ts = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        result = subprocess.run(
            [
                tool,
                *STORESCU_FLAG[ts],
                "-aet",
                calling_ae,
                "-aec",
                "CXRNODE",
                "127.0.0.1",
                str(port),
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def study_states(sessions: sessionmaker[Session]) -> dict[str, str]:
    with session_scope(sessions) as session:
        return {s.study_instance_uid: s.state for s in session.scalars(select(Study))}


def studies(sessions: sessionmaker[Session]) -> dict[str, Study]:
    with session_scope(sessions) as session:
        return {s.study_instance_uid: s for s in session.scalars(select(Study))}


def deliveries(sessions: sessionmaker[Session]) -> list[Delivery]:
    with session_scope(sessions) as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def all_in_state(sessions: sessionmaker[Session], state: str, count: int | None = None) -> bool:
    states = study_states(sessions)
    return (
        bool(states)
        and all(s == state for s in states.values())
        and (count is None or len(states) == count)
    )


def drain(worker: ReportingWorker) -> int:
    """Run ``process_once`` until the queue is empty; returns the studies handled."""
    handled = 0
    while (n := worker.process_once()) > 0:
        handled += n
    return handled


def output_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "outputs").rglob("*.dcm"))


@pytest.fixture(scope="session")
def report_engine(tiny_artifact: EngineArtifact) -> ReportEngine:
    """The tiny random-weight engine on ONNX Runtime, opted in as a test artifact."""
    from engine.runtime import create_engine

    return create_engine(tiny_artifact, "onnxruntime", allow_test_artifact=True)


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., ReceivingNode]]:
    """``make_node(data_dir=None, **sections)``: a started node with the FAST intervals
    (sections override them); every node is stopped at teardown."""
    started: list[ReceivingNode] = []

    def _make(data_dir: Path | None = None, **sections: dict[str, Any]) -> ReceivingNode:
        merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in FAST.items()}
        for key, value in sections.items():
            merged[key] = {**merged.get(key, {}), **value}
        node = ReceivingNode(node_config(data_dir or tmp_path / "data", **merged))
        node.start()
        started.append(node)
        return node

    yield _make
    for node in started:
        node.stop()


def destination(name: str, ae_title: str, port: int) -> dict[str, Any]:
    return {"name": name, "ae_title": ae_title, "host": "127.0.0.1", "port": port}
