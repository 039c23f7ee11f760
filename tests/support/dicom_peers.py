"""Real DICOM tools the report tests judge with: dciodvfy, dsr2html, storescp, Orthanc.

Reusable by other test packages (end-to-end delivery tests): :func:`start_storescp` and
:func:`start_orthanc` start a real peer on free loopback ports in a temporary
directory and return a handle with ``ae_title``, ``host``, ``port`` (and
``rest_url`` for Orthanc) and a ``stop()`` method.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.dcmtk import dcmtk_tool

HOST = "127.0.0.1"


# pynetdicom installs scripts named like DCMTK's; these must resolve to DCMTK's own.
DCMTK_TOOLS = frozenset({"storescp", "storescu", "echoscu", "dsr2html", "dcmdump"})


def require_tool(name: str) -> str:
    """Path of a Debian tool, or skip the test naming the package to install."""
    path = dcmtk_tool(name) if name in DCMTK_TOOLS else shutil.which(name)
    if path is None:
        packages = {"dciodvfy": "dicom3tools", "Orthanc": "orthanc"}
        pytest.skip(f"{name} not installed (apt-get install {packages.get(name, 'dcmtk')})")
    return path


def dciodvfy_errors(path: Path) -> tuple[list[str], str]:
    """(error lines, full output) of ``dciodvfy`` on one file."""
    tool = require_tool("dciodvfy")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    return errors, output


def dsr2html(path: Path) -> str:
    """The HTML that DCMTK renders for an SR file (UTF-8)."""
    tool = require_tool("dsr2html")
    proc = subprocess.run([tool, "--charset-require", str(path)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    return proc.stdout.decode("utf-8")


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Block until something listens on ``port``; fail with the process output if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


@dataclass
class Peer:
    """A running DICOM peer: where to send to, and how to stop it."""

    ae_title: str
    host: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    rest_url: str | None = None
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path else ""


def storescp_config(directory: Path, sop_class_uids: Sequence[str]) -> Path:
    """A DCMTK association profile ``Only`` accepting just ``sop_class_uids`` (uncompressed)."""
    lines = [
        "[[TransferSyntaxes]]",
        "[Uncompressed]",
        "TransferSyntax1 = LocalEndianExplicit",
        "TransferSyntax2 = LittleEndianImplicit",
        "[[PresentationContexts]]",
        "[Only]",
        "PresentationContext1 = VerificationSOPClass\\Uncompressed",
    ]
    for i, uid in enumerate(sop_class_uids, start=2):
        lines.append(f"PresentationContext{i} = {uid}\\Uncompressed")
    lines += ["[[Profiles]]", "[Only]", "PresentationContexts = Only"]
    path = directory / "storescp.cfg"
    path.write_text("\n".join(lines) + "\n", "ascii")
    return path


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(key, certificate) PEM files for 127.0.0.1, made with the openssl command."""
    tool = shutil.which("openssl")
    if tool is None:
        pytest.skip("openssl not installed")
    key, cert = directory / "peer.key", directory / "peer.pem"
    subprocess.run(
        [
            tool,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


def start_storescp(
    directory: Path,
    *,
    ae_title: str = "STORESCP",
    accepted_sop_classes: Sequence[str] | None = None,
    tls: tuple[Path, Path] | None = None,
    extra_args: tuple[str, ...] = (),
    port: int | None = None,
) -> Peer:
    """DCMTK ``storescp`` writing what it receives to ``directory / "received"``.

    By default it accepts every storage SOP class in any transfer syntax; with
    ``accepted_sop_classes`` only those (uncompressed). ``tls`` is (key, certificate)
    to listen with mutual TLS (clients must present that certificate). ``port`` (default:
    a free one) lets a test bring a peer up where a destination was down. Runs verbose,
    so :meth:`Peer.log` shows each association.
    """
    tool = require_tool("storescp")
    out_dir = directory / "received"
    out_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [tool, "--verbose", "--aetitle", ae_title, "--output-directory", str(out_dir)]
    if accepted_sop_classes is None:
        args.append("--accept-all")
    else:
        args += ["--config-file", str(storescp_config(directory, accepted_sop_classes)), "Only"]
    if tls is not None:
        key, cert = tls
        # Mutual TLS: clients must present a certificate this same self-signed one trusts.
        args += ["--enable-tls", str(key), str(cert), "--null-passwd", "--profile-bcp195"]
        args += ["--add-cert-file", str(cert), "--require-peer-cert"]
    args += [*extra_args, str(port)]
    log_path = directory / "storescp.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    peer = Peer(ae_title, HOST, port, out_dir, proc, log_path=log_path)
    try:
        wait_for_port(port, proc)
    except RuntimeError as exc:
        peer.stop()
        raise RuntimeError(f"{exc}\n{peer.log()}") from exc
    return peer


def start_orthanc(
    directory: Path, *, ae_title: str = "ORTHANC", dicom_port: int | None = None, **config: Any
) -> Peer:
    """The Debian ``Orthanc`` server with a generated configuration on free ports.

    ``dicom_port`` (default: a free one) lets a test start Orthanc where a destination was
    down. Extra keyword arguments override configuration keys (e.g. ``DicomAlwaysAllowStore``).
    """
    tool = require_tool("Orthanc")
    storage = directory / "orthanc-storage"
    storage.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = dicom_port or free_port(), free_port()
    settings: dict[str, Any] = {
        "Name": "test-orthanc",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "HttpServerEnabled": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "Plugins": [],
        "StableAge": 1,
    }
    settings.update(config)
    config_path = directory / "orthanc.json"
    config_path.write_text(json.dumps(settings), "utf-8")
    log_path = directory / "orthanc.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([tool, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    peer = Peer(
        ae_title,
        HOST,
        dicom_port,
        storage,
        proc,
        rest_url=f"http://{HOST}:{http_port}",
        log_path=log_path,
    )
    try:
        wait_for_port(dicom_port, proc)
        wait_for_port(http_port, proc)
    except RuntimeError as exc:
        peer.stop()
        raise RuntimeError(f"{exc}\n{peer.log()}") from exc
    return peer


def orthanc_get(peer: Peer, path: str) -> Any:
    """GET a JSON resource from Orthanc's REST API."""
    assert peer.rest_url is not None
    with urllib.request.urlopen(peer.rest_url + path, timeout=10) as response:
        return json.loads(response.read().decode("utf-8"))


@dataclass
class StatusSCP:
    """An in-process pynetdicom Storage SCP that answers every C-STORE with one status.

    For the statuses no stock server can be told to send (warnings, failures with
    an Error Comment); it is a real network peer on loopback all the same.
    """

    ae_title: str
    host: str
    port: int
    server: Any
    received: list[str]

    def stop(self) -> None:
        self.server.shutdown()


def start_status_scp(
    status: int, error_comment: str | None = None, *, delay: float = 0.0
) -> StatusSCP:
    """Start a :class:`StatusSCP` answering ``status`` (and ``error_comment``) after ``delay`` s."""
    from pydicom import Dataset
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    received: list[str] = []

    def on_store(event: Any) -> Dataset:
        received.append(str(event.request.AffectedSOPInstanceUID))
        if delay:
            time.sleep(delay)
        reply = Dataset()
        reply.Status = status
        if error_comment is not None:
            reply.ErrorComment = error_comment
        return reply

    ae = AE(ae_title="STATUSSCP")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server((HOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    return StatusSCP("STATUSSCP", HOST, port, server, received)
