"""The reporting worker: claims ready studies with a lease, runs the engine, writes the report
objects and queues their delivery.

Claiming uses ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers on
several machines share one queue; on SQLite, several workers on the one machine that holds the
database file share it too, their transactions serialized by ``BEGIN IMMEDIATE``. A worker
killed mid-study loses nothing: its lease expires and another worker (or the same one
restarted) redoes the study and writes objects with the same UIDs. While a study is being
reported its lease is renewed (:class:`LeaseHeartbeat`), so a slow engine keeps its study; the
lease only bounds how long a dead worker's study waits. An engine failure on one study marks
that study failed with the reason and the worker goes on. A database outage stops nothing: the
worker waits with backoff, logs once per outage, and resumes (:class:`OutageBackoff`).
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from dicomnode import studies as lifecycle
from dicomnode.config import Config
from dicomnode.db import (
    Delivery,
    Study,
    StudyState,
    WorkerRecord,
    check_schema,
    session_scope,
    utcnow,
)
from dicomnode.delivery import (
    OutputObject,
    destinations_for,
    enqueue_deliveries,
    supersede_older,
)
from dicomnode.outage import DATABASE_DOWN, OutageLog
from dicomnode.report import build_report_objects
from dicomnode.spool import Spool, write_durably
from dicomnode.wakeups import (
    QUEUED_CHANNEL,
    REPORTED_CHANNEL,
    NotificationListener,
    is_postgresql,
    notify,
)
from engine.exceptions import NotReportableError, StudyError
from engine.result import StudyReport

logger = logging.getLogger(__name__)

# After this many claims without a result (worker crashes, engine errors) a study fails.
MAX_STUDY_ATTEMPTS = 3

# Structured Report storage SOP classes share this prefix (PS3.4 B.5).
_SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."

T = TypeVar("T")


class OutageBackoff:
    """Waits out a database outage: exponential backoff, one error when it starts and one
    line when it ends, however many retries in between."""

    def __init__(self, initial: float, maximum: float, stop: threading.Event) -> None:
        self.initial = initial
        self.maximum = maximum
        self.stop = stop
        self.log = OutageLog(
            f"waiting and retrying with backoff (up to {maximum:.0f} s apart) until it is back"
        )
        self._delay = initial

    def failed(self, exc: BaseException, doing: str) -> None:
        """Log the outage if it is new, then sleep (interrupted by ``stop``)."""
        if self.log.failed(exc, doing):
            self._delay = self.initial
        else:
            self._delay = min(self.maximum, self._delay * 2)
        self.stop.wait(self._delay)

    def ok(self) -> None:
        self.log.ok()

    def call(self, func: Callable[[], T], doing: str) -> T | None:
        """``func()``, retried through outages; ``None`` if stopped before it succeeded."""
        while not self.stop.is_set():
            try:
                result = func()
            except DATABASE_DOWN as exc:
                self.failed(exc, doing)
                continue
            self.ok()
            return result
        return None


def wait_for_database(db_engine: Engine, backoff: OutageBackoff) -> bool:
    """Check the schema, waiting with backoff while the database is down. ``False`` if stopped;
    a schema at the wrong revision raises :class:`~dicomnode.exceptions.DatabaseError`."""

    def check() -> bool:
        check_schema(db_engine)
        return True

    return backoff.call(check, "checking the schema at start-up") is True


class LeaseHeartbeat:
    """Renews the lease on the studies a worker is reporting, every ``interval`` seconds, so a
    slow engine does not lose them; stops when the block ends. Renewal keeps a lease only
    while this worker still holds it: an expired lease already taken by another stays lost."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        worker_id: str,
        study_ids: Sequence[int],
        lease_seconds: float,
        interval: float,
        max_seconds: float = float("inf"),
    ) -> None:
        self.sessions = sessions
        self.max_seconds = max_seconds
        self.worker_id = worker_id
        self.study_ids = list(study_ids)
        self.lease_seconds = lease_seconds
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def renew(self) -> int:
        with session_scope(self.sessions) as session:
            result = session.execute(
                update(Study)
                .where(
                    Study.id.in_(self.study_ids),
                    Study.lease_owner == self.worker_id,
                    Study.state == StudyState.REPORTING,
                )
                .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_seconds))
            )
            session.execute(
                update(WorkerRecord)
                .where(WorkerRecord.id == self.worker_id)
                .values(last_seen_at=utcnow())
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.interval):
            if time.monotonic() - started > self.max_seconds:
                logger.error(
                    "still reporting after %.0f s (engine.max_report_seconds): the lease is no "
                    "longer renewed, so another worker takes the studies once it expires",
                    self.max_seconds,
                )
                return
            try:
                renewed = self.renew()
            except Exception as exc:  # never let the heartbeat die silently; retry next beat
                logger.warning("could not renew the lease, retrying: %s", exc)
                continue
            if renewed < len(self.study_ids):
                logger.warning(
                    "%d of %d lease(s) could not be renewed: another worker took them",
                    len(self.study_ids) - renewed,
                    len(self.study_ids),
                )


