"""Delivery of report objects: one database row per object and destination, retried with
exponential backoff and jitter until delivered; refused objects and exhausted retries stop
for a person (``dicomnode status`` lists them, ``dicomnode retry`` sends them again).

Rows live in the database, so a restart resumes every pending delivery. A sender claims a row
by naming itself in ``claimed_by`` and pushing ``next_attempt_at`` to the claim's expiry
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two node processes never send the same object
at the same time. The claim lasts :func:`claim_seconds`, derived from the destinations'
timeouts, and every answer from the PACS renews it; each object's outcome is recorded as soon
as the PACS answers, so a crash re-sends at most the object in flight. A restarted node takes
its own unfinished claims back at once (:func:`release_own_claims`); a node that never comes
back holds them for one claim time at most.

A newer report of a study supersedes the older one's undelivered rows (pending, dead or
refused): they are never sent again. On PostgreSQL the row of the object being sent is locked
for its C-STORE, so supersession waits for an answer already in flight and nothing is sent
after it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import socket
import threading
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import Config, DeliveryConfig, DestinationConfig
from dicomnode.db import Delivery, DeliveryState, Study, session_scope, utcnow
from dicomnode.exceptions import DicomNodeError
from dicomnode.outage import DATABASE_DOWN, OutageLog
from dicomnode.sender import (
    Destination,
    StoreLink,
    StoreOutcome,
    StoreSCU,
    StoreStatus,
    TLSOptions,
)

logger = logging.getLogger(__name__)

# States a newer report of the study supersedes: everything not (yet) in the PACS.
_SUPERSEDABLE = (DeliveryState.PENDING, DeliveryState.DEAD, DeliveryState.REFUSED)


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


def claim_seconds(config: Config) -> float:
    """How long a claimed row stays hidden from other senders without an answer from the PACS.

    ``delivery.claim_seconds`` when set; otherwise the longest a healthy attempt can wait for
    one answer (TCP connect + association + one C-STORE response or idle network) on the
    slowest destination, plus one delivery interval.
    """
    delivery = config.delivery
    if delivery.claim_seconds > 0:
        return delivery.claim_seconds
    longest = max(
        (
            d.connection_timeout + d.acse_timeout + max(d.dimse_timeout, d.network_timeout)
            for d in delivery.destinations
        ),
        default=60.0,
    )
    return longest + delivery.check_interval_seconds


def node_identity(config: Config) -> str:
    """The sender's name in ``claimed_by``: the same after a restart of the same node (host and
    data directory), so the restarted node recognises its own unfinished claims."""
    where = f"{socket.gethostname()}:{Path(config.node.data_dir).resolve()}"
    if len(where) > 120:
        where = where[:80] + "~" + hashlib.sha256(where.encode()).hexdigest()[:16]
    return where


def release_own_claims(session: Session, identity: str) -> int:
    """Make due at once the rows an earlier run of this node claimed and never finished."""
    rows = session.scalars(
        select(Delivery)
        .where(
            Delivery.state == DeliveryState.PENDING,
            Delivery.claimed_by.like(f"{identity}#%"),
        )
        .with_for_update()
    ).all()
    now = utcnow()
    for row in rows:
        row.claimed_by = None
        row.next_attempt_at = now
        row.updated_at = now
    if rows:
        logger.warning(
            "%d delivery(ies) left in flight by this node's previous run resumed now", len(rows)
        )
    return len(rows)


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


def supersede_older(session: Session, study: Study, current: Sequence[OutputObject]) -> int:
    """Supersede the study's undelivered rows (pending, dead, refused) of objects its new report
    no longer contains: they are never sent again, so the PACS never receives a stale draft.

    A study reopened by later images is reported again under new UIDs, and the new report names
    the older drafts as its predecessors. Delivered rows stay as they are: their objects are in
    the PACS, and the newer report says it replaces them. On PostgreSQL the rows are locked
    first, so an older object whose C-STORE is in flight is answered (and recorded) before it
    is superseded, never after.
    """
    keep = {obj.sop_instance_uid for obj in current}
    stale = session.scalars(
        select(Delivery)
        .where(Delivery.study_id == study.id, Delivery.state.in_(_SUPERSEDABLE))
        .order_by(Delivery.id)
        .with_for_update()
    ).all()
    now = utcnow()
    count = 0
    for row in stale:
        if row.sop_instance_uid in keep:
            continue
        row.state = DeliveryState.SUPERSEDED
        row.superseded_at = now
        row.claimed_by = None
        row.updated_at = now
        count += 1
    if count:
        logger.info(
            "%d undelivered object(s) of an older report of %s superseded; they are not sent",
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


def _claim_due(session: Session, limit: int, token: str, seconds: float) -> list[Delivery]:
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
        if row.claimed_by is not None:
            logger.warning(
                "claim of %s by %s expired; sending it again", row.sop_instance_uid, row.claimed_by
            )
        row.claimed_by = token
        row.next_attempt_at = now + timedelta(seconds=seconds)
    return rows


def _renew_claims(session: Session, token: str, seconds: float) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.claimed_by == token, Delivery.state == DeliveryState.PENDING)
        .values(next_attempt_at=utcnow() + timedelta(seconds=seconds))
    )


def _apply_outcome(row: Delivery, outcome: StoreOutcome, delivery: DeliveryConfig) -> None:
    now = utcnow()
    row.attempts += 1
    row.updated_at = now
    row.claimed_by = None
    row.last_status = outcome.status_code
    # A plain success leaves no error behind; a warning's meaning is kept for the record.
    success = outcome.status is StoreStatus.SUCCESS
    row.last_error = None if success else outcome.reason or None
    if row.state != DeliveryState.PENDING:
        # Superseded while its C-STORE was in flight (SQLite does not lock the row): record
        # what happened, but a superseded row stays superseded.
        logger.warning(
            "%s was superseded while being sent to %s (%s)",
            row.sop_instance_uid,
            row.destination,
            outcome.status.value,
        )
        return
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


@dataclass
class _Run:
    """One delivery run's claim: its token, claim time and how it records outcomes."""

    sessions: sessionmaker[Session]
    config: Config
    token: str
    seconds: float
    # PostgreSQL: hold the row's lock across its C-STORE (see the module docstring). SQLite
    # would lock the whole database, stalling the listener, so it checks just before sending.
    hold_lock: bool = field(default=False)

    def record(self, row_id: int, outcome: StoreOutcome) -> None:
        with session_scope(self.sessions) as session:
            row = session.get(Delivery, row_id, with_for_update=True, populate_existing=True)
            if row is not None and row.claimed_by == self.token:
                _apply_outcome(row, outcome, self.config.delivery)

    def fail(self, row_id: int, reason: str, ds: Dataset | None = None) -> None:
        """Record a transient failure that happened before any C-STORE: the row waits with
        ``reason`` and is retried with backoff, like any transient failure."""
        uids = (str(ds.SOPInstanceUID), str(ds.SOPClassUID)) if ds is not None else ("", "")
        self.record(row_id, StoreOutcome(*uids, StoreStatus.TRANSIENT, None, reason))

    def send(self, link: StoreLink, row_id: int, ds: Dataset) -> bool:
        """C-STORE ``ds`` if its row is still ours and pending; record the outcome at once."""
        with session_scope(self.sessions) as session:
            _renew_claims(session, self.token, self.seconds)
        with session_scope(self.sessions) as session:
            row = session.get(Delivery, row_id, with_for_update=True, populate_existing=True)
            if row is None or row.claimed_by != self.token or row.state != DeliveryState.PENDING:
                logger.info(
                    "delivery #%d is no longer ours to send (superseded or expired)", row_id
                )
                return False
            if self.hold_lock:
                _apply_outcome(row, link.store(ds), self.config.delivery)
                return True
        self.record(row_id, link.store(ds))
        return True


