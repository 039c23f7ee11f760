"""Start-up reconciliation: the spool and the database agree before the node accepts more.

A crash between the atomic rename of an instance file and its database commit leaves a
complete file without a row. The peer never got a success status for it and will usually
resend, but the file is taken in here anyway, through the same :func:`~dicomnode.intake.intake`
as the live handler, with the sender recorded in its file meta; a file that intake refuses
now moves to the quarantine. Nothing on disk is ever orphaned.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from dicomnode.db import Instance, InstanceVersion, session_scope
from dicomnode.intake import IntakeContext, intake, split_file

logger = logging.getLogger(__name__)


def reconcile_spool(ctx: IntakeContext) -> int:
    """Remove partial files and take in complete files that have no row. Returns how many."""
    spool = ctx.spool
    spool.remove_partial_files()
    with session_scope(ctx.sessions) as session:
        known = set(session.scalars(select(Instance.path)).all())
        known.update(session.scalars(select(InstanceVersion.previous_path)).all())
        known.update(p for p in session.scalars(select(InstanceVersion.new_path)).all() if p)
    taken = 0
    for relative in spool.iter_instance_files():
        if relative in known:
            continue
        try:
            raw = spool.absolute(relative).read_bytes()
            meta, body, sender = split_file(raw)
        except Exception as exc:
            logger.error("spool file %s is unreadable and left in place: %s", relative, exc)
            continue
        status = intake(ctx, body, meta, sender, stored_as=relative)
        logger.warning(
            "spool file %s had no database row (interrupted store): status 0x%04X",
            relative,
            status,
        )
        taken += 1
    return taken
