"""Throw malformed PDUs and data sets at a DICOM listener and check it keeps serving.

    python scripts/fuzz_listener.py 127.0.0.1 11112 --seconds 60 --files ../shared/data/dicom

Cases, each on its own connection: truncated, oversized and unknown PDUs, garbage after a
valid A-ASSOCIATE-RQ, P-DATA before association, PDV items that lie about their length, and
C-STOREs of real files cut short, with oversized element lengths, with random bit flips, or
replaced by random bytes. Between rounds a legitimate pynetdicom sender stores a real file and
must get 0x0000. Prints what the listener answered, per case; exits 1 if the legitimate sender
ever failed. Point it only at a node you run yourself (loopback).

The raw peer here (:class:`RawPeer`) speaks just enough of PS3.8 to do this; the tests use it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import random
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dsutils import decode, encode

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def associate_rq(
    calling: str,
    called: str,
    contexts: Sequence[tuple[int, str, Sequence[str]]],
    max_pdu: int = 16384,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) proposing ``(id, abstract syntax, syntaxes)``."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
    body += b"\x00" * 32 + _item(0x10, APPLICATION_CONTEXT)
    for context_id, abstract, syntaxes in contexts:
        value = struct.pack(">BBBB", context_id, 0, 0, 0) + _item(0x30, abstract.encode())
        value += b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        body += _item(0x20, value)
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.9.3811")
    body += _item(0x50, user)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def pdv(context_id: int, data: bytes, *, command: bool, last: bool) -> bytes:
    control = (1 if command else 0) | (2 if last else 0)
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def p_data(*items: bytes) -> bytes:
    body = b"".join(items)
    return struct.pack(">BBL", 0x04, 0, len(body)) + body


def c_store_command(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    cmd = Dataset()
    cmd.AffectedSOPClassUID = sop_class
    cmd.CommandField = 0x0001
    cmd.MessageID = message_id
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000
    cmd.AffectedSOPInstanceUID = sop_instance
    rest = encode(cmd, True, True)
    assert rest is not None
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(rest)) + rest


class RawPeer:
    """A TCP connection speaking raw PDUs; every read is bounded by ``timeout``."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.accepted: dict[int, str] = {}
        self.max_pdu = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send; ``False`` when the listener closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _read_exact(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def read_pdu(self) -> tuple[int, bytes] | None:
        header = self._read_exact(6)
        if header is None:
            return None
        pdu_type, _, length = struct.unpack(">BBL", header)
        body = self._read_exact(length) if length else b""
        return None if body is None else (pdu_type, body)

    def associate(
        self,
        contexts: Sequence[tuple[int, str, Sequence[str]]],
        calling: str = "FUZZ",
        called: str = "CXRNODE",
    ) -> bool:
        if not self.send(associate_rq(calling, called, contexts)):
            return False
        reply = self.read_pdu()
        if reply is None or reply[0] != 0x02:
            return False
        body, pos = reply[1], 68
        while pos + 4 <= len(body):
            item_type, _, length = struct.unpack_from(">BBH", body, pos)
            value = body[pos + 4 : pos + 4 + length]
            if item_type == 0x21 and value[2] == 0:
                ts = value[8:].decode().rstrip("\x00 ")
                self.accepted[value[0]] = ts
            elif item_type == 0x50 and len(value) >= 8 and value[0] == 0x51:
                self.max_pdu = struct.unpack(">L", value[4:8])[0]
            pos += 4 + length
        return True

    def c_store(
        self,
        context_id: int,
        sop_class: str,
        sop_instance: str,
        data: bytes,
        fragment: int | None = None,
    ) -> int | None:
        """Send one C-STORE with ``data`` as the data set; its status, or None if the listener
        dropped or aborted the association."""
        if not self.send(
            p_data(
                pdv(context_id, c_store_command(sop_class, sop_instance), command=True, last=True)
            )
        ):
            return None
        size = fragment or (self.max_pdu - 6 if self.max_pdu else 1 << 20)
        chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        for i, chunk in enumerate(chunks):
            item = pdv(context_id, chunk, command=False, last=i == len(chunks) - 1)
            if not self.send(p_data(item)):
                return None
        return self.read_status()

    def read_status(self) -> int | None:
        command = b""
        while True:
            reply = self.read_pdu()
            if reply is None or reply[0] != 0x04:
                return None
            body = reply[1]
            pos = 0
            while pos + 6 <= len(body):
                length, _, control = struct.unpack_from(">LBB", body, pos)
                command += body[pos + 6 : pos + 4 + length]
                pos += 4 + length
                if control & 0x03 == 0x03:
                    ds = decode(io.BytesIO(command), True, True)
                    return int(ds.Status)

    def release(self) -> None:
        self.send(struct.pack(">BBLL", 0x05, 0, 4, 0))
        self.read_pdu()
        self.close()


def data_set_bytes(path: Path) -> tuple[bytes, Dataset]:
    """The data set part of a file (after the meta), and its header."""
    raw = path.read_bytes()
    offset = 132 + 12 + int.from_bytes(raw[140:144], "little")
    return raw[offset:], pydicom.dcmread(path, stop_before_pixels=True)


# --- Cases ---------------------------------------------------------------------------

Case = Callable[[str, int, random.Random, list[Path]], str]


def _outcome(peer: RawPeer) -> str:
    """What the listener did with a connection we stopped talking on."""
    peer.sock.settimeout(3.0)
    reply = peer.read_pdu()
    peer.close()
    if reply is None:
        return "closed"
    return {0x03: "rejected", 0x07: "aborted", 0x02: "accepted"}.get(reply[0], f"pdu{reply[0]}")


def case_truncated_rq(host: str, port: int, rng: random.Random, files: list[Path]) -> str:
    peer = RawPeer(host, port)
    rq = associate_rq("FUZZ", "CXRNODE", [(1, "1.2.840.10008.1.1", [IMPLICIT_LE])])
    peer.send(rq[: rng.randrange(1, len(rq))])
    peer.sock.shutdown(socket.SHUT_WR)
    return _outcome(peer)


def case_oversized_length(host: str, port: int, rng: random.Random, files: list[Path]) -> str:
    peer = RawPeer(host, port)
    sent = 0
    if peer.send(struct.pack(">BBL", rng.choice([1, 4, 5, 7]), 0, 0xFFFFFFF0)):
        chunk = rng.randbytes(65536)
        while sent < 16 << 20 and peer.send(chunk):
            sent += len(chunk)
    peer.close()
    return "closed early" if sent < 16 << 20 else "buffered 16 MiB"


def case_unknown_pdu(host: str, port: int, rng: random.Random, files: list[Path]) -> str:
    peer = RawPeer(host, port)
    peer.send(struct.pack(">BBL", rng.choice([0, 8, 9, 0x42, 0xFF]), 0, 16) + rng.randbytes(16))
    return _outcome(peer)


def case_garbage_after_rq(host: str, port: int, rng: random.Random, files: list[Path]) -> str:
    peer = RawPeer(host, port)
    rq = associate_rq("FUZZ", "CXRNODE", [(1, "1.2.840.10008.1.1", [IMPLICIT_LE])])
    # Garbage inside the declared length (items of wrong types) or after the PDU.
    if rng.random() < 0.5:
        body = bytearray(rq[6:])
        for _ in range(rng.randrange(1, 20)):
            body[rng.randrange(68, len(body))] = rng.randrange(256)
        peer.send(rq[:6] + bytes(body))
    else:
        peer.send(rq + rng.randbytes(rng.randrange(1, 4096)))
    return _outcome(peer)


def case_random_bytes(host: str, port: int, rng: random.Random, files: list[Path]) -> str:
    peer = RawPeer(host, port)
    peer.send(rng.randbytes(rng.randrange(1, 8192)))
    return _outcome(peer)


def case_pdata_before_association(
    host: str, port: int, rng: random.Random, files: list[Path]
) -> str:
    peer = RawPeer(host, port)
    peer.send(p_data(pdv(1, rng.randbytes(100), command=True, last=True)))
    return _outcome(peer)


def _stored_case(mutate: Callable[[bytes, random.Random], bytes]) -> Case:
    def case(host: str, port: int, rng: random.Random, files: list[Path]) -> str:
        path = rng.choice(files)
        data, header = data_set_bytes(path)
        ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        peer = RawPeer(host, port)
        if not peer.associate([(1, str(header.SOPClassUID), [ts])]) or 1 not in peer.accepted:
            peer.close()
            return "not associated"
        status = peer.c_store(
            1, str(header.SOPClassUID), str(header.SOPInstanceUID), mutate(data, rng)
        )
        peer.close()
        return "dropped" if status is None else f"0x{status:04X}"

    return case


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(0, len(data))]


