"""Each step wakes the next; the polls are only the safety net.

The polls here are a minute long and ran once at start-up, before any study arrived, so a
study reported and delivered well within that minute was carried by the wake-ups: the
study's own stability check at its window's end, then an in-process event or (workers on
other hosts) PostgreSQL LISTEN/NOTIFY, then the delivery run started at once. No timing is
asserted beyond "long before the next poll".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import Engine, text

from dicomnode.db import DeliveryState, StudyState, create_db_engine, create_session_factory
from dicomnode.scheduler import SerialJob
from dicomnode.server import ReceivingNode
from dicomnode.wakeups import QUEUED_CHANNEL
from dicomnode.worker import ReportEngine, ReportingWorker
from tests.node.conftest import node_config, renamed_copy, send_datasets
from tests.support.dicom_peers import start_status_scp

from .conftest import FAST, deliveries, destination, studies, wait_until

POLL = 60.0


def source_file(dicom_dir: Path) -> Path:
    return dicom_dir / "siim_chest_cr_jpeg_baseline.dcm"

SLOW_POLLS = {
    "stability": {"check_interval_seconds": POLL},
    "delivery": {"check_interval_seconds": POLL},
    "worker": {"poll_seconds": POLL},
}


def all_delivered(node: ReceivingNode) -> bool:
    rows = deliveries(node.sessions)
    return bool(rows) and all(r.state == DeliveryState.DELIVERED for r in rows)


def listening(db_engine: Engine) -> bool:
    with db_engine.connect() as conn:
        count = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                f"AND query = 'LISTEN {QUEUED_CHANNEL}'"
            )
        ).scalar()
    return bool(count)


def test_in_process_worker_is_woken_and_wakes_delivery(
    report_engine: ReportEngine, dicom_dir: Path, tmp_path: Path
) -> None:
    pacs = start_status_scp(0x0000)
    node = ReceivingNode(
        node_config(
            tmp_path / "data",
            stability={**FAST["stability"], **SLOW_POLLS["stability"]},
            delivery={
                **SLOW_POLLS["delivery"],
                "destinations": [destination("pacs", pacs.ae_title, pacs.port)],
            },
            worker=SLOW_POLLS["worker"],
        ),
        report_engine,
    )
    node.start()
    try:
        study = renamed_copy(source_file(dicom_dir), study_uid=generate_uid())
        assert send_datasets(node.port, [study]) == [0]
        wait_until(
            lambda: all_delivered(node), "the report written and delivered", timeout=POLL / 2
        )
        assert [s.state for s in studies(node.sessions).values()] == [StudyState.REPORTED]
    finally:
        node.stop()
        pacs.stop()
    assert node._worker_thread is not None and not node._worker_thread.is_alive()


def test_worker_on_another_host_is_woken_by_postgresql_notifications(
    make_node: Callable[..., ReceivingNode],
    postgres_url: str,
    report_engine: ReportEngine,
    dicom_dir: Path,
) -> None:
    pacs = start_status_scp(0x0000)
    node = make_node(
        node={"database_url": postgres_url},
        stability=SLOW_POLLS["stability"],
        delivery={
            **SLOW_POLLS["delivery"],
            "destinations": [destination("pacs", pacs.ae_title, pacs.port)],
        },
    )
    # The worker shares nothing with the node but the database, as on another machine.
    db_engine = create_db_engine(postgres_url)
    worker = ReportingWorker(
        node.config, create_session_factory(db_engine), report_engine, worker_id="remote"
    )
    thread = threading.Thread(target=worker.run, kwargs={"poll_seconds": POLL})
    thread.start()
    try:
        # Once its listener is connected, the worker idles in its minute-long poll.
        wait_until(lambda: listening(db_engine), "the worker listening")
        wait_until(lambda: not worker.wake.is_set(), "the worker idle")
        study = renamed_copy(source_file(dicom_dir), study_uid=generate_uid())
        assert send_datasets(node.port, [study]) == [0]
        wait_until(
            lambda: all_delivered(node),
            "the report written by the remote worker and delivered by the node",
            timeout=POLL / 2,
        )
    finally:
        worker.request_stop()
        thread.join(30)
        db_engine.dispose()
        pacs.stop()
    assert not thread.is_alive()


def test_a_serial_job_asked_to_run_during_a_run_runs_again_after_it() -> None:
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def work() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            started.set()
            release.wait(10)

    job = SerialJob(work, [])
    first = threading.Thread(target=job)
    first.start()
    assert started.wait(10)
    job.request_run()
    job()  # the tick that comes during the run returns at once ...
    assert runs == [0]
    release.set()
    first.join(10)
    assert runs == [0, 1]  # ... and the run asked for happens right after the first
