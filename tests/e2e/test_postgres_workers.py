"""Several reporting workers and senders on one PostgreSQL queue (``FOR UPDATE SKIP LOCKED``):
every study is reported exactly once, every object sent once, and the leases end clean."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicomnode.db import DeliveryState, StudyState
from dicomnode.delivery import deliver_due
from dicomnode.server import ReceivingNode
from dicomnode.worker import ClaimedStudy, ReportingWorker
from engine.artifact import EngineArtifact
from engine.runtime import create_engine
from tests.node.conftest import renamed_copy, send_datasets
from tests.support.dicom_peers import StatusSCP, start_status_scp

from .conftest import deliveries, destination, output_files, studies, wait_until

STUDIES = 6
WORKERS = 3


class RecordingWorker(ReportingWorker):
    """A real worker that remembers which studies its claims returned."""

    claimed_ids: list[int]

    def claim(self, limit: int) -> list[ClaimedStudy]:
        claimed = super().claim(limit)
        self.claimed_ids.extend(c.id for c in claimed)
        return claimed


@pytest.mark.postgres
def test_three_workers_report_each_study_exactly_once(
    make_node: Callable[..., ReceivingNode],
    postgres_url: str,
    tiny_artifact: EngineArtifact,
    dicom_dir: Path,
) -> None:
    # A slow PACS widens the window in which two senders could pick the same row.
    pacs = start_status_scp(0x0000, delay=0.05)
    try:
        node = make_node(
            node={"database_url": postgres_url},
            engine={"batch_size": 1},
            delivery={
                "destinations": [destination("pacs", pacs.ae_title, pacs.port)],
                "check_interval_seconds": 3600,  # sent below by two concurrent senders
            },
        )
        # Sent below by two concurrent senders: the node's own delivery run, which a written
        # report would start at once, is taken out.
        node.scheduler.remove_job("delivery")
        report_concurrently(node, tiny_artifact, dicom_dir)
        deliver_concurrently(node, pacs)
    finally:
        pacs.stop()


def report_concurrently(node: ReceivingNode, artifact: EngineArtifact, dicom_dir: Path) -> None:
    copies = [
        renamed_copy(dicom_dir / "siim_chest_cr_jpeg_baseline.dcm", study_uid=generate_uid())
        for _ in range(STUDIES)
    ]
    assert send_datasets(node.port, copies) == [0] * STUDIES
    wait_until(
        lambda: [s.state for s in studies(node.sessions).values()]
        == [StudyState.QUEUED] * STUDIES,
        "every study queued",
    )
    workers = []
    for i in range(WORKERS):
        # One engine each, as separate worker processes would have.
        engine = create_engine(artifact, "onnxruntime", allow_test_artifact=True)
        worker = RecordingWorker(node.config, node.sessions, engine, worker_id=f"pg-{i}")
        worker.claimed_ids = []
        workers.append(worker)
    stop = threading.Event()
    threads = [
        threading.Thread(target=w.run, args=(stop,), kwargs={"poll_seconds": 0.05})
        for w in workers
    ]
    for t in threads:
        t.start()
    try:
        wait_until(
            lambda: all(
                s.state == StudyState.REPORTED for s in studies(node.sessions).values()
            ),
            "every study reported",
            timeout=60,
        )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads), "a worker did not stop"

    claims = Counter(i for w in workers for i in w.claimed_ids)
    found = studies(node.sessions)
    assert sorted(claims) == sorted(s.id for s in found.values())
    assert set(claims.values()) == {1}, "a study was claimed twice"
    assert sum(1 for w in workers if w.claimed_ids) >= 2, "the work was not shared"
    for study in found.values():
        assert study.attempts == 0  # reset by the result
        assert study.lease_owner is None and study.lease_expires_at is None
        assert study.error is None

    rows = deliveries(node.sessions)
    per_study = Counter(r.study_id for r in rows)
    assert len(rows) == len(output_files(node.data_dir))
    assert len({r.sop_instance_uid for r in rows}) == len(rows)
    assert set(per_study) == {s.id for s in found.values()}
    # Every study has the same kind of report (same image, same engine): equal object counts.
    assert len(set(per_study.values())) == 1


def deliver_concurrently(node: ReceivingNode, pacs: StatusSCP) -> None:
    """Two senders (as two node processes would run) share the delivery queue."""
    attempted: list[int] = []
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            while (n := deliver_due(node.sessions, node.config, node.data_dir, limit=4)) > 0:
                attempted.append(n)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    rows = deliveries(node.sessions)
    assert sum(attempted) == len(rows)
    assert all(r.state == DeliveryState.DELIVERED and r.attempts == 1 for r in rows)
    # Each object reached the PACS exactly once.
    assert Counter(pacs.received) == Counter({r.sop_instance_uid: 1 for r in rows})
