"""TLS contexts for DICOM secure transport (PS3.15 Annex B), for the sender and the listener.

One function builds both sides so they keep the same floor: TLS 1.2 or later and Python's
default cipher selection (BCP 195). Certificates and keys are PEM files.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def create_tls_context(
    *,
    server_side: bool,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    require_peer_cert: bool = True,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """An :class:`ssl.SSLContext` for one side of a DICOM association.

    Client (``server_side=False``): verifies the peer against ``ca_file`` (the system store
    when ``None``), checking its name unless ``check_hostname`` is false, and presents
    ``cert_file``/``key_file`` when given.

    Server: presents ``cert_file``/``key_file`` (required). With ``ca_file``, a client
    certificate is verified against it: required when ``require_peer_cert``, otherwise only
    checked when the client offers one. Without ``ca_file`` client certificates are not asked for.

    Raises :class:`ssl.SSLError` or :class:`OSError` when a file cannot be loaded, and
    :class:`ValueError` for an encrypted private key.
    """
    purpose = ssl.Purpose.CLIENT_AUTH if server_side else ssl.Purpose.SERVER_AUTH
    context = ssl.create_default_context(purpose, cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if server_side:
        if cert_file is None or key_file is None:
            raise ValueError("a server-side TLS context needs cert_file and key_file")
        if ca_file is None:
            context.verify_mode = ssl.CERT_NONE
        else:
            context.verify_mode = ssl.CERT_REQUIRED if require_peer_cert else ssl.CERT_OPTIONAL
    else:
        context.check_hostname = check_hostname
    if cert_file is not None and key_file is not None:
        # Never OpenSSL's terminal prompt: a service would hang on an encrypted key.
        context.load_cert_chain(str(cert_file), str(key_file), password=_no_password)
    return context


def _no_password() -> bytes:
    raise ValueError("the private key is encrypted; give an unencrypted key file (mode 0600)")
