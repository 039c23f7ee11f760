"""Timed work with APScheduler. Every job reads its state from the database, so a restart
loses nothing: the schedule itself is rebuilt from configuration at start-up.

Each job runs one at a time (:class:`SerialJob`): a run longer than its interval (a
delivery to a slow PACS) delays the next instead of colliding with it, and APScheduler never
has to skip a run and warn "maximum number of running instances reached".

The intervals are the safety net. Each step wakes the next when it finishes: a study is
checked at its last instance time plus the window (:func:`schedule_stability_check`), queued
studies wake the worker (``on_queued``), and a written report runs the delivery job at once
(:func:`run_job_now`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicomnode.config import Config
from dicomnode.db import StudyState, session_scope
from dicomnode.delivery import DeliveryJob
from dicomnode.outage import DATABASE_DOWN, OutageLog
from dicomnode.retention import RetentionJob
from dicomnode.spool import Spool
from dicomnode.studies import mark_stable_studies
from dicomnode.wakeups import QUEUED_CHANNEL, notify

logger = logging.getLogger(__name__)


class StabilityCheck:
    """Marks studies stable (then queued or ignored) once quiet for the window, and calls
    ``on_queued`` when it queued any (and notifies other hosts' workers, on PostgreSQL).

    The periodic sweep moves a study one step per run (it stays ``stable`` for one interval,
    visible in ``dicomnode status``) and catches up after a restart; the one-off run
    :func:`schedule_stability_check` sets at the study's last instance time plus the window
    ``settle``s it, so it is queued the moment it is quiet. Runs never overlap."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        window_seconds: float,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.window = timedelta(seconds=window_seconds)
        self.on_queued = on_queued
        self.outage = OutageLog("studies wait; the next check retries")
        self._lock = threading.Lock()

    def __call__(self, settle: bool = False) -> None:
        queued = False
        with self._lock:
            try:
                with session_scope(self.sessions) as session:
                    moved = mark_stable_studies(session, self.window)
                    if settle and any(state == StudyState.STABLE for _, state in moved):
                        moved += mark_stable_studies(session, self.window)
                    queued = any(state == StudyState.QUEUED for _, state in moved)
                    if queued:
                        notify(session, QUEUED_CHANNEL)
            except DATABASE_DOWN as exc:
                self.outage.failed(exc, "checking study stability")
                return
            except SQLAlchemyError as exc:
                # The next run retries; nothing is lost because the state lives in the database.
                logger.error("stability check failed, will retry: %s", exc)
                return
            self.outage.ok()
        if queued and self.on_queued is not None:
            self.on_queued()


def schedule_stability_check(
    scheduler: BackgroundScheduler, study_uid: str, at: datetime
) -> None:
    """Check ``study_uid`` at ``at`` (its last instance time plus the window), replacing the
    check an earlier instance of the study set. The sweep stays as the safety net."""
    stability = scheduler.get_job("stability")
    if not scheduler.running or stability is None:
        return  # stopping: the sweep at the next start-up takes the study
    scheduler.add_job(
        stability.func.func,
        "date",
        run_date=at,
        kwargs={"settle": True},
        id=f"stable:{study_uid}",
        replace_existing=True,
        misfire_grace_time=None,
    )


#: Instances APScheduler may run of one serial job: one working, the others returning at once.
SERIAL_JOB_INSTANCES = 5


class SerialJob:
    """``func(*args)``, never two runs at once.

    A tick that comes while a run is still going returns at once: APScheduler may start more
    instances (``max_instances=SERIAL_JOB_INSTANCES``; the extra ones only return), so it never
    skips a tick and warns "maximum number of running instances reached", and the work itself
    never overlaps. Several, not two: on a loaded machine a returning instance may not have
    finished before the next tick. (Pausing the job from
    inside it would deadlock with ``shutdown(wait=True)``, which holds the job store lock.)
    :func:`run_job_now` asks for one more run: if a run is going, it runs again at its end,
    so work that arrived during it does not wait for the next interval.
    """

    def __init__(self, func: Callable[..., Any], args: Sequence[Any]) -> None:
        self.func = func
        self.args = list(args)
        self._running = threading.Lock()
        self._again = threading.Event()

    def __call__(self) -> None:
        while self._running.acquire(blocking=False):
            try:
                self._again.clear()
                self.func(*self.args)
            finally:
                self._running.release()
            if not self._again.is_set():
                return

    def request_run(self) -> None:
        self._again.set()


def add_serial_job(
    scheduler: BackgroundScheduler,
    func: Callable[..., Any],
    seconds: float,
    job_id: str,
    args: list[Any],
) -> None:
    """Run ``func(*args)`` every ``seconds`` as a :class:`SerialJob`, first at start-up."""
    scheduler.add_job(
        SerialJob(func, args),
        "interval",
        seconds=seconds,
        id=job_id,
        max_instances=SERIAL_JOB_INSTANCES,
        coalesce=True,
        # First run at start-up: the delivery job then takes back this node's own claims
        # left by a crash at once, and a long interval does not delay a restart's work.
        next_run_time=datetime.now(UTC),
    )


def run_job_now(scheduler: BackgroundScheduler, job_id: str) -> None:
    """Run the serial job ``job_id`` now (or again right after its current run), outside its
    interval: the step before it has just given it work."""
    job = scheduler.get_job(job_id)
    if not scheduler.running or job is None or not isinstance(job.func, SerialJob):
        return
    job.func.request_run()
    scheduler.add_job(job.func, id=f"{job_id}:now", replace_existing=True, misfire_grace_time=None)


def create_scheduler(
    config: Config,
    sessions: sessionmaker[Session],
    spool: Spool,
    data_dir: Path,
    on_queued: Callable[[], None] | None = None,
) -> BackgroundScheduler:
    """A scheduler holding the node's periodic jobs (not started); ``on_queued`` is called
    when the stability check has queued studies (to wake an in-process worker)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    add_serial_job(
        scheduler,
        StabilityCheck(sessions, config.stability.window_seconds, on_queued),
        config.stability.check_interval_seconds,
        "stability",
        [],
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
            RetentionJob(sessions, spool, data_dir, config.retention.keep_days),
            config.retention.check_interval_seconds,
            "retention",
            [],
        )
    return scheduler
