"""Connection limits an unauthenticated peer cannot get around.

pynetdicom counts a TCP connection as an association from ``accept()`` on, applies
``acse_timeout`` only between complete PDUs, reads a PDU of any declared length into memory
before the allowlists run, and does not enforce the Maximum Length it advertises. So the
listener guards each accepted socket itself, through two ordinary ``socketserver`` hooks of
:class:`~pynetdicom.transport.ThreadedAssociationServer` (``get_request`` wraps the socket,
``verify_request`` admits it) and one event handler (``EVT_REQUESTED``):

- the network allowlist is checked at TCP accept;
- *pending* connections (accepted, A-ASSOCIATE-RQ not yet complete) are counted apart from
  associations, capped in total and per address, and dropped by a watchdog when they have not
  completed negotiation within ``node.pending_timeout`` seconds, however they trickle;
- association slots (``node.max_associations``, ``node.max_associations_per_peer``) are taken
  only when the A-ASSOCIATE-RQ is complete;
- every byte read is parsed as a PDU stream: a control PDU (A-ASSOCIATE-RQ, release, abort)
  above :data:`MAX_CONTROL_PDU_BYTES`, a P-DATA-TF PDU above ``node.maximum_pdu_size``, or a
  data set above ``node.max_dataset_mb`` is refused as soon as its header says so, before the
  bytes are buffered.

With TLS (``node.tls``) the accepted socket is wrapped without a handshake: the handshake
runs on the first read, in the association's own thread, so a peer that connects and never
finishes it is one more pending connection the watchdog drops, never a stall of the acceptor
(which is where pynetdicom's own ``ssl_context`` would run it). The PDU checks see the
decrypted stream.

Written against pynetdicom 3.0.4: it relies only on the server reading through
``socket.recv`` and selecting on ``fileno()`` (for TLS, also on ``AssociationSocket.ready``
asking an :class:`ssl.SSLSocket` for ``pending()`` bytes); the association's socket is found as
``event.assoc.dul.socket.socket`` (the object ``get_request`` returned).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RQ with 128 presentation contexts of 10 transfer syntaxes each is about 40 KiB;
# user identity tokens (SAML, JWT) add a few KiB. Nothing legitimate comes near this.
MAX_CONTROL_PDU_BYTES = 256 * 1024
P_DATA_TF = 0x04
_A_ABORT_INVALID_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06])
_PENDING, _ASSOCIATED, _CLOSED = "pending", "associated", "closed"


@dataclass(frozen=True)
class ConnectionLimits:
    max_associations: int
    max_associations_per_peer: int
    max_pending: int
    max_pending_per_address: int
    pending_timeout: float
    maximum_pdu_size: int  # 0: unlimited (the data set limit still applies)
    max_dataset_bytes: int
    allowed_networks: tuple[str, ...] = ()


class RefusalLog:
    """Logs each (peer, reason) once per ``interval`` seconds, with the count suppressed since."""

    def __init__(self, interval: float = 600.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def warning(self, peer: str, reason: str, detail: str = "") -> bool:
        """Log unless already logged recently; returns whether it logged."""
        now = self._clock()
        key = (peer, reason)
        with self._lock:
            last, suppressed = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.interval:
                self._seen[key] = (last, suppressed + 1)
                return False
            self._seen[key] = (now, 0)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        logger.warning("refused %s: %s%s%s", peer, reason, f"; {detail}" if detail else "", more)
        return True


class PduLimitError(Exception):
    """The peer declared a PDU or data set above the node's limits."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class GuardedConnection:
    """The guard's side of an accepted connection: reads are checked as a PDU stream (see
    module docstring). Subclasses supply the transport: :class:`GuardedSocket` (plain TCP)
    and :class:`GuardedTlsSocket` (TLS, handshake in the association's thread)."""

    address: str
    guard: ConnectionGuard
    state: str

    def _attach(self, address: str, guard: ConnectionGuard) -> None:
        self.address = address
        self.guard = guard
        self.state = _PENDING
        self._killed = False
        self._header = b""
        self._body_left = 0
        self._pdu_type = 0
        self._item_header = b""
        self._item_left = 0
        self._item_is_data = False
        self._item_last = False
        self._dataset_bytes = 0

    # The transport ------------------------------------------------------------------------
    def _read(self, bufsize: int, flags: int) -> bytes:
        raise NotImplementedError

    def _send_raw(self, data: bytes) -> None:
        raise NotImplementedError

    def _shutdown_raw(self, how: int) -> None:
        raise NotImplementedError

    def _close_raw(self) -> None:
        raise NotImplementedError

    # Reads -----------------------------------------------------------------------------
    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._killed:
            return b""
        try:
            data = self._read(buflen, flags)
        except (OSError, ValueError) as exc:
            if not self._killed:
                # One line, not pynetdicom's traceback: resets are routine on a network.
                logger.info("connection from %s ended: %s", self.address, exc)
            self._end()
            return b""
        if not data:
            if not self._killed and (self._header or self._body_left):
                logger.info("connection from %s closed in the middle of a PDU", self.address)
            self._end()
            return b""
        try:
            self._inspect(data)
        except PduLimitError as exc:
            self.guard.refusals.warning(self.address, exc.kind, exc.detail)
            if self.state == _ASSOCIATED:
                self._send_quietly(_A_ABORT_INVALID_PARAMETER)
            self.kill()
            return b""
        return data

    def _inspect(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos < size:
            if self._body_left == 0:
                take = min(6 - len(self._header), size - pos)
                self._header += data[pos : pos + take]
                pos += take
                if len(self._header) == 6:
                    pdu_type, _, length = struct.unpack(">BBL", self._header)
                    self._header = b""
                    self._start_pdu(pdu_type, length)
                continue
            take = min(self._body_left, size - pos)
            if self._pdu_type == P_DATA_TF:
                self._inspect_pdvs(data[pos : pos + take])
            self._body_left -= take
            pos += take

    def _start_pdu(self, pdu_type: int, length: int) -> None:
        limits = self.guard.limits
        if pdu_type == P_DATA_TF and self.state == _ASSOCIATED:
            # Unlimited maximum_pdu_size still cannot exceed one data set (plus PDV headers).
            limit = limits.maximum_pdu_size or limits.max_dataset_bytes + 65536
            if length > limit:
                raise PduLimitError(
                    "P-DATA-TF PDU above the maximum (node.maximum_pdu_size)",
                    f"{length} bytes, limit {limit}",
                )
            self._item_header, self._item_left = b"", 0
        elif length > MAX_CONTROL_PDU_BYTES:
            raise PduLimitError(
                "PDU above the size limit of an association PDU",
                f"type 0x{pdu_type:02X} declares {length} bytes, limit {MAX_CONTROL_PDU_BYTES}",
            )
        self._pdu_type, self._body_left = pdu_type, length

    def _inspect_pdvs(self, chunk: bytes) -> None:
        pos, size = 0, len(chunk)
        while pos < size:
            if self._item_left == 0:
                take = min(6 - len(self._item_header), size - pos)
                self._item_header += chunk[pos : pos + take]
                pos += take
                if len(self._item_header) == 6:
                    (item_length,) = struct.unpack(">L", self._item_header[:4])
                    control = self._item_header[5]
                    self._item_header = b""
                    self._item_is_data = not control & 0x01
                    self._item_last = bool(control & 0x02)
                    self._item_left = max(item_length - 2, 0)
                    self._count(0)
                continue
            take = min(self._item_left, size - pos)
            self._item_left -= take
            pos += take
            self._count(take)

    def _count(self, nbytes: int) -> None:
        if not self._item_is_data:
            return
        self._dataset_bytes += nbytes
        limit = self.guard.limits.max_dataset_bytes
        if limit and self._dataset_bytes > limit:
            raise PduLimitError("data set above node.max_dataset_mb", f"limit {limit // 2**20} MiB")
        if self._item_left == 0 and self._item_last:
            self._dataset_bytes = 0

    # Ends ------------------------------------------------------------------------------
    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._send_raw(data)

    def _end(self) -> None:
        if self.state != _CLOSED:
            self.state = _CLOSED
            self.guard.release(self)

    def kill(self) -> None:
        """Drop the connection now; a read (or a TLS handshake) blocked in another thread
        returns at once."""
        self._killed = True
        with contextlib.suppress(OSError):
            self._shutdown_raw(socket.SHUT_RDWR)
        self._end()

    def shutdown(self, how: int) -> None:
        try:
            self._shutdown_raw(how)
        finally:
            self._end()

    def close(self) -> None:
        self._close_raw()
        self._end()


class GuardedSocket(GuardedConnection):
    """A plain TCP connection; everything but the reads and ends is the wrapped socket's own."""

    def __init__(self, sock: socket.socket, address: str, guard: ConnectionGuard) -> None:
        self._sock = sock
        self._attach(address, guard)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def fileno(self) -> int:
        return self._sock.fileno()

    def _read(self, bufsize: int, flags: int) -> bytes:
        return self._sock.recv(bufsize, flags)

    def _send_raw(self, data: bytes) -> None:
        self._sock.sendall(data)

    def _shutdown_raw(self, how: int) -> None:
        self._sock.shutdown(how)

    def _close_raw(self) -> None:
        self._sock.close()


class GuardedTlsSocket(GuardedConnection, ssl.SSLSocket):
    """A TLS connection whose handshake runs on the first read, in the association's thread.

    It *is* an :class:`ssl.SSLSocket` (made by a context whose ``sslsocket_class`` is this
    class, see :func:`wrap_tls`), so pynetdicom's ``AssociationSocket.ready`` sees the bytes
    OpenSSL has already decrypted and buffered (``pending()``), which ``select`` on the
    descriptor cannot: a TLS record holding the end of one PDU and the start of the next
    would otherwise leave the next PDU unread until more bytes arrive.
    """

    _handshake_done = False

    def _read(self, bufsize: int, flags: int) -> bytes:
        if not self._handshake_done:
            try:
                self.do_handshake()
            except (OSError, ValueError) as exc:
                # A plain client on the TLS port, an untrusted or missing client certificate.
                if not self._killed:
                    self.guard.refusals.warning(self.address, *_handshake_failure(exc))
                self.kill()
                return b""
            self._handshake_done = True
            logger.info(
                "TLS connection from %s: %s, %s, client certificate %s",
                self.address,
                self.version(),
                (self.cipher() or ("?",))[0],
                _subject(self.getpeercert()),
            )
        return ssl.SSLSocket.recv(self, bufsize, flags)

    def _send_raw(self, data: bytes) -> None:
        ssl.SSLSocket.sendall(self, data)

    def _shutdown_raw(self, how: int) -> None:
        # The TCP shutdown only: SSLSocket.shutdown would drop the SSL object under a
        # handshake or read running in the association's thread.
        socket.socket.shutdown(self, how)

    def _close_raw(self) -> None:
        ssl.SSLSocket.close(self)


def wrap_tls(
    sock: socket.socket, context: ssl.SSLContext, address: str, guard: ConnectionGuard
) -> GuardedTlsSocket:
    """Wrap an accepted socket for TLS without handshaking (no I/O in the acceptor thread).

    Makes ``context`` (the listener's own) build :class:`GuardedTlsSocket` sockets.
    """
    context.sslsocket_class = GuardedTlsSocket
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    if not isinstance(tls, GuardedTlsSocket):  # pragma: no cover - the class is set above
        raise TypeError("the listener's TLS context must make GuardedTlsSocket sockets")
    tls._attach(address, guard)
    return tls


# OpenSSL's reason for a failed handshake, and what it usually means on a DICOM port.
_HANDSHAKE_HINTS = {
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS (a plain DICOM sender on the TLS port?)",
    "HTTP_REQUEST": "the peer does not speak TLS (an HTTP request)",
    "UNSUPPORTED_PROTOCOL": "the peer offers only TLS older than 1.2",
    "NO_SHARED_CIPHER": "no cipher suite in common with the peer",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate (node.tls.require_client_cert)",
    "CERTIFICATE_VERIFY_FAILED": "client certificate not trusted by node.tls.ca_file",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the node's certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer rejected the node's certificate",
}


def _handshake_failure(exc: BaseException) -> tuple[str, str]:
    """(reason, detail) for the refusal log: one line per peer and kind of failure."""
    code = getattr(exc, "reason", None)
    hint = _HANDSHAKE_HINTS.get(code or "", "")
    reason = f"TLS handshake failed ({code})" if code else "TLS handshake failed"
    return reason, f"{hint}; {exc}" if hint else str(exc)


def _subject(cert: Any) -> str:
    """The subject of a peer certificate as ``CN=..,O=..``, or ``none``."""
    if not cert:
        return "none"
    return ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)


