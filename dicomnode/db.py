"""Study state, instances, quarantine and deliveries in SQL (SQLAlchemy 2.0 typed ORM).

SQLite (embedded, one process) is the default; PostgreSQL serves several workers. The schema
is created and upgraded only through Alembic (:func:`migrate_database`); the models here are
the single source the migrations are checked against in tests.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

from dicomnode.exceptions import DatabaseError

logger = logging.getLogger(__name__)

UID = String(64)
AE = String(16)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use dicomnode.db.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StudyState(enum.StrEnum):
    """Where a study is in its life. The allowed changes are the table in
    :data:`dicomnode.studies.TRANSITIONS`, which :meth:`Study.set_state` enforces."""

    RECEIVED = "received"  # instances arriving; the stability window has not passed
    STABLE = "stable"  # no new instance for the window; routing not yet applied
    QUEUED = "queued"  # waiting for a worker
    IGNORED = "ignored"  # no instance matched a reporting rule
    REPORTING = "reporting"  # a worker holds the lease
    REPORTED = "reported"  # report objects written, deliveries queued
    FAILED = "failed"  # the engine could not report it; see Study.error
    # The engine was not made for it (its gate refused the images, no frontal chest image);
    # no report is written, the reason is in Study.error. Not a failure: read it as usual.
    NOT_REPORTABLE = "not_reportable"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"
    REFUSED = "refused"  # the destination answered with a failure status: not retried blindly
    DEAD = "dead"  # transient failures exhausted the attempts
    SUPERSEDED = "superseded"  # a newer report of the study replaced it before it was sent


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(16))
    calling_ae_title: Mapped[str | None] = mapped_column(AE)
    source_address: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=StudyState.RECEIVED)
    reportable: Mapped[bool] = mapped_column(Boolean, default=False)
    matched_rule: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped whenever a new instance arrives, so a report of an older revision can be told apart.
    revision: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_instance_at: Mapped[datetime] = mapped_column(default=utcnow)
    state_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # `dicomnode requeue`: how often and when an operator sent the study back to the queue.
    requeue_count: Mapped[int] = mapped_column(Integer, default=0)
    requeued_at: Mapped[datetime | None] = mapped_column()

    instances: Mapped[list[Instance]] = relationship(back_populates="study")
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="study")

    __table_args__ = (Index("ix_studies_state_last", "state", "last_instance_at"),)

    def set_state(self, state: StudyState) -> None:
        """Change state if the transition table allows it, else :class:`StudyStateError`."""
        # The table lives with the study life cycle in dicomnode.studies, which imports this
        # module; imported here to keep one table and no import cycle.
        from dicomnode.studies import check_transition

        check_transition(self, StudyState(state))
        self.state = state
        self.state_changed_at = utcnow()


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    view_position: Mapped[str | None] = mapped_column(String(16))
    # Relative to the spool root, so the data directory can move.
    path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # Of the data set as received (after the file meta, which names the sender).
    sha256: Mapped[str] = mapped_column(String(64))
    calling_ae_title: Mapped[str | None] = mapped_column(AE)
    matched_rule: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    study: Mapped[Study] = relationship(back_populates="instances")


class QuarantineEntry(Base):
    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(512))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(128))
    calling_ae_title: Mapped[str | None] = mapped_column(AE)
    source_address: Mapped[str | None] = mapped_column(String(64))


class InstanceVersion(Base):
    """An instance that arrived again with the same SOP Instance UID and other bytes, and
    what the node did (``storage.changed_instance``). The older file stays for the audit."""

    __tablename__ = "instance_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    # replaced: the new one is current; kept-first: the new one was discarded; refused.
    action: Mapped[str] = mapped_column(String(16))
    previous_path: Mapped[str] = mapped_column(String(512))
    previous_sha256: Mapped[str] = mapped_column(String(64))
    new_path: Mapped[str | None] = mapped_column(String(512))
    new_sha256: Mapped[str] = mapped_column(String(64))
    calling_ae_title: Mapped[str | None] = mapped_column(AE)
    source_address: Mapped[str | None] = mapped_column(String(64))


class Delivery(Base):
    """One output object to one destination; retried with backoff until delivered or dead."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    path: Mapped[str] = mapped_column(String(512))
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The sender holding the row while an attempt is in flight ("<node identity>#<token>"):
    # next_attempt_at is then the claim's expiry, and a restarted node releases its own at once.
    claimed_by: Mapped[str | None] = mapped_column(String(160))
    # When a newer report of the study replaced this object; it is never sent again.
    superseded_at: Mapped[datetime | None] = mapped_column()

    study: Mapped[Study] = relationship(back_populates="deliveries")

    __table_args__ = (
        Index("ix_deliveries_state_next", "state", "next_attempt_at"),
        Index("ux_deliveries_object_dest", "sop_instance_uid", "destination", unique=True),
    )


class WorkerRecord(Base):
    """A reporting worker's heartbeat and its engine's measured latency (``dicomnode status``)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    engine_name: Mapped[str | None] = mapped_column(String(128))
    lease_seconds: Mapped[float] = mapped_column(Float)
    heartbeat_seconds: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    batches: Mapped[int] = mapped_column(Integer, default=0)
    last_batch_seconds: Mapped[float | None] = mapped_column(Float)
    max_batch_seconds: Mapped[float | None] = mapped_column(Float)
    stopped_at: Mapped[datetime | None] = mapped_column()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed row survives power loss, which is what "acknowledged" promises.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so concurrent association threads wait on
        # busy_timeout instead of failing with SQLITE_BUSY when a read upgrades to a write.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_db_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings durability needs on each backend."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not path.startswith("file:"):
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"cannot create the directory of the database {path}: {exc.strerror}. "
                    "Make node.data_dir (or node.database_url's directory) writable"
                ) from exc
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on any error."""
    session = factory()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


def _alembic_config(url: str) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate_database(url: str, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision`` with Alembic."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(url), revision)
    except Exception as exc:
        raise DatabaseError(
            f"could not migrate the database at {_safe(url)}: {exc}. Check node.database_url "
            "and that the database server is reachable and the user may create tables."
        ) from exc


def check_schema(engine: Engine) -> None:
    """Refuse to run against a database whose schema is not at the current revision."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(str(engine.url)))
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    head = script.get_current_head()
    if current != head:
        raise DatabaseError(
            f"database schema is at revision {current}, this version needs {head}; "
            "run `dicomnode migrate` first"
        )


def check_writable(engine: Engine) -> None:
    """Write to the database once, so a read-only database stops start-up with the fix
    instead of answering every C-STORE 0xA702."""
    from sqlalchemy import text

    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
    except Exception as exc:
        raise DatabaseError(
            f"the database at {_safe(str(engine.url))} is not writable: {exc}. Make the "
            "database file and its directory writable by the node's user (SQLite), or grant "
            "the user write access (PostgreSQL)"
        ) from exc


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
