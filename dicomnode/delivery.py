"""Delivery of report objects: one database row per object and destination, retried with
exponential backoff and jitter until delivered; refused objects and exhausted retries stop
for a person (``dicomnode status`` lists them, ``dicomnode retry`` sends them again).

Rows live in the database, so a restart resumes every pending delivery. A row is claimed by
pushing its ``next_attempt_at`` past the send (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so
two node processes never send the same object at the same time. Sending the same object twice
after a crash is harmless: its UIDs are deterministic and the PACS keeps one copy.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import Config, DeliveryConfig, DestinationConfig
from dicomnode.db import Delivery, DeliveryState, Study, session_scope, utcnow
from dicomnode.exceptions import DicomNodeError
from dicomnode.sender import Destination, StoreOutcome, StoreStatus, TLSOptions, send_objects

logger = logging.getLogger(__name__)

# How long a claimed row is hidden from other senders while an attempt is in flight.
CLAIM_SECONDS = 300.0


@dataclass(frozen=True)
class OutputObject:
    """A written report object, relative to the data directory."""

    sop_instance_uid: str
    sop_class_uid: str
    path: str


def to_destination(config: DestinationConfig, delivery: DeliveryConfig) -> Destination:
    tls = None
    if config.tls.enabled:
        tls = TLSOptions(
            ca_file=config.tls.ca_file,
            cert_file=config.tls.cert_file,
            key_file=config.tls.key_file,
            check_hostname=config.tls.verify_hostname,
        )
    return Destination(
        ae_title=config.ae_title,
        host=config.host,
        port=config.port,
        tls=tls,
        acse_timeout=config.acse_timeout,
        dimse_timeout=config.dimse_timeout,
        network_timeout=config.network_timeout,
        connection_timeout=config.connection_timeout,
    )


def destinations_for(config: Config, calling_ae_title: str | None) -> list[DestinationConfig]:
    """The destinations of one study's reports: those receiving ``all``, and those receiving
    their ``own`` studies when the study came from their AE title.

    A sender's address and port must be configured: an SCU's own port is ephemeral.
    """
    chosen = [
        d
        for d in config.delivery.destinations
        if d.receives == "all" or (calling_ae_title and d.ae_title == calling_ae_title)
    ]
    if not chosen and config.delivery.destinations:
        logger.warning(
            "no destination receives the reports of studies from AE %r; add one under "
            '[[delivery.destinations]] (receives = "own" to send them back to it)',
            calling_ae_title,
        )
    return chosen


def enqueue_deliveries(
    session: Session,
    study: Study,
    objects: Sequence[OutputObject],
    destinations: Sequence[DestinationConfig],
) -> int:
    """Add a pending row per object and destination; existing rows are left alone."""
    added = 0
    now = utcnow()
    for dest in destinations:
        for obj in objects:
            exists = session.scalar(
                select(Delivery.id).where(
                    Delivery.sop_instance_uid == obj.sop_instance_uid,
                    Delivery.destination == dest.name,
                )
            )
            if exists is not None:
                continue
            session.add(
                Delivery(
                    study_id=study.id,
                    destination=dest.name,
                    sop_instance_uid=obj.sop_instance_uid,
                    sop_class_uid=obj.sop_class_uid,
                    path=obj.path,
                    state=DeliveryState.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            added += 1
    return added


def supersede_pending(session: Session, study: Study, current: Sequence[OutputObject]) -> int:
    """Cancel the study's pending deliveries of objects its new report no longer contains.

    A study reopened by later images is reported again under new UIDs; sending the older
    draft as well would put two different drafts in the PACS.
    """
    keep = {obj.sop_instance_uid for obj in current}
    stale = session.scalars(
        select(Delivery).where(
            Delivery.study_id == study.id, Delivery.state == DeliveryState.PENDING
        )
    ).all()
    count = 0
    for row in stale:
        if row.sop_instance_uid not in keep:
            row.state = DeliveryState.SUPERSEDED
            row.updated_at = utcnow()
            count += 1
    if count:
        logger.info(
            "%d pending delivery(ies) of an older report of %s superseded",
            count,
            study.study_instance_uid,
        )
    return count


def backoff_seconds(
    attempts: int, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Delay before the next attempt: exponential, capped, with "equal jitter".

    Half the capped exponential delay is fixed and half random, so retries of many objects
    spread out without any retry coming sooner than half its nominal delay.
    """
    rng = rng or random.Random()
    nominal = min(maximum, initial * 2 ** max(0, attempts - 1))
    return nominal / 2 + rng.uniform(0, nominal / 2)


def _claim_due(session: Session, limit: int) -> list[Delivery]:
    now = utcnow()
    rows = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.state == DeliveryState.PENDING, Delivery.next_attempt_at <= now)
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
    )
    for row in rows:
        row.next_attempt_at = now + timedelta(seconds=CLAIM_SECONDS)
    return rows


