"""pynetdicom event handlers: plain functions taking the event (and bound dependencies) and
returning a status. No inference here; they only check, store durably and record, through
:func:`dicomnode.intake.intake` (the status codes are listed there).
"""

from __future__ import annotations

import logging
from typing import Any

from dicomnode.config import Config
from dicomnode.guard import GuardedConnection, RefusalLog
from dicomnode.intake import (
    OUT_OF_RESOURCES_DISK,
    OUT_OF_RESOURCES_SPOOL,
    IntakeContext,
    Sender,
    check_free_space,
    file_meta,
    intake,
)

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
# Refusals before association are logged once per peer and reason (a scanner or an attacker
# retrying every second must not flood the log).
_refusals = RefusalLog()


def _peer(event: Any) -> tuple[str, str]:
    requestor = event.assoc.requestor
    return str(requestor.ae_title).strip(), str(requestor.address)


def handle_echo(event: Any) -> int:
    """C-ECHO: the node is alive."""
    ae, address = _peer(event)
    logger.debug("C-ECHO from %s at %s", ae, address)
    return SUCCESS


def _reject(assoc: Any, result: int, source: int, diagnostic: int) -> None:
    # As pynetdicom's own ACSE does: queue the A-ASSOCIATE-RJ, then stop the DUL, which waits
    # until the PDU has been sent, so the peer sees a rejection rather than a dropped socket.
    assoc.acse.send_reject(result, source, diagnostic)
    assoc.kill()


def handle_association_request(event: Any, config: Config) -> None:
    """Refuse associations from calling AE titles or addresses outside the allowlists
    (A-ASSOCIATE-RJ permanent: "calling AE title not recognized", or "no reason given" for an
    address), and, once allowed, take an association slot from the connection guard
    (A-ASSOCIATE-RJ transient "local limit exceeded" when none is free)."""
    security = config.security
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling = str(primitive.calling_ae_title).strip()
    address = str(assoc.requestor.address)
    sock = getattr(assoc.dul.socket, "socket", None)
    guard = sock.guard if isinstance(sock, GuardedConnection) else None
    refusals = guard.refusals if guard is not None else _refusals
    if security.allowed_calling_ae_titles and calling not in security.allowed_calling_ae_titles:
        refusals.warning(address, f"calling AE {calling!r} not allowed")
        _reject(assoc, 0x01, 0x01, 0x03)
        return
    if guard is not None and not guard.address_allowed(address):
        refusals.warning(address, "address not in security.allowed_networks")
        _reject(assoc, 0x01, 0x01, 0x01)
        return
    if (
        guard is not None
        and isinstance(sock, GuardedConnection)
        and guard.associate(sock, calling) is not None
    ):
        _reject(assoc, 0x02, 0x03, 0x02)


def handle_store(event: Any, ctx: IntakeContext) -> int:
    """C-STORE: validate, write durably, record, and only then answer success."""
    calling, address = _peer(event)
    requested = (str(event.request.AffectedSOPClassUID), str(event.request.AffectedSOPInstanceUID))
    low = check_free_space(ctx)
    if low is not None:
        logger.error("C-STORE %s from %s refused: %s", requested[1], calling, low)
        return OUT_OF_RESOURCES_DISK
    sender = Sender(calling, address, int(event.assoc.requestor.port or 0))
    meta = file_meta(
        requested[0],
        requested[1],
        str(event.context.transfer_syntax),
        sender,
        ctx.config.node.ae_title,
    )
    body = event.request.DataSet.getvalue()
    try:
        return intake(ctx, body, meta, sender, requested=requested)
    except Exception:
        # pynetdicom would answer 0xC211, which senders take as permanent; an unforeseen
        # failure here is the node's, so answer out-of-resources and let the sender retry.
        logger.exception("C-STORE %s from %s failed unexpectedly", requested[1], calling)
        return OUT_OF_RESOURCES_SPOOL
