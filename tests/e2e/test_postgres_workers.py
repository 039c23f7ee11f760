"""Several reporting workers on one PostgreSQL queue (``FOR UPDATE SKIP LOCKED``): every study
is reported exactly once, and the lease bookkeeping ends clean."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from node.conftest import renamed_copy, send_datasets
from pydicom.uid import generate_uid

from dicomnode.db import StudyState
from dicomnode.server import ReceivingNode
from dicomnode.worker import ClaimedStudy, ReportingWorker
from engine.artifact import EngineArtifact
from engine.runtime import create_engine

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
    node = make_node(
        node={"database_url": postgres_url},
        engine={"batch_size": 1},
        delivery={
            "destinations": [destination("pacs", "PACS", 9)],
            "check_interval_seconds": 3600,  # queued, never sent: only the rows are counted
        },
    )
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
        engine = create_engine(tiny_artifact, "onnxruntime", allow_test_artifact=True)
        worker = RecordingWorker(node.config, node.sessions, engine, worker_id=f"pg-{i}")
        worker.claimed_ids = []
        workers.append(worker)
    start = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def run(worker: RecordingWorker) -> None:
        try:
            start.wait(10)
            while worker.process_once() > 0:
                pass
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors

    claims = Counter(i for w in workers for i in w.claimed_ids)
    found = studies(node.sessions)
    assert sorted(claims) == sorted(s.id for s in found.values())
    assert set(claims.values()) == {1}, "a study was claimed twice"
    assert sum(1 for w in workers if w.claimed_ids) >= 2, "the work was not shared"
    for study in found.values():
        assert study.state == StudyState.REPORTED
        assert study.attempts == 0  # reset by the result
        assert study.lease_owner is None and study.lease_expires_at is None
        assert study.error is None

    rows = deliveries(node.sessions)
    per_study = Counter(r.study_id for r in rows)
    outputs = output_files(node.data_dir)
    assert len(rows) == len(outputs)
    assert len({r.sop_instance_uid for r in rows}) == len(rows)
    assert set(per_study) == {s.id for s in found.values()}
    # Every study has the same kind of report (same image, same engine): equal object counts.
    assert len(set(per_study.values())) == 1
