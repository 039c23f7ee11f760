"""Retention: remove studies that are finished once they are older than ``retention.keep_days``.

Finished means ignored (no rule matched), not reportable (the engine's gate refused it), or
reported with every delivery delivered. Failed
studies and deliveries that need attention are kept until a person acts on them. Files are
removed before rows, so an interrupted purge leaves rows that the next run finishes, never
files without rows that start-up reconciliation would take for new instances.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.db import (
    Delivery,
    DeliveryState,
    Instance,
    InstanceVersion,
    Study,
    StudyState,
    session_scope,
    utcnow,
)
from dicomnode.outage import DATABASE_DOWN, OutageLog
from dicomnode.spool import Spool

logger = logging.getLogger(__name__)


def expired_studies(session: Session, keep: timedelta, now: datetime) -> list[int]:
    candidates = session.scalars(
        select(Study).where(
            Study.state.in_(
                [StudyState.IGNORED, StudyState.NOT_REPORTABLE, StudyState.REPORTED]
            ),
            Study.state_changed_at < now - keep,
        )
    ).all()
    expired = []
    for study in candidates:
        undelivered = session.scalar(
            select(Delivery.id).where(
                Delivery.study_id == study.id,
                Delivery.state.not_in([DeliveryState.DELIVERED, DeliveryState.SUPERSEDED]),
            )
        )
        if undelivered is None:
            expired.append(study.id)
    return expired


def purge_expired_studies(
    sessions: sessionmaker[Session],
    spool: Spool,
    data_dir: Path,
    keep: timedelta,
    now: datetime | None = None,
) -> int:
    """Delete the files and rows of finished studies older than ``keep``. Returns how many."""
    now = now or utcnow()
    with session_scope(sessions) as session:
        ids = expired_studies(session, keep, now)
    purged = 0
    for study_id in ids:
        with session_scope(sessions) as session:
            study = session.get(Study, study_id)
            if study is None:
                continue
            for path in session.scalars(select(Instance.path).where(Instance.study_id == study_id)):
                spool.remove_instance(path)
            # Older versions of corrected instances, kept for the audit until the study goes.
            versions = session.scalars(
                select(InstanceVersion).where(InstanceVersion.study_id == study_id)
            ).all()
            for version in versions:
                for old in (version.previous_path, version.new_path):
                    if old:
                        spool.remove_instance(old)
            shutil.rmtree(data_dir / "outputs" / study.study_instance_uid, ignore_errors=True)
            session.execute(delete(Delivery).where(Delivery.study_id == study_id))
            session.execute(delete(InstanceVersion).where(InstanceVersion.study_id == study_id))
            session.execute(delete(Instance).where(Instance.study_id == study_id))
            session.delete(study)
            logger.info("retention: removed study %s (%s)", study.study_instance_uid, study.state)
            purged += 1
    return purged


class RetentionJob:
    """The scheduler's retention run; a database outage is logged once, not every run."""

    def __init__(
        self, sessions: sessionmaker[Session], spool: Spool, data_dir: Path, keep_days: float
    ) -> None:
        self.sessions = sessions
        self.spool = spool
        self.data_dir = data_dir
        self.keep = timedelta(days=keep_days)
        self.outage = OutageLog("expired studies stay; the next retention run retries")

    def __call__(self) -> None:
        try:
            purge_expired_studies(self.sessions, self.spool, self.data_dir, self.keep)
        except DATABASE_DOWN as exc:
            self.outage.failed(exc, "removing expired studies")
        except (SQLAlchemyError, OSError) as exc:
            logger.error("retention run failed, will retry: %s", exc)
        else:
            self.outage.ok()
