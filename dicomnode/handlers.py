"""pynetdicom event handlers: plain functions taking the event (and bound dependencies) and
returning a status. No inference here; they only check, store durably and record.

Status codes returned by :func:`handle_store` (PS3.4 Annex B.2.3 and PS3.7 Annex C):

======  ==============================================================
0x0000  Success (also for a duplicate SOP Instance UID: idempotent)
0x0124  Refused: not authorized (no routing rule matched, ``unmatched = "refuse"``)
0xA700  Refused: out of resources (disk below ``node.min_free_disk_mb``)
0xA701  Refused: out of resources (the spool could not be written)
0xA702  Refused: out of resources (the database could not record the instance)
0xA900  Error: data set does not match SOP class (header disagrees with the request)
0xC210  Cannot understand: the data set could not be decoded
0xC211  Cannot understand: a required UID is missing or invalid
0xC212  Cannot understand: no pixel data
======  ==============================================================
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import Config
from dicomnode.db import session_scope
from dicomnode.exceptions import InvalidUIDError, SpoolError
from dicomnode.routing import InstanceFacts, match_rule
from dicomnode.spool import Spool
from dicomnode.studies import ReceivedInstance, record_instance, record_quarantine, stored_sha256
from dicomnode.uids import validate_uid

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
REFUSED_NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES_DISK = 0xA700
OUT_OF_RESOURCES_SPOOL = 0xA701
OUT_OF_RESOURCES_DATABASE = 0xA702
SOP_CLASS_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210
MISSING_UID = 0xC211
NO_PIXEL_DATA = 0xC212

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class StoreContext:
    """What :func:`handle_store` needs, bound at server start."""

    config: Config
    spool: Spool
    sessions: sessionmaker[Session]


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _peer(event: Any) -> tuple[str, str]:
    requestor = event.assoc.requestor
    return str(requestor.ae_title).strip(), str(requestor.address)


def handle_echo(event: Any) -> int:
    """C-ECHO: the node is alive."""
    ae, address = _peer(event)
    logger.debug("C-ECHO from %s at %s", ae, address)
    return SUCCESS


def _reject(assoc: Any, diagnostic: int) -> None:
    # As pynetdicom's own ACSE does: queue the A-ASSOCIATE-RJ, then stop the DUL, which waits
    # until the PDU has been sent, so the peer sees a rejection rather than a dropped socket.
    assoc.acse.send_reject(0x01, 0x01, diagnostic)
    assoc.kill()


def handle_association_request(event: Any, config: Config) -> None:
    """Refuse associations from calling AE titles or addresses outside the allowlists.

    Rejected with A-ASSOCIATE-RJ (permanent; "calling AE title not recognized" or
    "no reason given" for an address), before any data is exchanged.
    """
    security = config.security
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling = str(primitive.calling_ae_title).strip()
    address = str(assoc.requestor.address)
    if security.allowed_calling_ae_titles and calling not in security.allowed_calling_ae_titles:
        logger.warning("association from %s refused: calling AE %r not allowed", address, calling)
        _reject(assoc, 0x03)
        return
    if security.allowed_networks:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        allowed = ip is not None and any(
            ip in ipaddress.ip_network(net, strict=False) for net in security.allowed_networks
        )
        if not allowed:
            logger.warning(
                "association from %s (%s) refused: address not allowed", address, calling
            )
            _reject(assoc, 0x01)


def _quarantine(
    ctx: StoreContext,
    encoded: bytes,
    reason: str,
    status: int,
    sop_uid: str | None,
    calling: str,
    address: str,
) -> int:
    logger.error(
        "instance from %s (%s) quarantined, status 0x%04X: %s", calling, address, status, reason
    )
    try:
        path = ctx.spool.quarantine(
            encoded,
            reason,
            {
                "status": f"0x{status:04X}",
                "calling_ae_title": calling,
                "source_address": address,
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
                calling_ae_title=calling,
                source_address=address,
            )
    except (SpoolError, SQLAlchemyError) as exc:
        # The peer still gets the failure status; the bad input is only logged.
        logger.error("could not quarantine the instance: %s", exc)
    return status


def handle_store(event: Any, ctx: StoreContext) -> int:
    """C-STORE: validate, write durably, record, and only then answer success."""
    calling, address = _peer(event)
    requested_class = str(event.request.AffectedSOPClassUID)
    requested_sop = str(event.request.AffectedSOPInstanceUID)

    min_free = ctx.config.node.min_free_disk_mb * 1024 * 1024
    free = ctx.spool.free_bytes()
    if free < min_free:
        logger.error(
            "C-STORE %s from %s refused: %d MiB free, floor is node.min_free_disk_mb=%d",
            requested_sop,
            calling,
            free // 2**20,
            ctx.config.node.min_free_disk_mb,
        )
        return OUT_OF_RESOURCES_DISK

    encoded: bytes = event.encoded_dataset(include_meta=True)
    try:
        ds: Dataset = event.dataset
        # Force a full parse now: a truncated or garbled stream must fail here, not later.
        for _ in ds:
            pass
    except Exception as exc:
        return _quarantine(
            ctx,
            encoded,
            f"data set could not be decoded: {exc}",
            CANNOT_UNDERSTAND,
            requested_sop,
            calling,
            address,
        )

    try:
        study_uid = validate_uid(ds.get("StudyInstanceUID"), name="StudyInstanceUID")
        series_uid = validate_uid(ds.get("SeriesInstanceUID"), name="SeriesInstanceUID")
        sop_uid = validate_uid(ds.get("SOPInstanceUID"), name="SOPInstanceUID")
        sop_class = validate_uid(ds.get("SOPClassUID"), name="SOPClassUID")
    except InvalidUIDError as exc:
        return _quarantine(ctx, encoded, str(exc), MISSING_UID, requested_sop, calling, address)

    if sop_class != requested_class or sop_uid != requested_sop:
        return _quarantine(
            ctx,
            encoded,
            f"header SOP Class/Instance ({sop_class}, {sop_uid}) does not match the C-STORE "
            f"request ({requested_class}, {requested_sop})",
            SOP_CLASS_MISMATCH,
            sop_uid,
            calling,
            address,
        )

    if not any(k in ds for k in _PIXEL_KEYWORDS):
        return _quarantine(
            ctx,
            encoded,
            "no Pixel Data in an image storage instance",
            NO_PIXEL_DATA,
            sop_uid,
            calling,
            address,
        )

    facts = InstanceFacts(
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        view_position=_text(ds, "ViewPosition"),
        sop_class_uid=sop_class,
        calling_ae_title=calling,
    )
    rule = match_rule(ctx.config.routing, facts)
    if rule is None and ctx.config.routing.unmatched == "refuse":
        logger.warning(
            "C-STORE %s from %s refused: no routing rule matches (modality %r, body part %r, "
            "view %r)",
            sop_uid,
            calling,
            facts.modality,
            facts.body_part,
            facts.view_position,
        )
        return REFUSED_NOT_AUTHORIZED

    received = ReceivedInstance(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=sop_class,
        transfer_syntax_uid=str(event.context.transfer_syntax),
        modality=facts.modality,
        body_part=facts.body_part,
        view_position=facts.view_position,
        patient_id=_text(ds, "PatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        calling_ae_title=calling,
        source_address=address,
    )
    try:
        with session_scope(ctx.sessions) as session:
            existing = stored_sha256(session, sop_uid)
        if existing is not None:
            if existing == hashlib.sha256(encoded).hexdigest():
                logger.info("duplicate %s from %s acknowledged, already stored", sop_uid, calling)
            else:
                # Same UID, other bytes: another transfer syntax, or a sender reusing UIDs.
                # The first copy stays, as the UID promises; a person may want to look.
                logger.warning(
                    "%s from %s differs from the stored instance of that SOP Instance UID "
                    "(other transfer syntax or other content); acknowledged, the first is kept",
                    sop_uid,
                    calling,
                )
            return SUCCESS
    except SQLAlchemyError as exc:
        logger.error("database unavailable while receiving %s: %s", sop_uid, exc)
        return OUT_OF_RESOURCES_DATABASE

    try:
        stored = ctx.spool.store_instance(study_uid, series_uid, sop_uid, encoded)
    except SpoolError as exc:
        logger.error("C-STORE %s from %s failed: %s", sop_uid, calling, exc)
        return OUT_OF_RESOURCES_SPOOL

    try:
        with session_scope(ctx.sessions) as session:
            is_new = record_instance(session, received, stored, rule)
    except IntegrityError:
        # Another association recorded the same instance between our check and insert.
        logger.info("duplicate %s from %s recorded concurrently", sop_uid, calling)
        return SUCCESS
    except SQLAlchemyError as exc:
        # The file stays in the spool; startup reconciliation indexes it. The peer retries.
        logger.error("could not record %s in the database: %s", sop_uid, exc)
        return OUT_OF_RESOURCES_DATABASE
    logger.info(
        "stored %s (study %s, %s, rule %s) from %s%s",
        sop_uid,
        study_uid,
        facts.modality or "?",
        rule or "none",
        calling,
        "" if is_new else " (duplicate)",
    )
    return SUCCESS
