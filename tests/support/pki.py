"""A throwaway PKI for TLS tests, made with the ``openssl`` command: a CA, a server
certificate for 127.0.0.1/localhost and client certificates (PEM, unencrypted keys)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_LEAF = {
    "server": "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    "client": "extendedKeyUsage=clientAuth\n",
}


@dataclass(frozen=True)
class Credential:
    key: Path
    cert: Path


@dataclass(frozen=True)
class Authority:
    """A CA and what it signed."""

    ca: Credential

    def issue(self, name: str, kind: str) -> Credential:
        return _issue(self.ca, name, kind)


def _openssl(*args: str) -> None:
    tool = shutil.which("openssl")
    if tool is None:
        pytest.skip("openssl not installed (apt-get install openssl)")
    subprocess.run([tool, *args], check=True, capture_output=True, timeout=60)


def create_authority(directory: Path, name: str = "Test CA") -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / "ca.key", directory / "ca.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/O=dicomnode tests/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return Authority(Credential(key, cert))


def _issue(ca: Credential, name: str, kind: str) -> Credential:
    directory = ca.cert.parent
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + _LEAF[kind]
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/O=dicomnode tests/CN={name}",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return Credential(key, cert)
