"""Study state over time and across restarts; the schema Alembic builds matches the models."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from dicomnode.db import (
    Base,
    Instance,
    Study,
    StudyState,
    create_db_engine,
    create_session_factory,
    migrate_database,
    session_scope,
    utcnow,
)
from dicomnode.server import ReceivingNode
from dicomnode.studies import mark_stable_studies

from .conftest import renamed_copy, send_datasets


def _study_states(node: ReceivingNode) -> dict[str, str]:
    with session_scope(node.sessions) as session:
        return {s.study_instance_uid: s.state for s in session.scalars(select(Study)).all()}


def _wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_migrations_match_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate_database(url)
    migrate_database(url)  # idempotent
    engine = create_db_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"


def test_study_becomes_queued_after_quiet_window(start_node, dicom_dir: Path) -> None:
    node = start_node(stability={"window_seconds": 1.0, "check_interval_seconds": 0.1})
    study_uid = pydicom.uid.generate_uid()
    send_datasets(node.port, [renamed_copy(dicom_dir / "rg1_chest_cr_uncompressed.dcm", study_uid)])
    time.sleep(0.5)
    assert _study_states(node)[study_uid] == StudyState.RECEIVED
    # A second instance within the window restarts it.
    send_datasets(node.port, [renamed_copy(dicom_dir / "rg1_chest_cr_uncompressed.dcm", study_uid)])
    time.sleep(0.7)
    assert _study_states(node)[study_uid] == StudyState.RECEIVED
    _wait_until(lambda: _study_states(node)[study_uid] == StudyState.QUEUED)


def test_new_instance_reopens_a_queued_study(tmp_path: Path, dicom_dir: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'x.db'}")
    migrate_database(str(engine.url))
    sessions = create_session_factory(engine)
    from dicomnode.spool import StoredFile
    from dicomnode.studies import ReceivedInstance, record_instance

    def add(sop: str, at) -> None:
        with session_scope(sessions) as session:
            record_instance(
                session,
                ReceivedInstance(
                    "1.2.3",
                    "1.2.3.1",
                    sop,
                    "1.2.840.10008.5.1.4.1.1.1",
                    "1.2.840.10008.1.2.1",
                    "CR",
                ),
                StoredFile(f"instances/1.2.3/1.2.3.1/{sop}.dcm", 1, "0" * 64),
                "rule",
                now=at,
            )

    t0 = utcnow()
    add("1.2.3.1.1", t0)
    with session_scope(sessions) as session:
        assert (
            mark_stable_studies(session, timedelta(seconds=60), now=t0 + timedelta(seconds=30))
            == []
        )
        moved = mark_stable_studies(session, timedelta(seconds=60), now=t0 + timedelta(seconds=61))
    # Stable is a state of its own, committed, for one check interval: then queued.
    assert moved == [("1.2.3", StudyState.STABLE)]
    with session_scope(sessions) as session:
        assert session.scalars(select(Study)).one().state == StudyState.STABLE
        moved = mark_stable_studies(session, timedelta(seconds=60), now=t0 + timedelta(seconds=62))
    assert moved == [("1.2.3", StudyState.QUEUED)]
    add("1.2.3.1.2", t0 + timedelta(seconds=90))
    with session_scope(sessions) as session:
        study = session.scalars(select(Study)).one()
        assert (study.state, study.instance_count, study.revision) == (StudyState.RECEIVED, 2, 2)
    engine.dispose()


def test_state_survives_restart(start_node, tmp_path: Path, dicom_dir: Path) -> None:
    data_dir = tmp_path / "persist"
    slow = {"window_seconds": 1.0, "check_interval_seconds": 0.1}
    node = start_node(data_dir, stability={"window_seconds": 3600, "check_interval_seconds": 3600})
    study_uid = pydicom.uid.generate_uid()
    send_datasets(node.port, [renamed_copy(dicom_dir / "rg1_chest_cr_uncompressed.dcm", study_uid)])
    node.stop()
    # The window passed while the node was down: after restart the study is marked stable.
    time.sleep(1.1)
    node = start_node(data_dir, stability=slow)
    _wait_until(lambda: _study_states(node).get(study_uid) == StudyState.QUEUED)
    with session_scope(node.sessions) as session:
        (row,) = session.scalars(select(Instance)).all()
    assert node.spool.absolute(row.path).is_file()


def test_restart_indexes_a_file_stored_without_its_row(
    start_node, tmp_path: Path, dicom_dir: Path
) -> None:
    # Simulates a crash after the atomic rename and before the database commit.
    data_dir = tmp_path / "crash"
    node = start_node(data_dir)
    node.stop()
    ds = renamed_copy(dicom_dir / "highdicom_dx_canine_thorax.dcm")
    target = node.spool.root / node.spool.relative_instance_path(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    target.parent.mkdir(parents=True)
    ds.save_as(target, enforce_file_format=True)
    (target.parent / ".half-written.dcm.abc.partial").write_bytes(b"\x00" * 10)
    node = start_node(data_dir)
    with session_scope(node.sessions) as session:
        rows = session.scalars(select(Instance)).all()
    assert [r.sop_instance_uid for r in rows] == [ds.SOPInstanceUID]
    assert not list(node.spool.root.rglob("*.partial"))


@pytest.mark.postgres
def test_receiving_on_postgresql(start_node, postgres_url: str, dicom_dir: Path) -> None:
    node = start_node(
        node={"database_url": postgres_url},
        stability={"window_seconds": 0.3, "check_interval_seconds": 0.1},
    )
    with node.db_engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    study_uid = pydicom.uid.generate_uid()
    items = [
        renamed_copy(dicom_dir / "highdicom_dx_canine_thorax.dcm", study_uid) for _ in range(3)
    ]
    assert send_datasets(node.port, items + items[:1]) == [0, 0, 0, 0]
    _wait_until(lambda: _study_states(node).get(study_uid) == StudyState.QUEUED)
    with session_scope(node.sessions) as session:
        assert len(session.scalars(select(Instance)).all()) == 3


def test_retention_removes_only_finished_studies(start_node, dicom_dir: Path) -> None:
    from dicomnode.db import Delivery, DeliveryState
    from dicomnode.retention import purge_expired_studies

    node = start_node()
    uids = [pydicom.uid.generate_uid() for _ in range(4)]
    for uid in uids:
        send_datasets(node.port, [renamed_copy(dicom_dir / "highdicom_dx_canine_thorax.dcm", uid)])
    states = [StudyState.IGNORED, StudyState.REPORTED, StudyState.REPORTED, StudyState.FAILED]
    deliveries = [None, DeliveryState.DELIVERED, DeliveryState.DEAD, None]
    with session_scope(node.sessions) as session:
        for uid, state, delivery in zip(uids, states, deliveries, strict=True):
            study = session.scalars(select(Study).where(Study.study_instance_uid == uid)).one()
            study.state = state  # set up directly: the life-cycle path is tested elsewhere
            if delivery is not None:
                session.add(
                    Delivery(
                        study_id=study.id,
                        destination="pacs",
                        sop_instance_uid=pydicom.uid.generate_uid(),
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.88.11",
                        path=f"outputs/{uid}/x.dcm",
                        state=delivery,
                        attempts=1,
                    )
                )
    (node.data_dir / "outputs" / uids[1]).mkdir(parents=True)
    (node.data_dir / "outputs" / uids[1] / "x.dcm").write_bytes(b"report")
    keep = timedelta(days=7)
    assert purge_expired_studies(node.sessions, node.spool, node.data_dir, keep) == 0
    later = utcnow() + timedelta(days=8)
    assert purge_expired_studies(node.sessions, node.spool, node.data_dir, keep, now=later) == 2
    remaining = _study_states(node)
    assert set(remaining) == {uids[2], uids[3]}  # undelivered and failed studies stay
    assert not (node.data_dir / "outputs" / uids[1]).exists()
    with session_scope(node.sessions) as session:
        paths = set(session.scalars(select(Instance.path)).all())
    assert set(node.spool.iter_instance_files()) == paths
    assert len(paths) == 2


def test_a_newer_report_supersedes_pending_deliveries_of_the_older(start_node) -> None:
    from dicomnode.config import DestinationConfig
    from dicomnode.db import Delivery, DeliveryState
    from dicomnode.delivery import OutputObject, enqueue_deliveries, supersede_older

    node = start_node()
    pacs = DestinationConfig(name="pacs", ae_title="PACS", host="127.0.0.1", port=104)
    sr = "1.2.840.10008.5.1.4.1.1.88.11"
    old = [OutputObject("1.2.3.1", sr, "outputs/x/1.dcm"), OutputObject("1.2.3.2", sr, "o/2")]
    new = [OutputObject("1.2.3.1", sr, "outputs/x/1.dcm"), OutputObject("1.2.3.3", sr, "o/3")]
    with session_scope(node.sessions) as session:
        study = Study(study_instance_uid="1.2.3", state=StudyState.REPORTED)
        session.add(study)
        session.flush()
        assert enqueue_deliveries(session, study, old, [pacs]) == 2
        assert supersede_older(session, study, new) == 1
        assert enqueue_deliveries(session, study, new, [pacs]) == 1
    with session_scope(node.sessions) as session:
        states = {d.sop_instance_uid: d.state for d in session.scalars(select(Delivery))}
    assert states == {
        "1.2.3.1": DeliveryState.PENDING,
        "1.2.3.2": DeliveryState.SUPERSEDED,
        "1.2.3.3": DeliveryState.PENDING,
    }
