"""SIGKILL the node while several associations are sending: nothing acknowledged is lost."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from sqlalchemy import select

from dicomnode.db import Instance, session_scope
from dicomnode.intake import split_file
from dicomnode.server import ReceivingNode
from tests.support.dicom_peers import free_port

from .conftest import node_config, renamed_copy


def _start_process(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dicomnode.cli", "--config", str(config_path), "serve"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "node exited during start-up"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("node did not start listening")


def _sender(
    port: int, datasets: list[pydicom.Dataset], acked: list[str], errors: list[str]
) -> None:
    ae = AE(ae_title="CRASHSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for ds in datasets[:1]:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRNODE")
    if not assoc.is_established:
        errors.append("not established")
        return
    for ds in datasets:
        try:
            status = assoc.send_c_store(ds)
        except Exception as exc:  # the node died mid-message
            errors.append(repr(exc))
            return
        if "Status" in status and status.Status == 0x0000:
            acked.append(str(ds.SOPInstanceUID))
        else:
            errors.append(f"no success for {ds.SOPInstanceUID}")
            return
    assoc.release()


@pytest.mark.slow
def test_sigkill_during_transfers_loses_no_acknowledged_instance(
    tmp_path: Path, dicom_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    config_path = tmp_path / "node.toml"
    config_path.write_text(
        f'[node]\nbind_address = "127.0.0.1"\nport = {port}\ndata_dir = "{data_dir}"\n'
        "min_free_disk_mb = 1\n"
    )
    sources = [
        dicom_dir / "rg1_chest_cr_uncompressed.dcm",
        dicom_dir / "highdicom_dx_canine_thorax.dcm",
    ]
    acked: list[str] = []
    errors: list[str] = []
    for round_, kill_after in enumerate((0.8, 1.5, 2.5)):
        proc = _start_process(config_path, tmp_path / "node.log")
        _wait_listening(port, proc)
        threads = []
        for i in range(4):
            study = pydicom.uid.generate_uid()
            batch = [renamed_copy(sources[i % 2], study) for _ in range(40)]
            t = threading.Thread(target=_sender, args=(port, batch, acked, errors))
            t.start()
            threads.append(t)
        time.sleep(kill_after)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for t in threads:
            t.join(30)
        assert errors, f"round {round_}: the kill came after every transfer finished"

    assert len(acked) > 10, f"too few instances acknowledged before the kills: {len(acked)}"
    node = ReceivingNode(node_config(data_dir))
    node.start()  # start-up reconciliation runs here
    try:
        with session_scope(node.sessions) as session:
            rows = {r.sop_instance_uid: r for r in session.scalars(select(Instance)).all()}
        missing = [uid for uid in acked if uid not in rows]
        assert not missing, f"{len(missing)} acknowledged instance(s) not in the database"
        for uid in acked:
            path = node.spool.absolute(rows[uid].path)
            data = path.read_bytes()
            body = split_file(data)[1]
            assert hashlib.sha256(body).hexdigest() == rows[uid].sha256, f"{uid} corrupted"
            ds = pydicom.dcmread(path)
            assert ds.SOPInstanceUID == uid
            assert len(ds.PixelData) > 0
        # Nothing half-written counts as stored, and every complete file has its row.
        assert not list(node.spool.root.rglob("*.partial"))
        on_disk = set(node.spool.iter_instance_files())
        assert on_disk == {r.path for r in rows.values()}
    finally:
        node.stop()
