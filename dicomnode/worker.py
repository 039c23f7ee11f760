"""The reporting worker: claims ready studies with a lease, runs the engine, writes the report
objects and queues their delivery.

Claiming uses ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers on
several machines share one queue; on SQLite (one machine) transactions are serialized by
``BEGIN IMMEDIATE``. A worker killed mid-study loses nothing: its lease expires and another
worker (or the same one restarted) redoes the study and writes objects with the same UIDs.
An engine failure on one study marks that study failed with the reason and the worker goes on.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from dicomnode import studies as lifecycle
from dicomnode.config import Config
from dicomnode.db import Study, StudyState, session_scope, utcnow
from dicomnode.delivery import (
    OutputObject,
    destinations_for,
    enqueue_deliveries,
    supersede_pending,
)
from dicomnode.report import build_report_objects
from dicomnode.spool import Spool, write_durably
from engine.exceptions import StudyError
from engine.result import StudyReport

logger = logging.getLogger(__name__)

# After this many claims without a result (worker crashes, engine errors) a study fails.
MAX_STUDY_ATTEMPTS = 3


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
    ) -> None:
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
            lifecycle.finish(study)
            supersede_pending(session, study, objects)
            added = enqueue_deliveries(
                session, study, objects, destinations_for(self.config, study.calling_ae_title)
            )
            logger.info(
                "study %s reported: %d object(s), %d delivery(ies) queued",
                claimed.study_instance_uid,
                len(objects),
                added,
            )

    def _release(self, claimed: ClaimedStudy, reason: str) -> None:
        """Give a study back to the queue after an unexpected failure (counted in attempts)."""
        with session_scope(self.sessions) as session:
            study = session.get(Study, claimed.id, with_for_update=True)
            if study is not None and study.lease_owner == self.worker_id:
                lifecycle.release(study, reason)

    def process_once(self) -> int:
        """Claim one batch and report it. Returns the number of studies handled."""
        claimed = self.claim(self.config.engine.batch_size)
        if not claimed:
            return 0
        loaded: list[tuple[ClaimedStudy, list[Dataset]]] = []
        for item in claimed:
            try:
                loaded.append((item, self._load(item)))
            except Exception as exc:  # unreadable spool file: this study only
                self._finish(item, error=f"could not read the study's images: {exc}")
        if not loaded:
            return len(claimed)
        try:
            results = self.engine.report_studies(
                [datasets for _, datasets in loaded], return_exceptions=True
            )
        except Exception as exc:
            logger.exception("engine failed on a batch of %d study(ies)", len(loaded))
            for item, _ in loaded:
                self._release(item, f"engine error: {exc}")
            return len(claimed)
        for (item, datasets), result in zip(loaded, results, strict=True):
            if isinstance(result, StudyError):
                self._finish(item, error=str(result))
                continue
            try:
                objects = build_report_objects(
                    result,
                    datasets,
                    with_presentation_state=self.config.report.presentation_state,
                    presentation_state_findings=self.config.report.presentation_state_findings,
                    uid_root=self.config.report.uid_root,
                    institution_name=self.config.report.institution_name or None,
                )
                written = self._write_objects(item.study_instance_uid, objects)
            except Exception as exc:
                logger.exception("could not write the report of %s", item.study_instance_uid)
                self._finish(item, error=f"report objects could not be written: {exc}")
                continue
            self._finish(item, objects=written)
        return len(claimed)

    def run(self, stop: threading.Event, poll_seconds: float = 2.0) -> None:
        """Process batches until ``stop`` is set; sleeps ``poll_seconds`` when idle."""
        logger.info("worker %s started", self.worker_id)
        while not stop.is_set():
            if self.process_once() == 0:
                stop.wait(poll_seconds)
        logger.info("worker %s stopped", self.worker_id)
