"""The receiving node: a pynetdicom Storage SCP over the spool and database, plus its scheduler
and, given an engine, one reporting worker in a thread (``dicomnode serve`` out of the box)."""

from __future__ import annotations

import logging
import ssl
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pydicom.config
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.config import Config, ListenerTlsConfig, write_effective_config
from dicomnode.contexts import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from dicomnode.db import (
    check_schema,
    check_writable,
    create_db_engine,
    create_session_factory,
    migrate_database,
    utcnow,
)
from dicomnode.exceptions import DicomNodeError
from dicomnode.guard import (
    ConnectionGuard,
    ConnectionLimits,
    GuardedConnection,
    GuardedSocket,
    install_log_filter,
    wrap_tls,
)
from dicomnode.handlers import (
    handle_association_request,
    handle_echo,
    handle_store,
)
from dicomnode.intake import IntakeContext
from dicomnode.recovery import reconcile_spool
from dicomnode.scheduler import create_scheduler, run_job_now, schedule_stability_check
from dicomnode.spool import DataDirLock, Spool
from dicomnode.wakeups import REPORTED_CHANNEL, NotificationListener, is_postgresql
from dicomnode.worker import ReportEngine, ReportingWorker

logger = logging.getLogger(__name__)


def create_storage_ae(config: Config) -> AE:
    """An AE accepting Verification and the chest radiograph storage classes."""
    node = config.node
    ae = AE(ae_title=node.ae_title)
    # pynetdicom counts every accepted socket (and its thread lingering after a drop) against
    # this; the ConnectionGuard counts pending connections and associations apart and is the
    # limit that applies, so this one only has to stay out of its way.
    ae.maximum_associations = 100_000
    ae.acse_timeout = node.acse_timeout
    ae.dimse_timeout = node.dimse_timeout
    ae.network_timeout = node.network_timeout
    ae.maximum_pdu_size = node.maximum_pdu_size
    ae.add_supported_context(Verification)
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    return ae


