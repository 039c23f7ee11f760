"""Faults that must get the right status and lose no information: real associations, real
files, the node's real database."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import delete, select

from dicomnode.cli import main
from dicomnode.db import (
    Instance,
    InstanceVersion,
    QuarantineEntry,
    Study,
    StudyState,
    create_db_engine,
    create_session_factory,
    migrate_database,
    session_scope,
)
from dicomnode.delivery import DeliveryJob
from dicomnode.exceptions import DicomNodeError
from dicomnode.retention import RetentionJob
from dicomnode.scheduler import StabilityCheck
from dicomnode.server import ReceivingNode
from dicomnode.spool import Spool
from dicomnode.studies import routable_instance_paths

from .conftest import node_config, renamed_copy, send_datasets
from .test_hostile_peers import fuzz

CANINE = "highdicom_dx_canine_thorax.dcm"
UNCOMPRESSED = "rg1_chest_cr_uncompressed.dcm"
JPEG = "siim_chest_cr_jpeg_baseline.dcm"


def _quarantine(node: ReceivingNode) -> list[QuarantineEntry]:
    with session_scope(node.sessions) as session:
        return list(session.scalars(select(QuarantineEntry)).all())


def _studies(node: ReceivingNode) -> dict[str, Study]:
    with session_scope(node.sessions) as session:
        return {s.study_instance_uid: s for s in session.scalars(select(Study)).all()}


def _raw_store(node: ReceivingNode, path: Path, data: bytes) -> int | None:
    header = pydicom.dcmread(path, stop_before_pixels=True)
    peer = fuzz.RawPeer("127.0.0.1", node.port)
    assert peer.associate([(1, str(header.SOPClassUID), [str(header.file_meta.TransferSyntaxUID)])])
    status = peer.c_store(1, str(header.SOPClassUID), str(header.SOPInstanceUID), data)
    peer.release()
    return status


# --- Out of resources -------------------------------------------------------------------


def test_study_directory_that_cannot_be_created_answers_a701(node, dicom_dir: Path) -> None:
    ds = renamed_copy(dicom_dir / CANINE, study_uid=generate_uid())
    # A file where the study's directory must go: mkdir fails as on a read-only spool (the
    # tests run as root, so permissions cannot be used to make it fail).
    (node.spool.instances_dir / ds.StudyInstanceUID).write_bytes(b"")
    assert send_datasets(node.port, [ds]) == [0xA701]
    assert _studies(node) == {}


def test_inodes_below_the_floor_answer_a700(node, dicom_dir: Path, monkeypatch) -> None:
    # Exhausting a real file system's inodes is not possible here; the floor is what is tested.
    monkeypatch.setattr(node.spool, "free_inodes", lambda: 5)
    assert send_datasets(node.port, [renamed_copy(dicom_dir / CANINE)]) == [0xA700]
    assert node.spool.free_inodes() is not None


# --- Data sets that cannot be right ---------------------------------------------------------


def test_data_set_cut_inside_pixel_data_is_refused_and_not_queued(node, dicom_dir: Path) -> None:
    data, _ = fuzz.data_set_bytes(dicom_dir / UNCOMPRESSED)
    assert _raw_store(node, dicom_dir / UNCOMPRESSED, data[: len(data) - 100_000]) == 0xC210
    (entry,) = _quarantine(node)
    assert "truncated" in entry.reason
    assert _studies(node) == {}


def test_pixel_data_shorter_than_the_pixel_module_is_refused(node, dicom_dir: Path) -> None:
    ds = renamed_copy(dicom_dir / UNCOMPRESSED)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    assert send_datasets(node.port, [ds]) == [0xC210]
    assert "cut short" in _quarantine(node)[0].reason
    assert _studies(node) == {}


def test_encapsulated_frames_missing_are_refused(node, dicom_dir: Path) -> None:
    ds = renamed_copy(dicom_dir / JPEG)
    ds.NumberOfFrames = 3  # one fragment holds one frame at most
    assert send_datasets(node.port, [ds]) == [0xC210]
    assert "fragment" in _quarantine(node)[0].reason


@pytest.mark.parametrize(("keyword", "value"), [("Rows", 0), ("Columns", 0), ("BitsAllocated", 12)])
def test_impossible_pixel_module_is_refused(
    node, dicom_dir: Path, keyword: str, value: int
) -> None:
    ds = renamed_copy(dicom_dir / UNCOMPRESSED)
    setattr(ds, keyword, value)
    assert send_datasets(node.port, [ds]) == [0xA900]
    assert _studies(node) == {}
    assert len(_quarantine(node)) == 1


def test_random_bytes_and_truncated_headers_cannot_be_decoded(node, dicom_dir: Path) -> None:
    data, _ = fuzz.data_set_bytes(dicom_dir / CANINE)
    path = dicom_dir / CANINE
    assert _raw_store(node, path, os.urandom(3000)) == 0xC210
    assert _raw_store(node, path, data[:300]) == 0xC210
    reasons = [q.reason for q in _quarantine(node)]
    assert all(r.startswith("data set cannot be decoded") for r in reasons), reasons
    assert not any("StudyInstanceUID" in r for r in reasons)


def test_one_bad_uid_makes_one_log_line(node, dicom_dir: Path, caplog) -> None:
    ds = renamed_copy(dicom_dir / CANINE)
    ds.StudyInstanceUID = "1.2.3.../../etc"
    with caplog.at_level("INFO"):
        assert send_datasets(node.port, [ds]) == [0xC211]
    node_lines = [r for r in caplog.records if r.name.startswith(("dicomnode", "pydicom"))]
    assert len(node_lines) == 1, [r.getMessage() for r in node_lines]


# --- Crash recovery keeps the sender --------------------------------------------------------


def test_recovery_keeps_the_sender_of_an_uncommitted_file(start_node, tmp_path, dicom_dir) -> None:
    data_dir = tmp_path / "recover"
    node = start_node(data_dir)
    ds = renamed_copy(dicom_dir / CANINE, study_uid=generate_uid())
    assert send_datasets(node.port, [ds], calling_ae="ROOM1") == [0]
    node.stop()
    # As after a crash between the file's rename and the commit: the file, no rows.
    with session_scope(node.sessions) as session:
        session.execute(delete(Instance))
        session.execute(delete(Study))
    node = start_node(data_dir)
    study = _studies(node)[ds.StudyInstanceUID]
    assert (study.calling_ae_title, study.source_address) == ("ROOM1", "127.0.0.1")
    with session_scope(node.sessions) as session:
        (row,) = session.scalars(select(Instance)).all()
    assert row.calling_ae_title == "ROOM1"
    meta = pydicom.dcmread(node.spool.absolute(row.path), stop_before_pixels=True).file_meta
    assert meta.SendingApplicationEntityTitle == "ROOM1"


def test_recovery_quarantines_a_spool_file_intake_refuses(start_node, tmp_path, dicom_dir) -> None:
    data_dir = tmp_path / "recover-bad"
    node = start_node(data_dir)
    node.stop()
    ds = renamed_copy(dicom_dir / UNCOMPRESSED)
    ds.PixelData = ds.PixelData[:1000]
    target = node.spool.root / node.spool.relative_instance_path(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    target.parent.mkdir(parents=True)
    ds.save_as(target, enforce_file_format=True)
    node = start_node(data_dir)
    assert not target.exists()
    (entry,) = _quarantine(node)
    assert entry.status_code == 0xC210
    assert (node.spool.root / entry.path).is_file()
    assert _studies(node) == {}


# --- Corrected re-sends ---------------------------------------------------------------------


def _corrected(ds: pydicom.Dataset) -> pydicom.Dataset:
    fixed = copy.deepcopy(ds)
    fixed.PatientName = "Corrected^Name"
    return fixed


def test_corrected_resend_keeps_the_latest_and_reopens_the_study(
    start_node, dicom_dir: Path, tmp_path: Path, capsys
) -> None:
    node = start_node()
    first = renamed_copy(dicom_dir / CANINE, study_uid=generate_uid())
    assert send_datasets(node.port, [first]) == [0]
    with session_scope(node.sessions) as session:
        study = session.scalars(select(Study)).one()
        study.state = StudyState.REPORTED  # as if reported already
        old_path = session.scalars(select(Instance.path)).one()
        revision = study.revision
    assert send_datasets(node.port, [_corrected(first)], calling_ae="PACS") == [0]
    with session_scope(node.sessions) as session:
        row = session.scalars(select(Instance)).one()
        study = session.scalars(select(Study)).one()
        (version,) = session.scalars(select(InstanceVersion)).all()
    assert row.path != old_path
    assert pydicom.dcmread(node.spool.absolute(row.path)).PatientName == "Corrected^Name"
    assert node.spool.absolute(old_path).is_file()  # the older version kept for the audit
    assert (version.action, version.previous_path, version.new_path) == (
        "replaced",
        old_path,
        row.path,
    )
    assert study.state == StudyState.RECEIVED and study.revision == revision + 1
    assert study.instance_count == 1
    # The same corrected bytes again: a plain duplicate.
    assert send_datasets(node.port, [_corrected(first)]) == [0]
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{node.data_dir}"\n')
    assert main(["--config", str(config), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [c["action"] for c in status["changed_instances"]] == ["replaced"]
    assert main(["--config", str(config), "status"]) == 0
    assert "replaced" in capsys.readouterr().out
    # Restart: neither version is taken for an unindexed file.
    node.stop()
    node = start_node(node.data_dir)
    with session_scope(node.sessions) as session:
        assert len(session.scalars(select(InstanceVersion)).all()) == 1


@pytest.mark.parametrize(("policy", "status"), [("keep-first", 0x0000), ("refuse", 0xA910)])
def test_corrected_resend_policies(start_node, dicom_dir: Path, policy: str, status: int) -> None:
    node = start_node(storage={"changed_instance": policy})
    first = renamed_copy(dicom_dir / CANINE)
    assert send_datasets(node.port, [first]) == [0]
    assert send_datasets(node.port, [_corrected(first)]) == [status]
    with session_scope(node.sessions) as session:
        row = session.scalars(select(Instance)).one()
        (version,) = session.scalars(select(InstanceVersion)).all()
    assert pydicom.dcmread(node.spool.absolute(row.path)).PatientName == first.PatientName
    assert version.action == {"keep-first": "kept-first", "refuse": "refused"}[policy]


# --- Only routed instances reach the engine -------------------------------------------------


def test_only_instances_matching_a_rule_are_given_to_the_engine(node, dicom_dir: Path) -> None:
    from dicomnode.worker import ReportingWorker

    study_uid = generate_uid()
    hand = renamed_copy(dicom_dir / UNCOMPRESSED, study_uid)
    hand.BodyPartExamined = "HAND"
    chest = renamed_copy(dicom_dir / UNCOMPRESSED, study_uid)
    chest.BodyPartExamined = "CHEST"
    chest.ViewPosition = "LL"
    assert send_datasets(node.port, [hand, chest]) == [0, 0]
    with session_scope(node.sessions) as session:
        study = session.scalars(select(Study)).one()
        assert study.reportable
        paths = routable_instance_paths(session, study.id)
        study.state = StudyState.QUEUED
    assert [Path(p).stem for p in paths] == [chest.SOPInstanceUID]
    worker = ReportingWorker(node.config, node.sessions, engine=None)  # type: ignore[arg-type]
    (claimed,) = worker.claim(1)
    assert claimed.instance_paths == tuple(paths)


# --- Operations: status, lock, start-up errors ----------------------------------------------


def test_status_lists_quarantined_items(node, dicom_dir: Path, tmp_path: Path, capsys) -> None:
    ds = renamed_copy(dicom_dir / CANINE)
    del ds.PixelData
    assert send_datasets(node.port, [ds], calling_ae="ROOM9") == [0xC212]
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{node.data_dir}"\n')
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    (entry,) = _quarantine(node)
    assert entry.path in out and "no Pixel Data" in out and "ROOM9" in out and "0xC212" in out


def test_a_second_node_cannot_use_the_same_data_directory(node, tmp_path: Path) -> None:
    second = ReceivingNode(node.config)
    with pytest.raises(DicomNodeError, match="already running on the data directory"):
        second.start()
    second.db_engine.dispose()
    assert node.port  # the first keeps running


def _serve(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomnode.cli", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_read_only_database_stops_start_up_with_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    migrate_database(f"sqlite:///{db}")
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\nport = 0\nbind_address = "127.0.0.1"\n'
        f'database_url = "sqlite:///file:{db}?mode=ro&uri=true"\n'
    )
    result = _serve(config)
    assert result.returncode == 2
    assert "dicomnode: error:" in result.stderr and "not writable" in result.stderr
    assert "Traceback" not in result.stderr


def test_unusable_data_directory_stops_start_up_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{blocker / "data"}"\nport = 0\n')
    result = _serve(config)
    assert result.returncode == 2
    assert "dicomnode: error:" in result.stderr and "data_dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_documents_every_new_key() -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "dicomnode.toml").read_text()
    keys = ["max_associations_per_peer", "max_pending", "max_pending_per_address"]
    keys += ["pending_timeout", "max_dataset_mb", "min_free_inodes", "changed_instance"]
    for key in keys:
        assert key in text
    assert node_config(Path("/tmp/x")).storage.changed_instance == "keep-latest"


def test_retention_removes_the_older_versions_with_the_study(node, dicom_dir: Path) -> None:
    from datetime import timedelta

    from dicomnode.db import utcnow
    from dicomnode.retention import purge_expired_studies

    first = renamed_copy(dicom_dir / CANINE)
    assert send_datasets(node.port, [first]) == [0]
    assert send_datasets(node.port, [_corrected(first)]) == [0]
    with session_scope(node.sessions) as session:
        session.scalars(select(Study)).one().state = StudyState.IGNORED
    later = utcnow() + timedelta(days=30)
    assert (
        purge_expired_studies(
            node.sessions, node.spool, node.data_dir, timedelta(days=7), now=later
        )
        == 1
    )
    assert list(node.spool.iter_instance_files()) == []


def test_an_unforeseen_failure_answers_out_of_resources(node, dicom_dir: Path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("disk controller on fire")

    monkeypatch.setattr(node.spool, "store_instance", broken)
    # Not 0xC211 (which senders take as permanent): the sender retries later.
    assert send_datasets(node.port, [renamed_copy(dicom_dir / CANINE)]) == [0xA701]


def test_a_duplicate_fills_in_a_sender_the_database_lacks(node, dicom_dir: Path) -> None:
    ds = renamed_copy(dicom_dir / CANINE)
    assert send_datasets(node.port, [ds], calling_ae="ROOM1") == [0]
    with session_scope(node.sessions) as session:  # as indexed from an older file
        session.scalars(select(Instance)).one().calling_ae_title = None
        study = session.scalars(select(Study)).one()
        study.calling_ae_title = study.source_address = None
    assert send_datasets(node.port, [ds], calling_ae="ROOM1") == [0]
    study = next(iter(_studies(node).values()))
    assert (study.calling_ae_title, study.source_address) == ("ROOM1", "127.0.0.1")


def test_scheduled_jobs_log_a_database_outage_once_and_its_end(tmp_path: Path, caplog) -> None:
    """Stability, delivery and retention runs each log an outage once, not on every run."""
    url = f"sqlite:///{tmp_path / 'node.db'}"
    migrate_database(url)
    good = create_db_engine(url)
    gone = create_db_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'node.db'}")
    sessions = create_session_factory(gone)
    config = node_config(tmp_path)
    jobs = [
        StabilityCheck(sessions, 1.0),
        DeliveryJob(sessions, config, tmp_path),
        RetentionJob(sessions, Spool(tmp_path / "spool"), tmp_path, 30),
    ]
    with caplog.at_level(logging.DEBUG):
        for _ in range(4):
            for job in jobs:
                job()
        sessions.configure(bind=good)
        for job in jobs:
            job()
            job()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(";")[0] for r in errors] == [
        "database unreachable while checking study stability",
        "database unreachable while delivering reports",
        "database unreachable while removing expired studies",
    ]
    assert caplog.text.count("database reachable again") == 3
    good.dispose()
    gone.dispose()
