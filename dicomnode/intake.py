"""Intake of one received instance: the checks, the spool, the database, the status.

One function, :func:`intake`, serves both the live C-STORE handler and start-up recovery (a
file written before a crash and never committed), so the two cannot drift. The sender (calling
AE title and address) travels with the file itself, in the File Meta Information's Sending
Application Entity Title (0002,0017) and Sending Presentation Address (0002,0027), so recovery
knows it as well as the live handler did.

Status codes (PS3.4 Annex B.2.3 and PS3.7 Annex C):

======  ==============================================================
0x0000  Success (also for a duplicate SOP Instance UID: idempotent)
0x0124  Refused: not authorized (no routing rule matched, ``unmatched = "refuse"``)
0xA700  Refused: out of resources (disk or inodes below the configured floor)
0xA701  Refused: out of resources (the spool could not be written, directories included)
0xA702  Refused: out of resources (the database could not record the instance)
0xA900  Error: data set does not match SOP class (header disagrees with the request, or an
        image pixel module that cannot be right: zero rows/columns, bits allocated not a
        multiple of 8 for native data, missing pixel module attributes)
0xA910  Error: same SOP Instance UID with other content, ``storage.changed_instance = "refuse"``
0xC210  Cannot understand: the data set cannot be decoded (random bytes, truncated, pixel data
        shorter than the image pixel module requires, encapsulated frames missing)
0xC211  Cannot understand: a required UID is missing or invalid
0xC212  Cannot understand: no pixel data
======  ==============================================================
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import Config
from dicomnode.db import Instance, session_scope
from dicomnode.exceptions import InvalidUIDError, SpoolError
from dicomnode.routing import InstanceFacts, match_rule
from dicomnode.spool import Spool, StoredFile
from dicomnode.studies import (
    ReceivedInstance,
    fill_in_sender,
    record_changed_version,
    record_instance,
    record_quarantine,
)
from dicomnode.uids import validate_uid

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
REFUSED_NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES_DISK = 0xA700
OUT_OF_RESOURCES_SPOOL = 0xA701
OUT_OF_RESOURCES_DATABASE = 0xA702
SOP_CLASS_MISMATCH = 0xA900
CHANGED_INSTANCE_REFUSED = 0xA910
CANNOT_UNDERSTAND = 0xC210
MISSING_UID = 0xC211
NO_PIXEL_DATA = 0xC212

_FLOAT_PIXEL_KEYWORDS = ("FloatPixelData", "DoubleFloatPixelData")
_PIXEL_DATA_TAG = 0x7FE00010
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_SHORT_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
}  # fmt: skip
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


@dataclass(frozen=True)
class Sender:
    """Who sent an instance: the calling AE title and the peer's IP address (and port)."""

    ae_title: str
    address: str
    port: int = 0


