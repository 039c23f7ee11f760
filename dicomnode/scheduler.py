"""Timed work with APScheduler. Every job reads its state from the database, so a restart
loses nothing: the schedule itself is rebuilt from configuration at start-up."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import Config
from dicomnode.db import session_scope
from dicomnode.delivery import delivery_job
from dicomnode.retention import retention_job
from dicomnode.spool import Spool
from dicomnode.studies import mark_stable_studies

logger = logging.getLogger(__name__)


def stability_job(sessions: sessionmaker[Session], window_seconds: float) -> None:
    """Mark studies stable (then queued or ignored) once quiet for the window."""
    try:
        with session_scope(sessions) as session:
            mark_stable_studies(session, timedelta(seconds=window_seconds))
    except SQLAlchemyError as exc:
        # The next run retries; nothing is lost because the state lives in the database.
        logger.error("stability check failed, will retry: %s", exc)


def create_scheduler(
    config: Config, sessions: sessionmaker[Session], spool: Spool, data_dir: Path
) -> BackgroundScheduler:
    """A scheduler holding the node's periodic jobs (not started)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        stability_job,
        "interval",
        seconds=config.stability.check_interval_seconds,
        args=[sessions, config.stability.window_seconds],
        id="stability",
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        delivery_job,
        "interval",
        seconds=config.delivery.check_interval_seconds,
        args=[sessions, config, data_dir],
        id="delivery",
        max_instances=1,
        coalesce=True,
    )
    if config.retention.keep_days > 0:
        scheduler.add_job(
            retention_job,
            "interval",
            seconds=config.retention.check_interval_seconds,
            args=[sessions, spool, data_dir, config.retention.keep_days],
            id="retention",
            max_instances=1,
            coalesce=True,
        )
    return scheduler
