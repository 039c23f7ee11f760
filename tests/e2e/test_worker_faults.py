"""Reporting workers through faults: a database that is down at start-up and again later (the
worker waits with backoff, logs once per outage and resumes), an engine slower than the lease
(the heartbeat keeps the study; ``status`` shows the lease beside the measured latency), and
several workers on the embedded SQLite database (supported on one machine)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomnode.cli import main
from dicomnode.db import StudyState, create_db_engine, create_session_factory
from dicomnode.server import ReceivingNode
from dicomnode.worker import ClaimedStudy, ReportEngine, ReportingWorker, wait_for_database
from engine.artifact import EngineArtifact
from engine.exceptions import StudyError
from engine.result import StudyReport
from engine.runtime import create_engine
from tests.node.conftest import renamed_copy, send_datasets

from .conftest import deliveries, destination, studies, wait_until
from .faults import TcpProxy, proxied_url

SIIM = "siim_chest_cr_jpeg_baseline.dcm"
UNDELIVERED = {
    "delivery": {"destinations": [destination("pacs", "PACS", 9)], "check_interval_seconds": 3600}
}


class SlowEngine:
    """The real engine, taking ``seconds`` longer per batch (a big model on a small CPU)."""

    def __init__(self, engine: ReportEngine, seconds: float) -> None:
        self.engine = engine
        self.seconds = seconds

    def report_studies(
        self, studies: Sequence[Sequence[Dataset]], *, return_exceptions: bool
    ) -> list[StudyReport | StudyError]:
        time.sleep(self.seconds)
        return self.engine.report_studies(studies, return_exceptions=return_exceptions)


class RecordingWorker(ReportingWorker):
    claimed_ids: list[int]

    def claim(self, limit: int) -> list[ClaimedStudy]:
        claimed = super().claim(limit)
        self.claimed_ids.extend(c.id for c in claimed)
        return claimed


def send_studies(node: ReceivingNode, dicom_dir: Path, count: int) -> None:
    copies = [renamed_copy(dicom_dir / SIIM, study_uid=generate_uid()) for _ in range(count)]
    assert send_datasets(node.port, copies) == [0] * count


def reported(node: ReceivingNode, count: int) -> bool:
    states = [s.state for s in studies(node.sessions).values()]
    return states.count(StudyState.REPORTED) == count


@pytest.mark.postgres
def test_a_worker_waits_out_database_outages_and_logs_each_once(
    make_node: Callable[..., ReceivingNode],
    postgres_url: str,
    report_engine: ReportEngine,
    dicom_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = make_node(node={"database_url": postgres_url}, **UNDELIVERED)
    host, port = node.db_engine.url.host or "127.0.0.1", node.db_engine.url.port or 5432
    proxy = TcpProxy(host, port)
    proxy.cut()  # the worker starts while its database is down
    db_engine = create_db_engine(proxied_url(postgres_url, proxy))
    config = node.config.model_copy(
        update={
            "worker": node.config.worker.model_copy(
                update={"db_retry_initial_seconds": 0.1, "db_retry_max_seconds": 0.4}
            )
        }
    )
    worker = ReportingWorker(config, create_session_factory(db_engine), report_engine)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            if wait_for_database(db_engine, worker.backoff):
                worker.run(poll_seconds=0.1)
        except BaseException as exc:  # the test fails on any escape
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        time.sleep(1.5)  # several retries at start-up
        assert thread.is_alive()
        proxy.restore()
        send_studies(node, dicom_dir, 1)
        wait_until(lambda: reported(node, 1), "the first study reported after the outage")

        proxy.cut()  # down again while the worker is polling
        send_studies(node, dicom_dir, 1)
        time.sleep(1.5)
        assert thread.is_alive() and not errors
        proxy.restore()
        wait_until(lambda: reported(node, 2), "the second study reported after the outage")
    finally:
        worker.stop.set()
        thread.join(30)
        proxy.close()
        db_engine.dispose()
    assert not errors, errors
    assert caplog.text.count("database unreachable") == 2  # once per outage, not per retry
    assert caplog.text.count("database reachable again") == 2


def test_a_slow_engine_keeps_its_study_and_status_shows_lease_against_latency(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = make_node(
        engine={"lease_seconds": 2.0, "heartbeat_seconds": 0.4, "batch_size": 1}, **UNDELIVERED
    )
    send_studies(node, dicom_dir, 1)
    wait_until(
        lambda: [s.state for s in studies(node.sessions).values()] == [StudyState.QUEUED],
        "study queued",
    )
    slow = RecordingWorker(
        node.config, node.sessions, SlowEngine(report_engine, 4.5), worker_id="slow"
    )
    eager = RecordingWorker(node.config, node.sessions, report_engine, worker_id="eager")
    slow.claimed_ids, eager.claimed_ids = [], []
    slow.register()
    done = threading.Thread(target=slow.process_once)
    done.start()
    try:
        # The slow worker holds the study first; only then is the other one let loose.
        wait_until(lambda: bool(slow.claimed_ids), "the slow worker claimed the study")
        # Meanwhile another worker keeps asking for work for more than two leases.
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline and done.is_alive():
            assert eager.process_once() == 0
            time.sleep(0.1)
    finally:
        done.join(30)
    (study,) = studies(node.sessions).values()
    assert study.state == StudyState.REPORTED and study.attempts == 0
    assert len(slow.claimed_ids) == 1 and eager.claimed_ids == []
    assert deliveries(node.sessions)
    assert "lost the lease" not in caplog.text

    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{node.data_dir}"\n', "utf-8")
    capsys.readouterr()
    assert main(["--config", str(config), "status", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)["workers"]
    assert record["id"] == "slow" and record["lease_seconds"] == 2.0
    assert record["max_batch_seconds"] >= 4.5 and record["max_batch_to_lease"] >= 2.0
    assert "slower than the lease" in record["note"]
    assert main(["--config", str(config), "status"]) == 0
    assert "lease 2 s" in capsys.readouterr().out


def test_several_workers_share_the_embedded_sqlite_database(
    make_node: Callable[..., ReceivingNode],
    tiny_artifact: EngineArtifact,
    dicom_dir: Path,
) -> None:
    # Supported on one machine: BEGIN IMMEDIATE serializes the claims of separate processes
    # (separate connections here), so every study is reported by exactly one worker.
    node = make_node(engine={"batch_size": 1}, **UNDELIVERED)
    send_studies(node, dicom_dir, 4)
    wait_until(
        lambda: [s.state for s in studies(node.sessions).values()] == [StudyState.QUEUED] * 4,
        "every study queued",
    )
    workers, engines = [], []
    for i in range(2):
        db_engine = create_db_engine(node.config.node.effective_database_url)
        engines.append(db_engine)
        worker = RecordingWorker(
            node.config,
            create_session_factory(db_engine),
            create_engine(tiny_artifact, "onnxruntime", allow_test_artifact=True),
            worker_id=f"sqlite-{i}-{os.getpid()}",
        )
        worker.claimed_ids = []
        workers.append(worker)
    threads = [threading.Thread(target=w.run, kwargs={"poll_seconds": 0.05}) for w in workers]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: reported(node, 4), "every study reported", timeout=60)
    finally:
        for w in workers:
            w.stop.set()
        for t in threads:
            t.join(30)
        for e in engines:
            e.dispose()
    claimed = [i for w in workers for i in w.claimed_ids]
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 4
    assert all(s.attempts == 0 for s in studies(node.sessions).values())