class RejectedError(Exception):
    """The instance is refused with ``status``; quarantined unless ``quarantine`` is False."""

    def __init__(self, status: int, reason: str, *, quarantine: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.quarantine = quarantine


# --- The file as stored ---------------------------------------------------------------


def file_meta(
    sop_class: str, sop_instance: str, transfer_syntax: str, sender: Sender, receiver_ae: str
) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.SendingApplicationEntityTitle = sender.ae_title[:16]
    host = f"[{sender.address}]" if ":" in sender.address else sender.address
    meta.SendingPresentationAddress = f"dicom://{host}:{sender.port}"
    meta.ReceivingApplicationEntityTitle = receiver_ae[:16]
    return meta


def encode_file(meta: FileMetaDataset, body: bytes) -> list[bytes]:
    """The file in two parts: preamble and meta, then the data set exactly as received."""
    buffer = io.BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return [buffer.getvalue(), body]


def split_file(raw: bytes) -> tuple[FileMetaDataset, bytes, Sender]:
    """The meta, the data set bytes and the sender of a spool file."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp = io.BytesIO(raw)
    read_preamble(fp, force=False)
    meta = _read_file_meta_info(fp)
    body = raw[fp.tell() :]
    ae = (
        str(meta.get("SendingApplicationEntityTitle") or "").strip()
        or str(meta.get("SourceApplicationEntityTitle") or "").strip()
    )
    address, port = "", 0
    if meta.get("SendingPresentationAddress"):
        parts = urlsplit(str(meta.SendingPresentationAddress))
        address, port = parts.hostname or "", parts.port or 0
    return meta, body, Sender(ae, address, port)


# --- Structural check of the data set bytes ---------------------------------------------


@dataclass
class _PixelLayout:
    length: int | None  # None: encapsulated (undefined length)
    fragments: list[int]  # lengths of the fragments after the basic offset table


def _walk(raw: bytes, implicit: bool, little: bool) -> _PixelLayout | None:
    """Walk the top-level elements; raise ``ValueError`` where the bytes cannot be a data set
    (unknown VR, tags out of order, a length past the end, a missing delimiter)."""
    return _walk_elements(raw, 0, "<" if little else ">", implicit, in_item=False)[1]


def _walk_elements(
    raw: bytes, pos: int, order: str, implicit: bool, *, in_item: bool
) -> tuple[int, _PixelLayout | None]:
    end = len(raw)
    previous, pixel = -1, None
    while pos < end:
        if pos + 8 > end:
            raise ValueError(f"data set ends inside an element header at byte {pos}")
        group, elem = struct.unpack_from(f"{order}HH", raw, pos)
        tag = group << 16 | elem
        if in_item and tag == _ITEM_END:
            return pos + 8, pixel
        if tag <= previous:
            raise ValueError(f"element ({group:04X},{elem:04X}) out of order at byte {pos}")
        previous = tag
        if implicit:
            vr = b""
            (length,) = struct.unpack_from(f"{order}L", raw, pos + 4)
            pos += 8
        else:
            vr = raw[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    raise ValueError(f"data set ends inside an element header at byte {pos}")
                (length,) = struct.unpack_from(f"{order}L", raw, pos + 8)
                pos += 12
            elif vr in _SHORT_VRS:
                (length,) = struct.unpack_from(f"{order}H", raw, pos + 6)
                pos += 8
            else:
                raise ValueError(
                    f"element ({group:04X},{elem:04X}) has no valid VR ({vr!r}) at byte {pos}"
                )
        if length == _UNDEFINED:
            if vr not in (b"", b"SQ", b"UN", b"OB", b"OW"):
                raise ValueError(f"element ({group:04X},{elem:04X}) of undefined length")
            pos, fragments = _walk_items(raw, pos, order, implicit)
            if tag == _PIXEL_DATA_TAG and not in_item:
                pixel = _PixelLayout(None, fragments)
            continue
        if pos + length > end:
            raise ValueError(
                f"element ({group:04X},{elem:04X}) declares {length} bytes but the data set "
                f"ends {end - pos} bytes later (truncated)"
            )
        if tag == _PIXEL_DATA_TAG and not in_item:
            pixel = _PixelLayout(length, [])
        pos += length
    if in_item:
        raise ValueError("sequence item without its delimiter (truncated)")
    return pos, pixel


def _walk_items(raw: bytes, pos: int, order: str, implicit: bool) -> tuple[int, list[int]]:
    """Items of an undefined-length value up to its sequence delimiter."""
    end = len(raw)
    lengths: list[int] = []
    while True:
        if pos + 8 > end:
            raise ValueError("data set ends before the sequence delimiter (truncated)")
        group, elem, length = struct.unpack_from(f"{order}HHL", raw, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQ_END:
            return pos, lengths
        if tag != _ITEM:
            raise ValueError(f"({group:04X},{elem:04X}) where an item was expected")
        if length == _UNDEFINED:
            pos = _walk_elements(raw, pos, order, implicit, in_item=True)[0]
            lengths.append(0)
            continue
        if pos + length > end:
            raise ValueError(f"item of {length} bytes runs past the end of the data (truncated)")
        lengths.append(length)
        pos += length


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _check_pixels(ds: Dataset, layout: _PixelLayout | None, transfer_syntax: UID) -> None:
    if layout is None:
        if not any(k in ds for k in _FLOAT_PIXEL_KEYWORDS):
            raise RejectedError(NO_PIXEL_DATA, "no Pixel Data in an image storage instance")
        return  # float pixel data: no native length rule checked here
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    bits, samples = _int(ds, "BitsAllocated"), _int(ds, "SamplesPerPixel")
    frames = _int(ds, "NumberOfFrames") if "NumberOfFrames" in ds else 1
    missing = [
        name
        for name, value in (
            ("Rows", rows),
            ("Columns", columns),
            ("BitsAllocated", bits),
            ("SamplesPerPixel", samples),
            ("NumberOfFrames", frames),
        )
        if value is None
    ]
    if missing:
        raise RejectedError(SOP_CLASS_MISMATCH, f"image pixel module lacks {', '.join(missing)}")
    assert rows is not None and columns is not None and bits is not None
    assert samples is not None and frames is not None
    if rows < 1 or columns < 1 or samples < 1 or frames < 1 or bits < 1:
        raise RejectedError(
            SOP_CLASS_MISMATCH,
            f"image pixel module cannot be right: Rows {rows}, Columns {columns}, Samples per "
            f"Pixel {samples}, Number of Frames {frames}, Bits Allocated {bits}",
        )
    if layout.length is None:
        fragments = [n for n in layout.fragments[1:] if n > 0]
        if len(fragments) < frames:
            raise RejectedError(
                CANNOT_UNDERSTAND,
                f"encapsulated pixel data holds {len(fragments)} fragment(s) for {frames} frame(s)",
            )
        return
    if transfer_syntax.is_encapsulated:
        raise RejectedError(
            CANNOT_UNDERSTAND, "native pixel data in an encapsulated transfer syntax"
        )
    if bits % 8:
        raise RejectedError(
            SOP_CLASS_MISMATCH, f"Bits Allocated {bits} is not a multiple of 8 in native data"
        )
    per_pixel = samples * bits // 8
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        per_pixel = 2 * bits // 8
    expected = rows * columns * per_pixel * frames
    if layout.length < expected:
        raise RejectedError(
            CANNOT_UNDERSTAND,
            f"pixel data holds {layout.length} bytes, the image pixel module needs {expected} "
            f"({rows}x{columns}, {samples} sample(s), {bits} bits, {frames} frame(s)): "
            "cut short",
        )


def _before_pixel_data(tag: Any, vr: str | None, length: int) -> bool:
    return int(tag) == _PIXEL_DATA_TAG


def examine(body: bytes, transfer_syntax: str) -> tuple[Dataset, _PixelLayout | None]:
    """Decode the data set bytes strictly; :class:`RejectedError` with 0xC210 if they cannot be.

    Every element's structure is walked, but only the header is decoded: Pixel Data is
    checked by its layout and never copied (a large image would cost its size again)."""
    ts = UID(transfer_syntax)
    implicit = ts == ImplicitVRLittleEndian
    little = ts != ExplicitVRBigEndian
    try:
        raw = body
        if ts == DeflatedExplicitVRLittleEndian:
            raw = zlib.decompress(body, -zlib.MAX_WBITS)
        layout = _walk(raw, implicit, little)
        ds = read_dataset(io.BytesIO(raw), implicit, little, stop_when=_before_pixel_data)
        for _ in ds:  # a full parse now, so a garbled value fails here, not in the worker
            pass
    except Exception as exc:
        raise RejectedError(CANNOT_UNDERSTAND, f"data set cannot be decoded: {exc}") from None
    return ds, layout


# --- Intake --------------------------------------------------------------------------


@dataclass(frozen=True)
class IntakeContext:
    """What intake needs, bound at server start (and given to recovery)."""

    config: Config
    spool: Spool
    sessions: sessionmaker[Session]
    # Called with the Study Instance UID after an instance (or a new version) is committed:
    # the node schedules the study's stability check for the end of its window.
    on_recorded: Callable[[str], None] | None = None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def quarantine(
    ctx: IntakeContext,
    encoded: Sequence[bytes],
    reason: str,
    status: int,
    sop_uid: str | None,
    sender: Sender,
) -> bool:
    """Keep input the node cannot use, with a sidecar and a row. Returns whether it was kept;
    a failure is only logged (the peer still gets its failure status)."""
    logger.error(
        "instance from %s (%s) quarantined, status 0x%04X: %s",
        sender.ae_title,
        sender.address,
        status,
        reason,
    )
    try:
        path = ctx.spool.quarantine(
            encoded,
            reason,
            {
                "status": f"0x{status:04X}",
                "calling_ae_title": sender.ae_title,
                "source_address": sender.address,
                "sop_instance_uid": sop_uid,
            },
        )
        with session_scope(ctx.sessions) as session:
            record_quarantine(
                session,
                reason=reason,
                status_code=status,
                path=path,
                sop_uid=sop_uid,
                calling_ae_title=sender.ae_title,
                source_address=sender.address,
            )
    except (SpoolError, SQLAlchemyError) as exc:
        logger.error("could not quarantine the instance: %s", exc)
        return False
    return True


def check_free_space(ctx: IntakeContext) -> str | None:
    """Why the spool is below its floor (disk or inodes), or ``None``."""
    node = ctx.config.node
    try:
        free = ctx.spool.free_bytes()
        inodes = ctx.spool.free_inodes()
    except OSError as exc:
        return f"cannot check the spool's free space: {exc}"
    if free < node.min_free_disk_mb * 2**20:
        return f"{free // 2**20} MiB free, floor is node.min_free_disk_mb={node.min_free_disk_mb}"
    if inodes is not None and inodes < node.min_free_inodes:
        return f"{inodes} inodes free, floor is node.min_free_inodes={node.min_free_inodes}"
    return None


def intake(
    ctx: IntakeContext,
    body: bytes,
    meta: FileMetaDataset,
    sender: Sender,
    *,
    requested: tuple[str, str] | None = None,
    stored_as: str | None = None,
) -> int:
    """Check, store and record one instance; returns the C-STORE status.

    ``body`` is the data set as received, ``meta`` its file meta (with the sender).
    Live (``stored_as`` None): the file is written to the spool, and ``requested`` is the
    C-STORE request's (SOP Class UID, SOP Instance UID). Recovery: ``stored_as`` is the spool
    path of the file already written; if it is refused now it moves to the quarantine.
    """
    encoded: list[bytes] | None = None

    def file_bytes() -> list[bytes]:
        nonlocal encoded
        if encoded is None:
            encoded = encode_file(meta, body)
        return encoded

    def refuse(exc: RejectedError, sop_uid: str | None) -> int:
        # In recovery the file is already on disk: it is moved to the quarantine, never lost.
        kept = False
        if exc.quarantine or stored_as is not None:
            kept = quarantine(ctx, file_bytes(), exc.reason, exc.status, sop_uid, sender)
        if stored_as is not None and kept:
            ctx.spool.remove_instance(stored_as)
        return exc.status

    requested_sop = requested[1] if requested else str(meta.get("MediaStorageSOPInstanceUID", ""))
    ts = str(meta.TransferSyntaxUID)
    try:
        ds, layout = examine(body, ts)
    except RejectedError as exc:
        return refuse(exc, requested_sop or None)

    try:
        study_uid = validate_uid(ds.get("StudyInstanceUID"), name="StudyInstanceUID")
        series_uid = validate_uid(ds.get("SeriesInstanceUID"), name="SeriesInstanceUID")
        sop_uid = validate_uid(ds.get("SOPInstanceUID"), name="SOPInstanceUID")
        sop_class = validate_uid(ds.get("SOPClassUID"), name="SOPClassUID")
    except InvalidUIDError as exc:
        return refuse(RejectedError(MISSING_UID, str(exc)), requested_sop or None)

    try:
        if requested is not None and (sop_class, sop_uid) != requested:
            raise RejectedError(
                SOP_CLASS_MISMATCH,
                f"header SOP Class/Instance ({sop_class}, {sop_uid}) does not match the "
                f"C-STORE request ({requested[0]}, {requested[1]})",
            )
        _check_pixels(ds, layout, UID(ts))
    except RejectedError as exc:
        return refuse(exc, sop_uid)

    facts = InstanceFacts(
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        view_position=_text(ds, "ViewPosition"),
        sop_class_uid=sop_class,
        calling_ae_title=sender.ae_title,
    )
    rule = match_rule(ctx.config.routing, facts)
    if rule is None and ctx.config.routing.unmatched == "refuse":
        logger.warning(
            "C-STORE %s from %s refused: no routing rule matches (modality %r, body part %r, "
            "view %r)",
            sop_uid,
            sender.ae_title,
            facts.modality,
            facts.body_part,
            facts.view_position,
        )
        return refuse(
            RejectedError(REFUSED_NOT_AUTHORIZED, "no routing rule", quarantine=False), sop_uid
        )

    received = ReceivedInstance(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=sop_class,
        transfer_syntax_uid=ts,
        modality=facts.modality,
        body_part=facts.body_part,
        view_position=facts.view_position,
        patient_id=_text(ds, "PatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        calling_ae_title=sender.ae_title,
        source_address=sender.address,
    )
    digest = hashlib.sha256(body).hexdigest()
    return _store_and_record(ctx, received, rule, file_bytes, digest, stored_as)


def _store_and_record(
    ctx: IntakeContext,
    received: ReceivedInstance,
    rule: str | None,
    file_bytes: Callable[[], list[bytes]],
    digest: str,
    stored_as: str | None,
) -> int:
    policy = ctx.config.storage.changed_instance
    sop_uid = received.sop_uid
    try:
        with session_scope(ctx.sessions) as session:
            current = session.scalar(select(Instance).where(Instance.sop_instance_uid == sop_uid))
            current_sha = None if current is None else current.sha256
            if current is not None and current_sha == digest:
                fill_in_sender(session, current, received)
    except SQLAlchemyError as exc:
        logger.error("database unavailable while receiving %s: %s", sop_uid, exc)
        return OUT_OF_RESOURCES_DATABASE

    if current is not None and current_sha == digest:
        logger.info(
            "duplicate %s from %s acknowledged, already stored", sop_uid, received.calling_ae_title
        )
        if stored_as is not None and stored_as != current.path:
            ctx.spool.remove_instance(stored_as)
        return SUCCESS

    stored: StoredFile | None = None
    if stored_as is not None:
        stored = StoredFile(stored_as, ctx.spool.absolute(stored_as).stat().st_size, digest)
    elif current_sha is None or policy == "keep-latest":
        encoded = file_bytes()
        try:
            if current_sha is None:
                stored = ctx.spool.store_instance(
                    received.study_uid, received.series_uid, sop_uid, encoded, digest
                )
            else:
                stored = ctx.spool.store_version(
                    received.study_uid, received.series_uid, sop_uid, encoded, digest
                )
        except SpoolError as exc:
            logger.error("C-STORE %s from %s failed: %s", sop_uid, received.calling_ae_title, exc)
            return OUT_OF_RESOURCES_SPOOL

    try:
        with session_scope(ctx.sessions) as session:
            if current_sha is None:
                assert stored is not None
                outcome = "new" if record_instance(session, received, stored, rule) else "duplicate"
            else:
                outcome = record_changed_version(session, received, stored, digest, rule, policy)
    except IntegrityError:
        logger.info(
            "duplicate %s from %s recorded concurrently", sop_uid, received.calling_ae_title
        )
        return SUCCESS
    except SQLAlchemyError as exc:
        # The file stays in the spool; start-up recovery indexes it. The peer retries.
        logger.error("could not record %s in the database: %s", sop_uid, exc)
        return OUT_OF_RESOURCES_DATABASE
    if outcome == "refused":
        return CHANGED_INSTANCE_REFUSED
    if outcome in ("new", "replaced") and ctx.on_recorded is not None:
        ctx.on_recorded(received.study_uid)
    logger.info(
        "stored %s (study %s, %s, rule %s) from %s%s",
        sop_uid,
        received.study_uid,
        received.modality or "?",
        rule or "none",
        received.calling_ae_title,
        "" if outcome == "new" else f" ({outcome})",
    )
    return SUCCESS