def _apply_outcome(row: Delivery, outcome: StoreOutcome, delivery: DeliveryConfig) -> None:
    now = utcnow()
    row.attempts += 1
    row.updated_at = now
    row.last_status = outcome.status_code
    # A plain success leaves no error behind; a warning's meaning is kept for the record.
    success = outcome.status is StoreStatus.SUCCESS
    row.last_error = None if success else outcome.reason or None
    if outcome.stored:
        row.state = DeliveryState.DELIVERED
        logger.info("delivered %s to %s", row.sop_instance_uid, row.destination)
    elif outcome.status is StoreStatus.REFUSED:
        row.state = DeliveryState.REFUSED
        logger.error(
            "%s refused %s: %s (not retried; fix the cause, then `dicomnode retry %d`)",
            row.destination,
            row.sop_instance_uid,
            outcome.reason,
            row.id,
        )
    elif row.attempts >= delivery.max_attempts:
        row.state = DeliveryState.DEAD
        logger.error(
            "delivery of %s to %s failed %d times, moved to dead letters: %s",
            row.sop_instance_uid,
            row.destination,
            row.attempts,
            outcome.reason,
        )
    else:
        delay = backoff_seconds(
            row.attempts, delivery.backoff_initial_seconds, delivery.backoff_max_seconds
        )
        row.next_attempt_at = now + timedelta(seconds=delay)
        logger.warning(
            "delivery of %s to %s failed (attempt %d of %d), next in %.1f s: %s",
            row.sop_instance_uid,
            row.destination,
            row.attempts,
            delivery.max_attempts,
            delay,
            outcome.reason,
        )


def deliver_due(
    sessions: sessionmaker[Session], config: Config, data_dir: Path, limit: int = 200
) -> int:
    """Send every due delivery, one association per destination. Returns rows attempted."""
    with session_scope(sessions) as session:
        claimed = [(r.id, r.destination, r.path) for r in _claim_due(session, limit)]
    if not claimed:
        return 0
    by_name = {d.name: d for d in config.delivery.destinations}
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for row_id, name, path in claimed:
        groups[name].append((row_id, path))
    outcomes: dict[int, StoreOutcome] = {}
    for name, items in groups.items():
        dest_config = by_name.get(name)
        if dest_config is None:
            for row_id, _ in items:
                outcomes[row_id] = StoreOutcome(
                    "",
                    "",
                    StoreStatus.TRANSIENT,
                    None,
                    f"destination {name!r} is no longer configured; add it back or retry later",
                )
            continue
        # Read every object first: one missing or damaged file must fail its own row (with
        # backoff, then dead letters), not the whole run and every row queued behind it.
        readable: list[tuple[int, Dataset]] = []
        for row_id, path in items:
            try:
                readable.append((row_id, dcmread(data_dir / path)))
            except (OSError, InvalidDicomError) as exc:
                outcomes[row_id] = StoreOutcome(
                    "",
                    "",
                    StoreStatus.TRANSIENT,
                    None,
                    f"cannot read the report object {path}: {exc}; restore the file (dead "
                    "letters are sent again by `dicomnode retry`)",
                )
        if not readable:
            continue
        try:
            results = send_objects(
                to_destination(dest_config, config.delivery),
                [ds for _, ds in readable],
                calling_ae_title=config.delivery.calling_ae_title,
            )
        except (DicomNodeError, ValueError, OSError) as exc:
            # A misconfigured destination (e.g. a TLS file gone) waits with the reason; it
            # must not abort the run and hold back every other destination's rows.
            logger.error("destination %r cannot be used: %s", name, exc)
            results = [
                StoreOutcome(
                    str(ds.SOPInstanceUID),
                    str(ds.SOPClassUID),
                    StoreStatus.TRANSIENT,
                    None,
                    f"destination {name!r} cannot be used: {exc}",
                )
                for _, ds in readable
            ]
        for (row_id, _), outcome in zip(readable, results, strict=True):
            outcomes[row_id] = outcome
    with session_scope(sessions) as session:
        for row_id, outcome in outcomes.items():
            row = session.get(Delivery, row_id)
            if row is not None:
                _apply_outcome(row, outcome, config.delivery)
    return len(outcomes)


def delivery_job(sessions: sessionmaker[Session], config: Config, data_dir: Path) -> None:
    """Scheduler entry point: deliver what is due; errors are logged and retried next run."""
    try:
        deliver_due(sessions, config, data_dir)
    except (SQLAlchemyError, OSError) as exc:
        logger.error("delivery run failed, will retry: %s", exc)


def retry_deliveries(session: Session, ids: Sequence[int] = ()) -> int:
    """Send refused or dead deliveries again (all of them when ``ids`` is empty)."""
    query = select(Delivery).where(Delivery.state.in_([DeliveryState.DEAD, DeliveryState.REFUSED]))
    if ids:
        query = query.where(Delivery.id.in_(list(ids)))
    now = utcnow()
    rows = session.scalars(query).all()
    for row in rows:
        row.state = DeliveryState.PENDING
        row.attempts = 0
        row.next_attempt_at = now
        row.updated_at = now
    return len(rows)