class ReportEngine(Protocol):
    """What the worker needs of :class:`engine.runtime.Engine`."""

    def report_studies(
        self, studies: Sequence[Sequence[Dataset]], *, return_exceptions: bool
    ) -> list[StudyReport | StudyError]: ...


@dataclass(frozen=True)
class ClaimedStudy:
    id: int
    study_instance_uid: str
    revision: int
    instance_paths: tuple[str, ...]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ReportingWorker:
    """Turns queued studies into report objects and pending deliveries."""

    def __init__(
        self,
        config: Config,
        sessions: sessionmaker[Session],
        engine: ReportEngine,
        *,
        worker_id: str | None = None,
    ) -> None:
        if not isinstance(config, Config):
            raise TypeError("config must be a dicomnode.config.Config")
        self.config = config
        self.sessions = sessions
        self.engine = engine
        self.worker_id = worker_id or default_worker_id()
        self.data_dir = Path(config.node.data_dir).resolve()
        self.spool = Spool(self.data_dir / "spool")
        self.outputs_dir = self.data_dir / "outputs"
        self.stop = threading.Event()
        # Set when there may be work: studies queued in this process, or a notification from
        # another host's node (PostgreSQL); the idle poll is only the safety net.
        self.wake = threading.Event()
        # Called after a report's objects and deliveries are committed (runs delivery now).
        self.on_reported: Callable[[], None] | None = None
        self.backoff = OutageBackoff(
            config.worker.db_retry_initial_seconds, config.worker.db_retry_max_seconds, self.stop
        )

    def claim(self, limit: int) -> list[ClaimedStudy]:
        """Lease up to ``limit`` queued studies (or studies whose lease expired)."""
        now = utcnow()
        lease = timedelta(seconds=self.config.engine.lease_seconds)
        with session_scope(self.sessions) as session:
            studies = session.scalars(
                select(Study)
                .where(
                    or_(
                        Study.state == StudyState.QUEUED,
                        and_(Study.state == StudyState.REPORTING, Study.lease_expires_at < now),
                    )
                )
                .order_by(Study.last_instance_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            claimed = []
            for study in studies:
                if study.state == StudyState.REPORTING:
                    logger.warning(
                        "lease of %s held by %s expired; redoing it",
                        study.study_instance_uid,
                        study.lease_owner,
                    )
                study.attempts += 1
                if study.attempts > MAX_STUDY_ATTEMPTS:
                    # Keep the last engine error (if any): it is usually the cause.
                    last = f"; last error: {study.error}" if study.error else ""
                    lifecycle.fail(
                        study,
                        f"no result after {MAX_STUDY_ATTEMPTS} attempts (worker crashes or "
                        f"timeouts){last}; check the worker logs, then `dicomnode requeue "
                        f"{study.study_instance_uid}`",
                    )
                    continue
                lifecycle.claim(study, self.worker_id, now + lease)
                paths = lifecycle.routable_instance_paths(session, study.id)
                claimed.append(
                    ClaimedStudy(study.id, study.study_instance_uid, study.revision, tuple(paths))
                )
        return claimed

    def _load(self, claimed: ClaimedStudy) -> list[Dataset]:
        return [pydicom.dcmread(self.spool.absolute(p)) for p in claimed.instance_paths]

    def _write_objects(self, study_uid: str, objects: Sequence[Dataset]) -> list[OutputObject]:
        written = []
        for ds in objects:
            relative = f"outputs/{study_uid}/{ds.SOPInstanceUID}.dcm"
            written.append(OutputObject(str(ds.SOPInstanceUID), str(ds.SOPClassUID), relative))
            if (self.data_dir / relative).exists():
                # Same UID: the same images reported by the same engine, written by an earlier
                # holder of the lease and perhaps queued or delivered already. Rewriting would
                # change its bytes (content times) under that UID, so the first copy stays.
                logger.info("%s already written; keeping it", relative)
                continue
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            write_durably(self.data_dir / relative, buffer.getvalue(), self.data_dir)
        return written

    def _finish(
        self,
        claimed: ClaimedStudy,
        *,
        objects: Sequence[OutputObject] = (),
        error: str | None = None,
        not_reportable: str | None = None,
    ) -> None:
        reported = False
        with session_scope(self.sessions) as session:
            study = session.get(Study, claimed.id, with_for_update=True)
            if study is None or study.lease_owner != self.worker_id:
                logger.warning(
                    "lost the lease on %s before finishing; the result is dropped "
                    "(the new holder writes the same objects)",
                    claimed.study_instance_uid,
                )
                return
            # A result (or a newer revision) ends this round: attempts count claims without a
            # result, so a study reopened by later images is not failed for earlier rounds.
            study.attempts = 0
            if study.revision != claimed.revision:
                # New instances arrived while reporting: wait for stability and report again.
                lifecycle.finish_changed(study)
                logger.info(
                    "study %s changed while reporting; requeued after stability",
                    claimed.study_instance_uid,
                )
                return
            if error is not None:
                lifecycle.fail(study, error)
                logger.error("study %s failed: %s", claimed.study_instance_uid, error)
                return
            if not_reportable is not None:
                lifecycle.refuse(study, not_reportable)
                logger.warning(
                    "study %s not reportable, no report written: %s",
                    claimed.study_instance_uid,
                    not_reportable,
                )
                return
            lifecycle.finish(study)
            supersede_older(session, study, objects)
            added = enqueue_deliveries(
                session, study, objects, destinations_for(self.config, study.calling_ae_title)
            )
            notify(session, REPORTED_CHANNEL)
            reported = True
            logger.info(
                "study %s reported: %d object(s), %d delivery(ies) queued",
                claimed.study_instance_uid,
                len(objects),
                added,
            )
        if reported and self.on_reported is not None:
            self.on_reported()

    def _release(self, claimed: ClaimedStudy, reason: str) -> None:
        """Give a study back to the queue after an unexpected failure (counted in attempts)."""
        with session_scope(self.sessions) as session:
            study = session.get(Study, claimed.id, with_for_update=True)
            if study is not None and study.lease_owner == self.worker_id:
                lifecycle.release(study, reason)

    def _earlier_reports(self, claimed: ClaimedStudy) -> list[Dataset]:
        """The headers of the SR documents queued for this study by its earlier reports: the
        drafts a new report replaces (its Predecessor Documents Sequence)."""
        with session_scope(self.sessions) as session:
            rows = session.execute(
                select(Delivery.sop_instance_uid, Delivery.path)
                .where(
                    Delivery.study_id == claimed.id,
                    Delivery.sop_class_uid.startswith(_SR_CLASS_PREFIX),
                )
                .order_by(Delivery.id)
            ).all()
        headers: dict[str, Dataset] = {}
        for uid, path in rows:
            if uid in headers:
                continue
            try:
                headers[uid] = pydicom.dcmread(self.data_dir / path, stop_before_pixels=True)
            except (OSError, InvalidDicomError) as exc:
                logger.warning(
                    "earlier report %s of %s is gone (%s); the new one cannot name it",
                    uid,
                    claimed.study_instance_uid,
                    exc,
                )
        return list(headers.values())

    def _finish_retrying(
        self,
        claimed: ClaimedStudy,
        *,
        objects: Sequence[OutputObject] = (),
        error: str | None = None,
        not_reportable: str | None = None,
    ) -> None:
        # A finished result waits out a database outage rather than being dropped: the
        # heartbeat keeps the lease once the database is back, and _finish checks it.
        self.backoff.call(
            lambda: self._finish(
                claimed, objects=objects, error=error, not_reportable=not_reportable
            ),
            f"recording the result of {claimed.study_instance_uid}",
        )

    def wait_for_database(self, db_engine: Engine) -> bool:
        """:func:`wait_for_database` with this worker's backoff and stop event."""
        return wait_for_database(db_engine, self.backoff)

    def register(self) -> None:
        """Record this worker (lease, heartbeat) for ``dicomnode status``."""
        engine_identity = getattr(self.engine, "identity", None)
        name = f"{engine_identity.name} {engine_identity.version}" if engine_identity else None
        with session_scope(self.sessions) as session:
            record = session.get(WorkerRecord, self.worker_id)
            if record is None:
                record = WorkerRecord(id=self.worker_id, batches=0)
                session.add(record)
            record.engine_name = name
            record.lease_seconds = self.config.engine.lease_seconds
            record.heartbeat_seconds = self.config.engine.effective_heartbeat_seconds
            record.started_at = record.last_seen_at = utcnow()
            record.stopped_at = None

    def _record_latency(self, seconds: float) -> None:
        with session_scope(self.sessions) as session:
            record = session.get(WorkerRecord, self.worker_id)
            if record is None:
                return
            record.batches += 1
            record.last_batch_seconds = seconds
            record.max_batch_seconds = max(record.max_batch_seconds or 0.0, seconds)
            record.last_seen_at = utcnow()
        if seconds > self.config.engine.lease_seconds:
            logger.warning(
                "the engine took %.1f s for a batch, longer than the %.0f s lease: the heartbeat "
                "kept the studies, but a crashed worker's studies wait only the lease; consider "
                "a smaller engine.batch_size",
                seconds,
                self.config.engine.lease_seconds,
            )

    def process_once(self) -> int:
        """Claim one batch and report it. Returns the number of studies handled."""
        claimed = self.claim(self.config.engine.batch_size)
        if not claimed:
            return 0
        with LeaseHeartbeat(
            self.sessions,
            self.worker_id,
            [c.id for c in claimed],
            self.config.engine.lease_seconds,
            self.config.engine.effective_heartbeat_seconds,
            self.config.engine.max_report_seconds,
        ):
            self._report(claimed)
        return len(claimed)

    def _report(self, claimed: list[ClaimedStudy]) -> None:
        loaded: list[tuple[ClaimedStudy, list[Dataset]]] = []
        for item in claimed:
            try:
                loaded.append((item, self._load(item)))
            except Exception as exc:  # unreadable spool file: this study only
                self._finish_retrying(item, error=f"could not read the study's images: {exc}")
        if not loaded:
            return
        started = time.monotonic()
        try:
            results = self.engine.report_studies(
                [datasets for _, datasets in loaded], return_exceptions=True
            )
        except Exception as exc:
            logger.exception("engine failed on a batch of %d study(ies)", len(loaded))
            for item, _ in loaded:
                self.backoff.call(
                    partial(self._release, item, f"engine error: {exc}"),
                    f"releasing {item.study_instance_uid}",
                )
            return
        try:
            self._record_latency(time.monotonic() - started)
        except DATABASE_DOWN:
            logger.debug("engine latency not recorded: database unreachable")
        for (item, datasets), result in zip(loaded, results, strict=True):
            if isinstance(result, NotReportableError):
                # The engine was not made for this study: its own state, not a failure.
                self._finish_retrying(item, not_reportable=str(result))
                continue
            if isinstance(result, StudyError):
                self._finish_retrying(item, error=str(result))
                continue
            try:
                predecessors = self.backoff.call(
                    partial(self._earlier_reports, item),
                    f"looking up earlier reports of {item.study_instance_uid}",
                )
                objects = build_report_objects(
                    result,
                    datasets,
                    with_presentation_state=self.config.report.presentation_state,
                    presentation_state_findings=self.config.report.presentation_state_findings,
                    uid_root=self.config.report.uid_root,
                    institution_name=self.config.report.institution_name or None,
                    predecessors=predecessors or (),
                )
                written = self._write_objects(item.study_instance_uid, objects)
            except Exception as exc:
                logger.exception("could not write the report of %s", item.study_instance_uid)
                self._finish_retrying(item, error=f"report objects could not be written: {exc}")
                continue
            self._finish_retrying(item, objects=written)

    def request_stop(self) -> None:
        """Stop after the current batch (safe from a signal handler or another thread)."""
        self.stop.set()
        self.wake.set()

    def _idle(self, seconds: float) -> None:
        """Wait until woken, stopped, or ``seconds`` (the safety-net poll) have passed."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # In slices: a caller may set ``stop`` without setting ``wake``.
            if self.wake.wait(min(remaining, 0.5)):
                # Cleared before claiming: a wake-up set after this sees its study claimed.
                self.wake.clear()
                return

    def run(
        self,
        stop: threading.Event | None = None,
        poll_seconds: float = 2.0,
        *,
        listen: bool = True,
    ) -> None:
        """Process batches until ``stop`` is set; when idle, waits for :attr:`wake` or
        ``poll_seconds``. On PostgreSQL (``listen``) a notification from the node that queued
        studies wakes it too. A database outage is waited out with backoff (logged once),
        never ends the loop."""
        if stop is not None:
            self.stop = self.backoff.stop = stop
        logger.info("worker %s started", self.worker_id)
        listener = None
        url = self.config.node.effective_database_url
        if listen and is_postgresql(url):
            listener = NotificationListener(url, {QUEUED_CHANNEL: self.wake.set}).start()
        try:
            self._loop(poll_seconds)
        finally:
            if listener is not None:
                listener.stop()

    def _loop(self, poll_seconds: float) -> None:
        self.backoff.call(self.register, "registering the worker")
        while not self.stop.is_set():
            try:
                handled = self.process_once()
            except DATABASE_DOWN as exc:
                self.backoff.failed(exc, "claiming studies")
                continue
            self.backoff.ok()
            if handled == 0:
                self._idle(poll_seconds)
        try:
            with session_scope(self.sessions) as session:
                record = session.get(WorkerRecord, self.worker_id)
                if record is not None:
                    record.stopped_at = utcnow()
        except DATABASE_DOWN:
            pass
        logger.info("worker %s stopped", self.worker_id)
