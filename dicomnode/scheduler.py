"""Timed work with APScheduler. Every job reads its state from the database, so a restart
loses nothing: the schedule itself is rebuilt from configuration at start-up.

Each job runs one at a time (:func:`add_serial_job`): a run longer than its interval (a
delivery to a slow PACS) delays the next instead of colliding with it, and APScheduler never
has to skip a run and warn "maximum number of running instances reached".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import Config
from dicomnode.db import session_scope
from dicomnode.delivery import DeliveryJob
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


def add_serial_job(
    scheduler: BackgroundScheduler,
    func: Callable[..., Any],
    seconds: float,
    job_id: str,
    args: list[Any],
) -> None:
    """Run ``func(*args)`` every ``seconds``, never two at once, first at start-up.

    A tick that comes while a run is still going returns at once: APScheduler may start a
    second instance (``max_instances=2``), so it never skips a tick and warns "maximum number
    of running instances reached", and the work itself never overlaps. (Pausing the job from
    inside it would deadlock with ``shutdown(wait=True)``, which holds the job store lock.)
    """
    running = threading.Lock()

    def run_alone() -> None:
        if not running.acquire(blocking=False):
            return
        try:
            func(*args)
        finally:
            running.release()

    scheduler.add_job(
        run_alone,
        "interval",
        seconds=seconds,
        id=job_id,
        max_instances=2,
        coalesce=True,
        # First run at start-up: the delivery job then takes back this node's own claims
        # left by a crash at once, and a long interval does not delay a restart's work.
        next_run_time=datetime.now(UTC),
    )


def create_scheduler(
    config: Config, sessions: sessionmaker[Session], spool: Spool, data_dir: Path
) -> BackgroundScheduler:
    """A scheduler holding the node's periodic jobs (not started)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    add_serial_job(
        scheduler,
        stability_job,
        config.stability.check_interval_seconds,
        "stability",
        [sessions, config.stability.window_seconds],
    )
    add_serial_job(
        scheduler,
        DeliveryJob(sessions, config, data_dir),
        config.delivery.check_interval_seconds,
        "delivery",
        [],
    )
    if config.retention.keep_days > 0:
        add_serial_job(
            scheduler,
            retention_job,
            config.retention.check_interval_seconds,
            "retention",
            [sessions, spool, data_dir, config.retention.keep_days],
        )
    return scheduler
