"""Deliveries that fail: dead letters after max_attempts (shown by ``dicomnode status``, sent
again by ``dicomnode retry``) and refusals by the peer (kept with their status, not retried)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage

from dicomnode.cli import main
from dicomnode.db import DeliveryState, StudyState
from dicomnode.delivery import deliver_due
from dicomnode.server import ReceivingNode
from dicomnode.worker import ReportEngine, ReportingWorker
from tests.support.dicom_peers import free_port, start_status_scp, start_storescp

from .conftest import (
    all_in_state,
    deliveries,
    destination,
    drain,
    output_files,
    storescu,
    wait_until,
)

SMALL_FILE = "siim_chest_cr_jpeg_baseline.dcm"


def reported_node(
    make_node: Callable[..., ReceivingNode],
    engine: ReportEngine,
    dicom_dir: Path,
    **sections: dict[str, object],
) -> ReceivingNode:
    """A node that received one real study and reported it (deliveries queued)."""
    node = make_node(**sections)
    storescu(node.port, [dicom_dir / SMALL_FILE])
    wait_until(lambda: all_in_state(node.sessions, StudyState.QUEUED, 1), "study queued")
    assert drain(ReportingWorker(node.config, node.sessions, engine, worker_id="e2e")) == 1
    return node


def test_dead_letters_are_listed_then_retried_to_a_live_peer(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()  # nothing listens here yet
    node = reported_node(
        make_node,
        report_engine,
        dicom_dir,
        delivery={
            "destinations": [destination("archive", "STORESCP", port)],
            "max_attempts": 2,
            "backoff_initial_seconds": 0.1,
        },
    )
    objects = len(output_files(node.data_dir))
    wait_until(
        lambda: {r.state for r in deliveries(node.sessions)} == {DeliveryState.DEAD},
        "every delivery dead after two attempts",
    )
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{node.data_dir}"\n', "utf-8")
    capsys.readouterr()
    assert main(["--config", str(config), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["deliveries"] == {"dead": objects}
    assert len(status["failed_deliveries"]) == objects
    for item in status["failed_deliveries"]:
        assert item["state"] == "dead"
        assert item["attempts"] == 2
        assert item["destination"] == "archive"
        assert item["last_status"] is None
        assert "association not established" in item["last_error"]
    assert main(["--config", str(config), "status"]) == 0
    text = capsys.readouterr().out
    assert f"deliveries:  dead {objects}" in text
    first = status["failed_deliveries"][0]
    assert f"#{first['id']} dead to archive after 2 attempt(s)" in text
    # Dead rows are left alone by the node's delivery runs.
    time.sleep(0.5)
    assert all(r.attempts == 2 for r in deliveries(node.sessions))

    peer = start_storescp(tmp_path / "peer", port=port)
    try:
        assert main(["--config", str(config), "retry"]) == 0
        assert f"{objects} delivery(ies) queued again" in capsys.readouterr().out
        wait_until(
            lambda: {r.state for r in deliveries(node.sessions)} == {DeliveryState.DELIVERED},
            "the retried deliveries delivered",
        )
        received = {p.name.split(".", 1)[1] for p in peer.directory.iterdir()}
        assert received == {p.stem for p in output_files(node.data_dir)}
        assert all(r.attempts == 1 for r in deliveries(node.sessions))
        # Association reuse: every object of the run went over one association.
        assert peer.log().count("Association Acknowledged") == 1
    finally:
        peer.stop()
    assert main(["--config", str(config), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["deliveries"] == {"delivered": objects}
    assert status["failed_deliveries"] == []


def test_refusals_are_kept_with_their_status_and_not_retried(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    tmp_path: Path,
) -> None:
    # One peer answers every C-STORE with 0xA900 (data set does not match SOP class); the
    # other (DCMTK storescp) accepts only CT images, so no report object has a context.
    status_scp = start_status_scp(0xA900, "rechazado por la prueba")
    ct_only = start_storescp(tmp_path / "ct-only", accepted_sop_classes=[CTImageStorage])
    try:
        node = reported_node(
            make_node,
            report_engine,
            dicom_dir,
            delivery={
                "destinations": [
                    destination("strict", status_scp.ae_title, status_scp.port),
                    destination("ct-only", ct_only.ae_title, ct_only.port),
                ],
                "max_attempts": 5,
                "backoff_initial_seconds": 0.1,
            },
        )
        objects = len(output_files(node.data_dir))
        wait_until(
            lambda: {r.state for r in deliveries(node.sessions)} == {DeliveryState.REFUSED},
            "every delivery refused",
            timeout=10,
        )
        # Several more delivery runs: refused rows are not tried again.
        time.sleep(1.0)
        rows = deliveries(node.sessions)
        assert len(rows) == 2 * objects
        assert all(r.attempts == 1 for r in rows)
        strict = [r for r in rows if r.destination == "strict"]
        assert all(r.last_status == 0xA900 for r in strict)
        assert all("rechazado por la prueba" in (r.last_error or "") for r in strict)
        assert len(status_scp.received) == objects
        ct_rows = [r for r in rows if r.destination == "ct-only"]
        assert all(r.last_status is None and r.last_error for r in ct_rows)
        assert all("not accepted" in (r.last_error or "") for r in ct_rows)
    finally:
        status_scp.stop()
        ct_only.stop()


@pytest.fixture(autouse=True)
def _quiet_pynetdicom(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="pynetdicom")


def test_an_unreadable_object_does_not_hold_back_the_others(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    tmp_path: Path,
) -> None:
    peer = start_storescp(tmp_path / "peer")
    try:
        node = reported_node(
            make_node,
            report_engine,
            dicom_dir,
            delivery={
                "destinations": [destination("archive", peer.ae_title, peer.port)],
                "check_interval_seconds": 3600,  # runs by hand below
                "backoff_initial_seconds": 0.1,
                "max_attempts": 2,
            },
        )
        outputs = output_files(node.data_dir)
        assert len(outputs) >= 2
        lost, damaged = outputs[0], outputs[1]
        lost.unlink()  # e.g. removed by hand, or a disk error
        damaged.write_bytes(b"not DICOM at all")
        assert deliver_due(node.sessions, node.config, node.data_dir) == len(outputs)
        rows = {node.data_dir / r.path: r for r in deliveries(node.sessions)}
        for path in (lost, damaged):
            assert rows[path].state == DeliveryState.PENDING
            assert rows[path].attempts == 1
            assert str(path.name) in (rows[path].last_error or "")
        others = [r for p, r in rows.items() if p not in (lost, damaged)]
        assert all(r.state == DeliveryState.DELIVERED for r in others)
        received = {p.name.split(".", 1)[1] for p in peer.directory.iterdir()}
        assert received == {r.sop_instance_uid for r in others}

        time.sleep(0.2)
        deliver_due(node.sessions, node.config, node.data_dir)
        for path in (lost, damaged):
            assert rows[path].id in {
                r.id for r in deliveries(node.sessions) if r.state == DeliveryState.DEAD
            }
    finally:
        peer.stop()


def test_a_misconfigured_destination_does_not_block_the_others(
    make_node: Callable[..., ReceivingNode],
    report_engine: ReportEngine,
    dicom_dir: Path,
    tmp_path: Path,
) -> None:
    # The CA file of a TLS destination went missing after start-up (certificate rotation;
    # a file missing at start-up is a config error): that destination waits with the
    # reason; the archive beside it still gets every object.
    peer = start_storescp(tmp_path / "peer")
    ca_file = tmp_path / "gone" / "ca.pem"
    ca_file.parent.mkdir()
    ca_file.write_text("not yet rotated")
    try:
        broken = destination("tls-pacs", "PACS", 9)
        broken["tls"] = {"enabled": True, "ca_file": str(ca_file)}
        node = reported_node(
            make_node,
            report_engine,
            dicom_dir,
            delivery={
                "destinations": [broken, destination("archive", peer.ae_title, peer.port)],
                "check_interval_seconds": 3600,  # runs by hand below
            },
        )
        objects = len(output_files(node.data_dir))
        ca_file.unlink()
        assert deliver_due(node.sessions, node.config, node.data_dir) == 2 * objects
        rows = deliveries(node.sessions)
        archive = [r for r in rows if r.destination == "archive"]
        tls = [r for r in rows if r.destination == "tls-pacs"]
        assert len(archive) == len(tls) == objects
        assert all(r.state == DeliveryState.DELIVERED for r in archive)
        assert all(r.state == DeliveryState.PENDING and r.attempts == 1 for r in tls)
        assert all("ca_file" in (r.last_error or "") for r in tls)
    finally:
        peer.stop()