def deliver_due(
    sessions: sessionmaker[Session],
    config: Config,
    data_dir: Path,
    limit: int = 200,
    *,
    identity: str | None = None,
) -> int:
    """Send every due delivery, one association per destination. Returns rows attempted."""
    seconds = claim_seconds(config)
    token = f"{identity or node_identity(config)}#{uuid.uuid4().hex[:12]}"
    with session_scope(sessions) as session:
        claimed = [
            (r.id, r.destination, r.path) for r in _claim_due(session, limit, token, seconds)
        ]
        dialect = session.get_bind().dialect.name
    if not claimed:
        return 0
    run = _Run(sessions, config, token, seconds, hold_lock=dialect != "sqlite")
    by_name = {d.name: d for d in config.delivery.destinations}
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for row_id, name, path in claimed:
        groups[name].append((row_id, path))
    attempted = 0
    for name, items in groups.items():
        dest_config = by_name.get(name)
        if dest_config is None:
            for row_id, _ in items:
                run.fail(
                    row_id,
                    f"destination {name!r} is no longer configured; add it back or retry later",
                )
                attempted += 1
            continue
        # Read every object first: one missing or damaged file must fail its own row (with
        # backoff, then dead letters), not the whole run and every row queued behind it.
        readable: list[tuple[int, Dataset]] = []
        for row_id, path in items:
            try:
                readable.append((row_id, dcmread(data_dir / path)))
            except (OSError, InvalidDicomError) as exc:
                run.fail(
                    row_id,
                    f"cannot read the report object {path}: {exc}; restore the file (dead "
                    "letters are sent again by `dicomnode retry`)",
                )
                attempted += 1
        if not readable:
            continue
        done: set[int] = set()
        try:
            destination = to_destination(dest_config, config.delivery)
            scu = StoreSCU(config.delivery.calling_ae_title)
            with scu.open(destination, [ds for _, ds in readable]) as link:
                for row_id, ds in readable:
                    done.add(row_id)
                    attempted += run.send(link, row_id, ds)
        except (DicomNodeError, ValueError, OSError) as exc:
            # A misconfigured destination (e.g. a TLS file gone) waits with the reason; it
            # must not abort the run and hold back every other destination's rows.
            logger.error("destination %r cannot be used: %s", name, exc)
            for row_id, ds in readable:
                if row_id in done:
                    continue
                run.fail(row_id, f"destination {name!r} cannot be used: {exc}", ds)
                attempted += 1
    return attempted


