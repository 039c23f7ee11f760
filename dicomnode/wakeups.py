"""How each step wakes the next one across processes: PostgreSQL ``LISTEN``/``NOTIFY``.

Inside one process (``dicomnode serve`` with its worker) the steps wake each other directly
(a ``threading.Event``, a scheduler job run now). Workers on other hosts share only the
database: the step that queues studies (or writes a report) sends a notification in the same
transaction, so it is delivered exactly when the change is committed, and
:class:`NotificationListener` wakes the waiting side. The polls stay as the safety net: a
notification is lost while a listener is disconnected, so a listener that (re)connects wakes
everything once. SQLite has no notifications: there the polls are the cross-process path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from sqlalchemy import make_url, text
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

# Studies were queued (or requeued): a worker has something to claim.
QUEUED_CHANNEL = "dicomnode_queued"
# Report objects were written (or deliveries queued again): the delivery run has work.
REPORTED_CHANNEL = "dicomnode_reported"


def is_postgresql(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "postgresql"


def notify(session: Session, channel: str) -> None:
    """Notify ``channel`` when the session's transaction commits (PostgreSQL; else nothing)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {channel}"))


def libpq_conninfo(database_url: str) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://...``) as a libpq URI for psycopg."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(
        hide_password=False
    )


class NotificationListener:
    """A thread holding a ``LISTEN`` connection; calls ``callbacks[channel]()`` for each
    notification. Reconnects with backoff after a database outage, and on each (re)connection
    calls every callback once, for what was notified while it was away."""

    def __init__(
        self,
        database_url: str,
        callbacks: Mapping[str, Callable[[], None]],
        *,
        retry_seconds: float = 5.0,
    ) -> None:
        if not callbacks:
            raise ValueError("callbacks must name at least one channel")
        self.conninfo = libpq_conninfo(database_url)
        self.callbacks = dict(callbacks)
        self.retry_seconds = retry_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="dicomnode-listen", daemon=True
        )

    def start(self) -> NotificationListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _wake_all(self) -> None:
        for callback in self.callbacks.values():
            callback()

    def _run(self) -> None:
        import psycopg

        failing = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10) as conn:
                    for channel in self.callbacks:
                        conn.execute(f"LISTEN {channel}")
                    if failing:
                        logger.warning("listening for notifications again")
                    failing = False
                    self._wake_all()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            callback = self.callbacks.get(note.channel)
                            if callback is not None:
                                callback()
            except psycopg.Error as exc:
                if not failing:
                    logger.warning(
                        "cannot listen for notifications (%s); polling until the database is "
                        "back",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    )
                failing = True
                self._stop.wait(self.retry_seconds)