class ConnectionGuard:
    """Counts pending connections and associations; the watchdog drops stale pending ones."""

    def __init__(self, limits: ConnectionLimits, refusals: RefusalLog | None = None) -> None:
        self.limits = limits
        self.refusals = refusals or RefusalLog()
        self._networks = [ipaddress.ip_network(n, strict=False) for n in limits.allowed_networks]
        self._lock = threading.Lock()
        self._pending: dict[GuardedConnection, float] = {}
        self._associated: set[GuardedConnection] = set()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def address_allowed(self, address: str) -> bool:
        if not self._networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def admit(self, sock: GuardedConnection) -> bool:
        """At TCP accept: network allowlist and pending caps."""
        address = sock.address
        if not self.address_allowed(address):
            self.refusals.warning(address, "address not in security.allowed_networks")
            return False
        limits = self.limits
        with self._lock:
            if len(self._pending) >= limits.max_pending:
                reason = f"{limits.max_pending} connections already pending (node.max_pending)"
            elif (
                sum(1 for s in self._pending if s.address == address)
                >= limits.max_pending_per_address
            ):
                reason = (
                    f"{limits.max_pending_per_address} connections from this address already "
                    "pending (node.max_pending_per_address)"
                )
            else:
                self._pending[sock] = time.monotonic() + limits.pending_timeout
                return True
        self.refusals.warning(address, reason)
        return False

    def associate(self, sock: GuardedConnection, calling_ae: str) -> str | None:
        """A complete A-ASSOCIATE-RQ: take an association slot, or say why there is none."""
        limits = self.limits
        with self._lock:
            self._pending.pop(sock, None)
            if sock.state == _CLOSED:
                return "connection already closed"
            if len(self._associated) >= limits.max_associations:
                reason = (
                    f"all {limits.max_associations} associations in use (node.max_associations)"
                )
            elif (
                sum(1 for s in self._associated if s.address == sock.address)
                >= limits.max_associations_per_peer
            ):
                reason = (
                    f"{limits.max_associations_per_peer} associations from this address already "
                    "open (node.max_associations_per_peer)"
                )
            else:
                sock.state = _ASSOCIATED
                self._associated.add(sock)
                return None
        self.refusals.warning(sock.address, reason, f"calling AE {calling_ae!r}")
        return reason

    def release(self, sock: GuardedConnection) -> None:
        with self._lock:
            self._pending.pop(sock, None)
            self._associated.discard(sock)

    def counts(self) -> tuple[int, int]:
        """(pending connections, associations)."""
        with self._lock:
            return len(self._pending), len(self._associated)

    # Watchdog --------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name="pending-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)

    def _watch(self) -> None:
        tick = min(0.25, self.limits.pending_timeout / 4)
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                expired = [s for s, deadline in self._pending.items() if deadline <= now]
                for sock in expired:
                    del self._pending[sock]
            for sock in expired:
                self.refusals.warning(
                    sock.address,
                    "association not negotiated within node.pending_timeout "
                    f"({self.limits.pending_timeout:g} s); connection dropped",
                )
                sock.kill()


def install_log_filter() -> None:
    """Keep pynetdicom's lines about a broken connection or a malformed PDU to one line each.

    pynetdicom logs a reset, a short read or an undecodable PDU at ERROR with a full traceback;
    a hostile or broken peer must not fill the log with them. The filter keeps the line and
    folds the exception into it.
    """
    for name in ("pynetdicom.dul", "pynetdicom.transport"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _OneLine) for f in log.filters):
            log.addFilter(_OneLine())


# pynetdicom's lines for a connection lost mid-PDU; the guard logs those itself, once.
_LOST_MID_PDU = ("The received PDU is shorter than expected", "Connection closed before the entire")


class _OneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, BaseException):
            return False  # LOGGER.exception(exc) after a line that already said what happened
        if isinstance(record.msg, str) and record.msg.startswith(_LOST_MID_PDU):
            return False
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True
