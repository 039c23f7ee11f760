"""Database outages, logged once: one error when the database becomes unreachable and one
line when it is back, however many runs or retries fail in between.

The worker waits an outage out with backoff (:class:`~dicomnode.worker.OutageBackoff`); the
listener's scheduled jobs (stability, delivery, retention) simply fail until the database is
back, because their state lives in it. Both log through :class:`OutageLog`.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import InterfaceError, OperationalError

logger = logging.getLogger(__name__)

#: Errors that mean "the database cannot be reached now", as opposed to a bug or bad schema.
DATABASE_DOWN = (OperationalError, InterfaceError)


def first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


class OutageLog:
    """Logs an outage when it starts (:meth:`failed`) and when it ends (:meth:`ok`)."""

    def __init__(self, then: str) -> None:
        #: What the caller does about it, completing "database unreachable while ...; ".
        self.then = then
        self.down_since: float | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException, doing: str) -> bool:
        """Record a failure; ``True`` (and one error logged) if it starts an outage."""
        if self.down_since is not None:
            logger.debug("database still unreachable while %s: %s", doing, first_line(exc))
            return False
        self.down_since = time.monotonic()
        logger.error(
            "database unreachable while %s; %s: %s", doing, self.then, first_line(exc)
        )
        return True

    def ok(self) -> None:
        if self.down_since is not None:
            logger.warning(
                "database reachable again after %.1f s; resuming",
                time.monotonic() - self.down_since,
            )
            self.down_since = None
