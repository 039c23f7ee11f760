"""The listener over TLS (DICOM PS3.15 Annex B): real DCMTK and pynetdicom peers on loopback,
certificates from a throwaway CA made with the openssl command."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from dicomnode.config import ListenerTlsConfig, load_config
from dicomnode.db import Instance, session_scope
from dicomnode.exceptions import ConfigError, DicomNodeError
from dicomnode.server import ReceivingNode
from tests.support.dcmtk import dcmtk_tool
from tests.support.pki import Authority, Credential, create_authority

from .conftest import node_config, renamed_copy
from .test_hostile_peers import _closed_by_peer, fuzz

needs_dcmtk = pytest.mark.skipif(
    dcmtk_tool("echoscu") is None, reason="DCMTK (Debian package dcmtk) is not installed"
)
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


class Pki:
    def __init__(self, root: Path) -> None:
        self.authority: Authority = create_authority(root / "ca")
        self.ca = self.authority.ca.cert
        self.server: Credential = self.authority.issue("server", "server")
        self.client: Credential = self.authority.issue("modality", "client")
        # A client certificate from a CA the node does not trust.
        self.rogue: Credential = create_authority(root / "rogue", "Rogue CA").issue(
            "rogue", "client"
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_node(start_node: Callable[..., ReceivingNode], pki: Pki) -> Callable[..., ReceivingNode]:
    """``tls_node(tls={...}, node={...})``: a node with TLS on, the server certificate set."""

    def _start(tls: dict[str, Any] | None = None, **sections: dict[str, Any]) -> ReceivingNode:
        node = dict(sections.pop("node", {}))
        node["tls"] = {
            "enabled": True,
            "cert_file": str(pki.server.cert),
            "key_file": str(pki.server.key),
            **(tls or {}),
        }
        return start_node(node=node, **sections)

    return _start


def client_context(pki: Pki, cert: Credential | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


def tls_echo(port: int, context: ssl.SSLContext | None) -> bool:
    """A pynetdicom C-ECHO, over TLS with ``context`` (plain TCP with ``None``)."""
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = ae.connection_timeout = 10
    tls_args = (context, "localhost") if context is not None else None
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRNODE", tls_args=tls_args)
    if not assoc.is_established:
        return False
    ok = int(assoc.send_c_echo().Status) == 0
    assoc.release()
    return ok


def _instances(node: ReceivingNode) -> dict[str, Instance]:
    with session_scope(node.sessions) as session:
        return {i.sop_instance_uid: i for i in session.scalars(select(Instance)).all()}


def _wait_counts(node: ReceivingNode, expected: tuple[int, int], within: float = 5.0) -> None:
    assert node._server is not None
    deadline = time.monotonic() + within
    while node._server.guard.counts() != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node._server.guard.counts() == expected


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "dicomnode.guard" and r.levelno == logging.WARNING
    ]


# DCMTK ---------------------------------------------------------------------------------------
def _dcmtk(
    tool: str, port: int, *args: str, path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    files = [str(path)] if path is not None else []
    return subprocess.run(
        [
            str(dcmtk_tool(tool)),
            "-aet",
            "MODALITY",
            "-aec",
            "CXRNODE",
            *args,
            "127.0.0.1",
            str(port),
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_dcmtk
def test_dcmtk_echoscu_and_storescu_over_tls(
    tls_node: Callable[..., ReceivingNode], pki: Pki, dicom_dir: Path, tmp_path: Path
) -> None:
    node = tls_node({"ca_file": str(pki.ca), "require_client_cert": True})
    tls = ["+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca)]
    echo = _dcmtk("echoscu", node.port, *tls)
    assert echo.returncode == 0, echo.stderr
    ds = renamed_copy(dicom_dir / "rg1_chest_cr_uncompressed.dcm")
    path = tmp_path / "image.dcm"
    ds.save_as(path, enforce_file_format=True)
    store = _dcmtk("storescu", node.port, *tls, path=path)
    assert store.returncode == 0, store.stderr
    row = _instances(node)[str(ds.SOPInstanceUID)]
    assert row.calling_ae_title == "MODALITY"
    stored = pydicom.dcmread(node.spool.absolute(row.path))
    assert stored.PixelData == ds.PixelData
    # Without a client certificate (anonymous TLS), or speaking plain DICOM: refused.
    anonymous = _dcmtk("echoscu", node.port, "+tla", "+cf", str(pki.ca))
    plain = _dcmtk("echoscu", node.port)
    assert anonymous.returncode != 0 and plain.returncode != 0
    assert _dcmtk("echoscu", node.port, *tls).returncode == 0
    _wait_counts(node, (0, 0))


# pynetdicom ----------------------------------------------------------------------------------
def test_pynetdicom_client_echo_and_store_over_tls(
    tls_node: Callable[..., ReceivingNode], pki: Pki, dicom_dir: Path
) -> None:
    node = tls_node()
    assert tls_echo(node.port, client_context(pki))
    ds = renamed_copy(dicom_dir / "rg1_chest_cr_uncompressed.dcm")
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = ae.connection_timeout = 30
    assoc = ae.associate(
        "127.0.0.1", node.port, ae_title="CXRNODE", tls_args=(client_context(pki), "127.0.0.1")
    )
    assert assoc.is_established
    try:
        assert int(assoc.send_c_store(ds).Status) == 0
    finally:
        assoc.release()
    assert str(ds.SOPInstanceUID) in _instances(node)


def _echo_command() -> bytes:
    cmd = Dataset()
    cmd.AffectedSOPClassUID = VERIFICATION
    cmd.CommandField = 0x0030
    cmd.MessageID = 1
    cmd.CommandDataSetType = 0x0101
    rest = encode(cmd, True, True)
    assert rest is not None
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(rest)) + rest


def test_pdus_sharing_one_tls_record_are_all_read(
    tls_node: Callable[..., ReceivingNode], pki: Pki
) -> None:
    # One TLS record holding a C-ECHO and the A-RELEASE-RQ: once the first PDU is read, the
    # second is already decrypted inside the SSL object, where select() on the socket does not
    # see it. The node must still answer the release now, not when more bytes arrive.
    node = tls_node()
    peer = fuzz.RawPeer("127.0.0.1", node.port, timeout=5.0)
    peer.sock = client_context(pki).wrap_socket(peer.sock, server_hostname="localhost")
    try:
        assert peer.associate([(1, VERIFICATION, [IMPLICIT_LE])])
        echo = fuzz.p_data(fuzz.pdv(1, _echo_command(), command=True, last=True))
        release = struct.pack(">BBLL", 0x05, 0, 4, 0)
        assert peer.send(echo + release)
        assert peer.read_status() == 0
        reply = peer.read_pdu()
        assert reply is not None and reply[0] == 0x06, "A-RELEASE-RP not sent"
    finally:
        peer.close()


def test_guard_reads_the_decrypted_stream(
    tls_node: Callable[..., ReceivingNode], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # The PDU limits apply to what is inside TLS: an A-ASSOCIATE-RQ declaring 64 MiB is refused
    # as soon as its (decrypted) header arrives.
    node = tls_node()
    peer = fuzz.RawPeer("127.0.0.1", node.port, timeout=5.0)
    peer.sock = client_context(pki).wrap_socket(peer.sock, server_hostname="localhost")
    try:
        with caplog.at_level(logging.WARNING, logger="dicomnode.guard"):
            peer.send(struct.pack(">BBL", 0x01, 0, 64 << 20) + b"\x00" * 64)
            assert peer.read_pdu() is None, "the listener answered instead of closing"
    finally:
        peer.close()
    assert any("size limit of an association PDU" in m for m in _refusals(caplog))
    _wait_counts(node, (0, 0))
    assert tls_echo(node.port, client_context(pki))


# Refusals ------------------------------------------------------------------------------------
def test_plain_client_on_tls_port_is_refused_and_node_keeps_serving(
    tls_node: Callable[..., ReceivingNode], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    node = tls_node()
    with caplog.at_level(logging.WARNING, logger="dicomnode.guard"):
        assert not tls_echo(node.port, None)
        # A client that does not trust the node's certificate gives up on its side.
        untrusted = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        assert not tls_echo(node.port, untrusted)
        assert tls_echo(node.port, client_context(pki))
    # One line each, naming the peer and OpenSSL's reason.
    failed = [m for m in _refusals(caplog) if "TLS handshake failed" in m]
    assert len(failed) == 2, failed
    assert all(m.startswith("refused 127.0.0.1: TLS handshake failed (") for m in failed)
    assert "plain DICOM sender" in failed[0] and "does not trust the node" in failed[1]
    assert not [r for r in caplog.records if r.exc_info]
    _wait_counts(node, (0, 0))


def test_client_certificate_required(
    tls_node: Callable[..., ReceivingNode], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    node = tls_node({"ca_file": str(pki.ca), "require_client_cert": True})
    with caplog.at_level(logging.WARNING, logger="dicomnode.guard"):
        assert not tls_echo(node.port, client_context(pki))
        assert not tls_echo(node.port, client_context(pki, pki.rogue))
        assert tls_echo(node.port, client_context(pki, pki.client))
    refusals = _refusals(caplog)
    assert any("no client certificate" in m for m in refusals), refusals
    assert any("not trusted by node.tls.ca_file" in m for m in refusals), refusals
    _wait_counts(node, (0, 0))


def test_client_certificate_verified_when_offered(
    tls_node: Callable[..., ReceivingNode], pki: Pki
) -> None:
    node = tls_node({"ca_file": str(pki.ca)})
    assert tls_echo(node.port, client_context(pki))
    assert tls_echo(node.port, client_context(pki, pki.client))
    assert not tls_echo(node.port, client_context(pki, pki.rogue))


def test_allowlist_and_association_limits_apply_over_tls(
    tls_node: Callable[..., ReceivingNode], pki: Pki, tmp_path: Path
) -> None:
    fenced = tls_node(security={"allowed_networks": ["10.0.0.0/8"]})
    assert not tls_echo(fenced.port, client_context(pki))
    node = tls_node(node={"max_associations_per_peer": 1}, data_dir=tmp_path / "second")
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = 10
    held = ae.associate(
        "127.0.0.1", node.port, ae_title="CXRNODE", tls_args=(client_context(pki), "localhost")
    )
    try:
        assert held.is_established
        assert not tls_echo(node.port, client_context(pki))
    finally:
        held.release()
    assert tls_echo(node.port, client_context(pki))


# Stalled handshakes --------------------------------------------------------------------------
def test_stalled_tls_handshakes_do_not_block_others(
    tls_node: Callable[..., ReceivingNode], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # With the handshake in the acceptor thread (pynetdicom's ssl_context), one peer that
    # connects and never finishes it stalls every later connection.
    node = tls_node(node={"pending_timeout": 1.5, "max_pending_per_address": 8})
    silent = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(3)]
    # A TLS record header announcing a ClientHello that never comes.
    partial = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(3)]
    for s in partial:
        s.sendall(b"\x16\x03\x01\x02\x00\x01")
    try:
        with caplog.at_level(logging.WARNING, logger="dicomnode.guard"):
            assert tls_echo(node.port, client_context(pki)), "refused while handshakes stalled"
            assert all(_closed_by_peer(s, 5.0) for s in silent + partial)
        _wait_counts(node, (0, 0))
    finally:
        for s in silent + partial:
            s.close()
    dropped = [m for m in _refusals(caplog) if "node.pending_timeout" in m]
    assert dropped, _refusals(caplog)
    # The watchdog's drop is the one line: no second "handshake failed" for the same sockets.
    assert not [m for m in _refusals(caplog) if "TLS handshake failed" in m]
    assert tls_echo(node.port, client_context(pki))


# Configuration -------------------------------------------------------------------------------
def _load(tmp_path: Path, tls: str, **env: str) -> None:
    path = tmp_path / "dicomnode.toml"
    path.write_text(f"[node]\ndata_dir = '{tmp_path / 'data'}'\ntls = {{ {tls} }}\n")
    load_config(path, environ=env)


def test_tls_configuration_is_validated(tmp_path: Path, pki: Pki) -> None:
    cert, key = (f"'{p}'" for p in (pki.server.cert, pki.server.key))
    with pytest.raises(ConfigError, match=r"node\.tls: .*cert_file is required"):
        _load(tmp_path, "enabled = true")
    with pytest.raises(ConfigError, match=r"node\.tls: .*cert_file is required"):
        _load(tmp_path, f"key_file = {key}", DICOMNODE__NODE__TLS__ENABLED="true")
    with pytest.raises(ConfigError, match=r"require_client_cert needs ca_file"):
        _load(
            tmp_path,
            f"enabled = true, cert_file = {cert}, key_file = {key}, require_client_cert = true",
        )
    with pytest.raises(ConfigError, match=r"ca_file .*missing\.pem does not exist"):
        _load(
            tmp_path,
            f"enabled = true, cert_file = {cert}, key_file = {key}, "
            f"ca_file = '{tmp_path / 'missing.pem'}'",
        )
    # The client's key with the server's certificate: caught at load, not at the first peer.
    with pytest.raises(ConfigError, match=r"cannot load cert_file"):
        _load(tmp_path, f"enabled = true, cert_file = {cert}, key_file = '{pki.client.key}'")
    with pytest.raises(ConfigError, match=r"node\.tls\.bogus"):
        _load(tmp_path, "bogus = 1")
    # Disabled: nothing required; enabled and complete: a TLS 1.2+ server context.
    _load(tmp_path, "enabled = false, require_client_cert = true")
    tls = ListenerTlsConfig(
        enabled=True, cert_file=pki.server.cert, key_file=pki.server.key, ca_file=pki.ca,
        require_client_cert=True,
    )  # fmt: skip
    context = tls.create_context()
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_encrypted_key_is_refused_without_a_prompt(tmp_path: Path, pki: Pki) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(pki.server.key),
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            str(encrypted),
        ],
        check=True,
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    with pytest.raises(ConfigError, match="encrypted"):
        _load(
            tmp_path, f"enabled = true, cert_file = '{pki.server.cert}', key_file = '{encrypted}'"
        )


def test_tls_files_spoiled_after_the_check_stop_start_up(tmp_path: Path, pki: Pki) -> None:
    cert = tmp_path / "node.pem"
    cert.write_bytes(pki.server.cert.read_bytes())
    tls = {"enabled": True, "cert_file": str(cert), "key_file": str(pki.server.key)}
    config = node_config(tmp_path / "data", node={"tls": tls})
    cert.write_text("not a certificate\n")
    node = ReceivingNode(config)
    with pytest.raises(DicomNodeError, match=r"node\.tls .*Fix or replace them"):
        node.start()
    # Nothing half-started: the data directory is free for the next attempt.
    cert.write_bytes(pki.server.cert.read_bytes())
    node = ReceivingNode(config)
    node.start()
    try:
        assert tls_echo(node.port, client_context(pki))
    finally:
        node.stop()