def _bit_flips(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    # Flips in the header region, where they change tags, VRs and lengths.
    for _ in range(rng.randrange(1, 16)):
        out[rng.randrange(0, min(len(out), 4096))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _oversized_element(data: bytes, rng: random.Random) -> bytes:
    # An explicit-VR long element claiming far more than is there.
    return data[:64] + b"\x09\x00\x10\x00OB\x00\x00" + struct.pack("<L", 0x7FFFFFF0) + b"\x00" * 32


def _random_data_set(data: bytes, rng: random.Random) -> bytes:
    return rng.randbytes(rng.randrange(0, 4096))


def case_lying_pdv(host: str, port: int, rng: random.Random, files: list[Path]) -> str:
    peer = RawPeer(host, port)
    if not peer.associate([(1, "1.2.840.10008.1.1", [IMPLICIT_LE])]):
        peer.close()
        return "not associated"
    body = struct.pack(">LBB", rng.choice([0, 1, 0xFFFFFFFF, 5000]), 1, 3) + rng.randbytes(40)
    peer.send(struct.pack(">BBL", 0x04, 0, len(body)) + body)
    return _outcome(peer)


CASES: dict[str, Case] = {
    "truncated A-ASSOCIATE-RQ": case_truncated_rq,
    "oversized PDU length": case_oversized_length,
    "unknown PDU type": case_unknown_pdu,
    "garbage in/after A-ASSOCIATE-RQ": case_garbage_after_rq,
    "random bytes": case_random_bytes,
    "P-DATA before association": case_pdata_before_association,
    "PDV item lying about its length": case_lying_pdv,
    "C-STORE truncated data set": _stored_case(_truncate),
    "C-STORE bit flips": _stored_case(_bit_flips),
    "C-STORE oversized element length": _stored_case(_oversized_element),
    "C-STORE random bytes": _stored_case(_random_data_set),
}


def legitimate_store(host: str, port: int, path: Path, called: str = "CXRNODE") -> int | None:
    """A well-behaved sender stores a fresh copy of ``path``; its status (None: no association)."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ae = AE(ae_title="LEGIT")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(ds)
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


def run_fuzz(
    host: str, port: int, files: list[Path], *, seconds: float, seed: int, every: int = 10
) -> tuple[dict[str, collections.Counter[str]], list[int | None]]:
    """Cases at random for ``seconds``; a legitimate store every ``every`` cases.

    Returns the outcomes per case and the legitimate statuses (all must be 0)."""
    rng = random.Random(seed)
    outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    legit: list[int | None] = []
    names = sorted(CASES)
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        name = rng.choice(names)
        try:
            outcomes[name][CASES[name](host, port, rng, files)] += 1
        except OSError as exc:
            outcomes[name][f"error {type(exc).__name__}"] += 1
        done += 1
        if done % every == 0:
            legit.append(legitimate_store(host, port, rng.choice(files)))
    legit.append(legitimate_store(host, port, files[0]))
    return outcomes, legit


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", type=Path, default=Path("../shared/data/dicom"))
    args = parser.parse_args(argv)
    files = sorted(args.files.glob("*.dcm"))
    if not files:
        parser.error(f"no .dcm files in {args.files}")
    outcomes, legit = run_fuzz(args.host, args.port, files, seconds=args.seconds, seed=args.seed)
    for name in sorted(outcomes):
        counts = ", ".join(f"{k} {v}" for k, v in outcomes[name].most_common())
        print(f"{name:<36} {counts}")
    failures = [s for s in legit if s != 0]
    print(f"legitimate stores: {len(legit)}, failed: {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