class DeliveryJob:
    """The scheduler's delivery run. Its first successful run takes back the claims this node
    left in flight when it last stopped (crash, kill, power loss), so they go out at once."""

    def __init__(self, sessions: sessionmaker[Session], config: Config, data_dir: Path) -> None:
        self.sessions = sessions
        self.config = config
        self.data_dir = data_dir
        self.identity = node_identity(config)
        self._resumed = False
        self.outage = OutageLog("reports wait; the next delivery run retries")
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            try:
                if not self._resumed:
                    with session_scope(self.sessions) as session:
                        release_own_claims(session, self.identity)
                    self._resumed = True
                deliver_due(self.sessions, self.config, self.data_dir, identity=self.identity)
            except (SQLAlchemyError, OSError) as exc:
                # The run's claims may be left behind (the database went away mid-run): the
                # next run takes them back at once rather than waiting for them to expire.
                self._resumed = False
                if isinstance(exc, DATABASE_DOWN):
                    self.outage.failed(exc, "delivering reports")
                else:
                    logger.error("delivery run failed, will retry: %s", exc)
            else:
                self.outage.ok()


@dataclass
class RetryResult:
    """What ``dicomnode retry`` did: rows queued again, and why others were not."""

    queued: list[int]
    skipped: dict[int, str]


def _not_retried_reason(row: Delivery) -> str:
    if row.state == DeliveryState.SUPERSEDED:
        when = row.superseded_at.isoformat(timespec="seconds") if row.superseded_at else "?"
        return (
            f"superseded at {when} by a newer report of study {row.study.study_instance_uid}; "
            "sending it would put a stale draft in the PACS (the newer report is sent instead)"
        )
    if row.state == DeliveryState.DELIVERED:
        return "already delivered"
    return "already pending (the running node sends it)"


def retry_deliveries(session: Session, ids: Sequence[int] = ()) -> RetryResult:
    """Send refused or dead deliveries again (all of them when ``ids`` is empty).

    Superseded rows are never sent again: named explicitly, each is skipped with the reason;
    with no ids, the count of superseded rows left alone is reported under id 0.
    """
    result = RetryResult([], {})
    query = select(Delivery)
    if ids:
        query = query.where(Delivery.id.in_(list(ids)))
    else:
        query = query.where(Delivery.state.in_([DeliveryState.DEAD, DeliveryState.REFUSED]))
    now = utcnow()
    rows = {row.id: row for row in session.scalars(query.with_for_update()).all()}
    for row_id in ids:
        if row_id not in rows:
            result.skipped[row_id] = "no such delivery"
    for row in rows.values():
        if row.state not in (DeliveryState.DEAD, DeliveryState.REFUSED):
            result.skipped[row.id] = _not_retried_reason(row)
            continue
        row.state = DeliveryState.PENDING
        row.attempts = 0
        row.claimed_by = None
        row.next_attempt_at = now
        row.updated_at = now
        result.queued.append(row.id)
    if not ids:
        superseded = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.state == DeliveryState.SUPERSEDED)
        )
        if superseded:
            result.skipped[0] = (
                f"{superseded} superseded delivery(ies) not sent: newer reports of their "
                "studies replaced them"
            )
    result.queued.sort()
    return result
