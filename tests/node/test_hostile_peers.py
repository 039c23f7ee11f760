"""The listener against hostile or broken peers, on loopback, bounded in count and time."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from types import ModuleType

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from dicomnode.db import Instance, session_scope
from dicomnode.guard import RefusalLog
from dicomnode.server import ReceivingNode
from tests.support.dcmtk import dcmtk_tool

from .conftest import renamed_copy, send_datasets

REPO = Path(__file__).resolve().parents[2]


def _fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fuzz_listener", REPO / "scripts/fuzz_listener.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz = _fuzz()


def _echo(port: int, calling: str = "LEGIT") -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRNODE")
    if not assoc.is_established:
        return False
    ok = int(assoc.send_c_echo().Status) == 0
    assoc.release()
    return ok


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the node closes ``sock`` within ``within`` seconds (we keep sending nothing)."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def _rq_prefix() -> bytes:
    rq = fuzz.associate_rq("SLOW", "CXRNODE", [(1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"])])
    return bytes(rq)


def test_slow_senders_do_not_lock_out_a_modality(start_node) -> None:
    # More trickling connections than association slots: before the guard, every slot stayed
    # taken for as long as they trickled and a modality got "local limit exceeded".
    node = start_node(
        node={
            "max_associations": 2,
            "pending_timeout": 1.5,
            "max_pending": 16,
            "max_pending_per_address": 8,
        }
    )
    rq = _rq_prefix()
    slow = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(4)]
    stop = threading.Event()

    def trickle() -> None:
        for i in range(6, len(rq)):
            if stop.wait(0.2):
                return
            for s in slow:
                with contextlib.suppress(OSError):
                    s.send(rq[i : i + 1])

    for s in slow:
        s.send(rq[:6])
    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(0.3)
        assert _echo(node.port), "a legitimate association was refused while peers trickled"
        # However slowly they trickle, they are dropped after node.pending_timeout.
        assert all(_closed_by_peer(s, 4.0) for s in slow)
    finally:
        stop.set()
        thread.join(5)
        for s in slow:
            s.close()
    assert _echo(node.port)


def test_idle_connections_are_capped_per_address_and_refusals_logged_once(
    start_node, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node(
        node={"max_associations": 2, "max_pending_per_address": 3, "pending_timeout": 30}
    )
    with caplog.at_level(logging.WARNING, logger="dicomnode.guard"):
        idle = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(2)]
        time.sleep(0.2)
        # Idle connections hold no association slot: the modality gets in (third pending).
        assert _echo(node.port)
        time.sleep(0.2)
        extra = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(4)]
        # One more fits under the per-address cap; the rest are closed at once, not after a
        # timeout.
        closed = [_closed_by_peer(s, 1.0) for s in extra]
        assert closed.count(True) == 3, closed
        assert not any(_closed_by_peer(s, 0.1) for s in idle)
    for s in idle + extra:
        s.close()
    refusals = [r for r in caplog.records if "max_pending_per_address" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]


def test_health_checks_that_connect_and_close_leave_no_slot_taken(start_node) -> None:
    node = start_node(node={"max_associations": 1, "max_pending_per_address": 2})
    for _ in range(10):
        socket.create_connection(("127.0.0.1", node.port)).close()
    time.sleep(0.3)
    assert node._server is not None
    assert node._server.guard.counts() == (0, 0)
    assert _echo(node.port)


def test_oversized_association_pdu_is_refused_at_once(start_node) -> None:
    node = start_node(
        node={"maximum_pdu_size": 16384}, security={"allowed_calling_ae_titles": ["PACS"]}
    )
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0))
    sent, chunk = 0, b"\x00" * 65536
    try:
        while sent < 128 << 20:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    sock.close()
    # Before: the whole stream was buffered (hundreds of MiB a second) before the allowlists.
    # Now the connection is closed on the header; what got through sat in kernel socket
    # buffers (a few MiB here; at most tcp_rmem + tcp_wmem maxima anywhere).
    assert sent < 48 << 20, f"{sent >> 20} MiB accepted after a 4 GB A-ASSOCIATE-RQ header"
    assert _echo(node.port, "PACS")


def test_p_data_above_the_advertised_maximum_is_refused(start_node, dicom_dir: Path) -> None:
    node = start_node(node={"maximum_pdu_size": 16384})
    data, header = fuzz.data_set_bytes(dicom_dir / "highdicom_dx_canine_thorax.dcm")
    ts = str(
        pydicom.dcmread(dicom_dir / "highdicom_dx_canine_thorax.dcm").file_meta.TransferSyntaxUID
    )
    peer = fuzz.RawPeer("127.0.0.1", node.port)
    assert peer.associate([(1, str(header.SOPClassUID), [ts])])
    assert peer.max_pdu == 16384
    # One P-DATA-TF PDU of 64 KiB: four times what the node advertised.
    status = peer.c_store(
        1, str(header.SOPClassUID), str(header.SOPInstanceUID), data, fragment=65536
    )
    peer.close()
    assert status is None, f"a PDU above maximum_pdu_size was accepted (0x{status:04X})"
    with session_scope(node.sessions) as session:
        assert session.scalars(select(Instance)).all() == []
    # Within the maximum, the same sender is served.
    peer = fuzz.RawPeer("127.0.0.1", node.port)
    assert peer.associate([(1, str(header.SOPClassUID), [ts])])
    assert peer.c_store(1, str(header.SOPClassUID), str(header.SOPInstanceUID), data) == 0
    peer.release()


def test_data_set_above_max_dataset_mb_aborts(start_node, dicom_dir: Path) -> None:
    node = start_node(node={"max_dataset_mb": 1})
    big = renamed_copy(dicom_dir / "rg1_chest_cr_uncompressed.dcm")  # about 7 MiB
    ae = AE(ae_title="BIG")
    ae.add_requested_context(big.SOPClassUID, big.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="CXRNODE")
    assert assoc.is_established
    status = assoc.send_c_store(big)
    assoc.release()
    assert "Status" not in status, "a data set above node.max_dataset_mb was accepted"
    small = renamed_copy(dicom_dir / "highdicom_dx_canine_thorax.dcm")
    assert send_datasets(node.port, [small]) == [0]


def test_associations_per_peer_are_capped(start_node) -> None:
    node = start_node(node={"max_associations": 8, "max_associations_per_peer": 2})
    ae = AE(ae_title="MANY")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", node.port, ae_title="CXRNODE") for _ in range(2)]
    assert all(a.is_established for a in held)
    third = ae.associate("127.0.0.1", node.port, ae_title="CXRNODE")
    assert third.is_rejected
    rj = third.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)  # local limit
    for a in held:
        a.release()
    time.sleep(0.3)
    assert _echo(node.port)


def test_refusal_log_reports_each_peer_and_reason_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RefusalLog(interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="dicomnode.guard"):
        assert log.warning("10.0.0.1", "too many")
        assert not log.warning("10.0.0.1", "too many")
        assert log.warning("10.0.0.2", "too many")
        assert log.warning("10.0.0.1", "other reason")
        now[0] = 61
        assert log.warning("10.0.0.1", "too many")
    assert "1 more since the last report" in caplog.records[-1].getMessage()


def test_connection_reset_logs_one_line_without_traceback(
    start_node, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node()
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", node.port))
            sock.send(_rq_prefix()[:40])
            # SO_LINGER 0: close sends a TCP reset.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        time.sleep(0.5)
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert _echo(node.port)


def test_fuzzing_keeps_the_listener_up_and_loses_nothing(start_node, dicom_dir: Path) -> None:
    node = start_node(node={"max_dataset_mb": 64, "pending_timeout": 2})
    acknowledged = renamed_copy(dicom_dir / "highdicom_dx_canine_thorax.dcm")
    assert send_datasets(node.port, [acknowledged]) == [0]
    files = [
        dicom_dir / n for n in ("highdicom_dx_canine_thorax.dcm", "siim_chest_cr_jpeg_baseline.dcm")
    ]
    outcomes, legit = fuzz.run_fuzz("127.0.0.1", node.port, files, seconds=8, seed=11, every=5)
    assert sum(sum(c.values()) for c in outcomes.values()) > 20
    assert legit and all(s == 0 for s in legit), legit
    assert outcomes["oversized PDU length"].get("buffered 16 MiB", 0) == 0
    with session_scope(node.sessions) as session:
        row = session.scalars(
            select(Instance).where(Instance.sop_instance_uid == acknowledged.SOPInstanceUID)
        ).one()
    assert node.spool.absolute(row.path).is_file()
    assert _echo(node.port)


def test_fuzz_script_runs_from_the_command_line(node: ReceivingNode, dicom_dir: Path) -> None:
    import sys

    script = str(REPO / "scripts/fuzz_listener.py")
    command = [sys.executable, script, "127.0.0.1", str(node.port), "--seconds", "2"]
    command += ["--files", str(dicom_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "legitimate stores:" in result.stdout


@pytest.mark.skipif(dcmtk_tool("storescu") is None, reason="DCMTK (Debian dcmtk) is not installed")
@pytest.mark.parametrize("max_pdu", [4096, 16384])
def test_dcmtk_sender_within_the_enforced_maximum_is_served(
    start_node, dicom_dir: Path, max_pdu: int
) -> None:
    # The enforcement must not refuse a conformant sender: storescu splits at the maximum.
    node = start_node(node={"maximum_pdu_size": max_pdu})
    path = dicom_dir / "rg1_chest_cr_uncompressed.dcm"
    result = subprocess.run(
        [str(dcmtk_tool("storescu")), "-aec", "CXRNODE", "127.0.0.1", str(node.port), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with session_scope(node.sessions) as session:
        assert len(session.scalars(select(Instance)).all()) == 1