def connection_limits(config: Config) -> ConnectionLimits:
    node = config.node
    return ConnectionLimits(
        max_associations=node.max_associations,
        max_associations_per_peer=node.max_associations_per_peer,
        max_pending=node.max_pending,
        max_pending_per_address=node.max_pending_per_address,
        pending_timeout=node.pending_timeout,
        maximum_pdu_size=node.maximum_pdu_size,
        max_dataset_bytes=node.max_dataset_mb * 2**20,
        allowed_networks=config.security.allowed_networks,
    )


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with :mod:`dicomnode.guard` on every accepted socket.

    TLS comes from ``tls_context``, not pynetdicom's ``ssl_context`` (whose handshake would
    run in the acceptor thread, where one silent peer stalls every other connection).
    """

    guard: ConnectionGuard
    tls_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[Any, tuple[str, int]]:
        sock, address = super().get_request()
        peer = str(address[0])
        if self.tls_context is not None:
            return wrap_tls(sock, self.tls_context, peer, self.guard), address
        return GuardedSocket(sock, peer, self.guard), address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return isinstance(request, GuardedConnection) and self.guard.admit(request)

    def shutdown(self) -> None:
        self.guard.stop()
        super().shutdown()


def _listener_tls_context(tls: ListenerTlsConfig) -> ssl.SSLContext | None:
    """The listener's TLS context, loaded again at start (the files may have changed since
    the configuration was checked)."""
    if not tls.enabled:
        return None
    try:
        return tls.create_context()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise DicomNodeError(
            f"cannot load the listener's TLS files (node.tls cert_file {tls.cert_file}, "
            f"key_file {tls.key_file}, ca_file {tls.ca_file}): {exc}. "
            "Fix or replace them, or set node.tls.enabled = false."
        ) from exc


def _tls_summary(tls: ListenerTlsConfig) -> str:
    if not tls.enabled:
        return ""
    if tls.require_client_cert:
        return " (TLS, client certificate required)"
    return " (TLS, client certificate verified if offered)" if tls.ca_file else " (TLS)"


# A study's one-off stability check runs this long after its window, so the database's
# "last instance at or before now minus the window" holds despite clock granularity.
_STABILITY_SLACK = timedelta(milliseconds=20)


class ReceivingNode:
    """The listener with everything it needs; :meth:`start` returns once it is accepting.

    Given an ``engine``, the node also runs one :class:`ReportingWorker` in a thread: each step
    wakes the next (a study is checked when its window ends, queued studies wake the worker,
    a written report runs the delivery job), the scheduler's intervals being the safety net.
    """

    def __init__(self, config: Config, engine: ReportEngine | None = None) -> None:
        if not isinstance(config, Config):
            raise TypeError("config must be a dicomnode.config.Config")
        self.config = config
        self.data_dir = Path(config.node.data_dir).resolve()
        self.spool = Spool(self.data_dir / "spool")
        self.db_engine = create_db_engine(config.node.effective_database_url)
        self.sessions = create_session_factory(self.db_engine)
        self.worker = None if engine is None else ReportingWorker(config, self.sessions, engine)
        self.scheduler = create_scheduler(
            config, self.sessions, self.spool, self.data_dir, on_queued=self._studies_queued
        )
        if self.worker is not None:
            self.worker.on_reported = self._report_written
        self._worker_thread: threading.Thread | None = None
        self._listener: NotificationListener | None = None
        self.ae = create_storage_ae(config)
        self._server: GuardedAssociationServer | None = None
        self._lock: DataDirLock | None = None
        self._validation_mode = pydicom.config.settings.reading_validation_mode
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the node is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Lock the data directory, check it and the database are writable, reconcile the
        spool, then listen. Every failure is a :class:`DicomNodeError` saying what to fix."""
        self._lock = DataDirLock(self.data_dir)
        self._lock.acquire()
        # The node checks every UID and value it uses itself and logs one line per bad input;
        # pydicom's own warning per odd value (logged and warned) would repeat it many times.
        self._validation_mode = pydicom.config.settings.reading_validation_mode
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        try:
            self._start_locked()
        except BaseException:
            pydicom.config.settings.reading_validation_mode = self._validation_mode
            self._lock.release()
            raise

    def _start_locked(self) -> None:
        tls_context = _listener_tls_context(self.config.node.tls)
        self.spool.check_writable()
        migrate_database(self.config.node.effective_database_url)
        check_schema(self.db_engine)
        check_writable(self.db_engine)
        # Recovery indexes files before the scheduler runs: its start-up sweep takes them.
        reconcile_spool(IntakeContext(config=self.config, spool=self.spool, sessions=self.sessions))
        ctx = IntakeContext(
            config=self.config,
            spool=self.spool,
            sessions=self.sessions,
            on_recorded=self._instance_recorded,
        )
        write_effective_config(self.config, self.data_dir)
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [ctx]),
            (evt.EVT_REQUESTED, handle_association_request, [self.config]),
        ]
        node = self.config.node
        try:
            server = cast(
                GuardedAssociationServer,
                self.ae.make_server(
                    (node.bind_address, node.port),
                    evt_handlers=handlers,
                    server_class=GuardedAssociationServer,
                ),
            )
        except OSError as exc:
            raise DicomNodeError(
                f"cannot listen on {node.bind_address}:{node.port}: {exc.strerror}. "
                "Stop the other process using it or set node.port to a free port."
            ) from exc
        server.guard = ConnectionGuard(connection_limits(self.config))
        server.tls_context = tls_context
        server.guard.start()
        install_log_filter()
        # As AE.start_server(block=False) does, with the guarded server class.
        self.ae._servers.append(server)
        threading.Thread(
            target=server.serve_forever, name="dicomnode-acceptor", daemon=True
        ).start()
        self._server = server
        self.scheduler.start()
        url = self.config.node.effective_database_url
        if is_postgresql(url):
            # Workers on other hosts notify when they wrote a report: deliver it now.
            self._listener = NotificationListener(
                url, {REPORTED_CHANNEL: self._report_written}
            ).start()
        if self.worker is not None:
            self._worker_thread = threading.Thread(
                target=self.worker.run,
                kwargs={"poll_seconds": self.config.worker.poll_seconds},
                name="dicomnode-worker",
            )
            self._worker_thread.start()
        logger.info(
            "node %s listening on %s:%d%s, data in %s",
            node.ae_title,
            node.bind_address,
            self.port,
            _tls_summary(node.tls),
            self.data_dir,
        )

    def _instance_recorded(self, study_uid: str) -> None:
        window = timedelta(seconds=self.config.stability.window_seconds)
        schedule_stability_check(self.scheduler, study_uid, utcnow() + window + _STABILITY_SLACK)

    def _studies_queued(self) -> None:
        if self.worker is not None:
            self.worker.wake.set()

    def _report_written(self) -> None:
        run_job_now(self.scheduler, "delivery")

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._worker_thread is not None and self.worker is not None:
            # The current batch finishes (its objects written); its lease covers a kill.
            self.worker.request_stop()
            self._worker_thread.join()
        if self._listener is not None:
            self._listener.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self._server is not None:
            self._server.shutdown()
        self.db_engine.dispose()
        if self._lock is not None:
            pydicom.config.settings.reading_validation_mode = self._validation_mode
            self._lock.release()
        logger.info("node stopped")
