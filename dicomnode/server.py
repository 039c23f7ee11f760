"""The receiving node: a pynetdicom Storage SCP over the spool and database, plus its scheduler."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomnode.config import Config, write_effective_config
from dicomnode.contexts import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from dicomnode.db import check_schema, create_db_engine, create_session_factory, migrate_database
from dicomnode.exceptions import DicomNodeError
from dicomnode.handlers import (
    StoreContext,
    handle_association_request,
    handle_echo,
    handle_store,
)
from dicomnode.recovery import reconcile_spool
from dicomnode.scheduler import create_scheduler
from dicomnode.spool import Spool

logger = logging.getLogger(__name__)


def create_storage_ae(config: Config) -> AE:
    """An AE accepting Verification and the chest radiograph storage classes."""
    node = config.node
    ae = AE(ae_title=node.ae_title)
    ae.maximum_associations = node.max_associations
    ae.acse_timeout = node.acse_timeout
    ae.dimse_timeout = node.dimse_timeout
    ae.network_timeout = node.network_timeout
    ae.maximum_pdu_size = node.maximum_pdu_size
    ae.add_supported_context(Verification)
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    return ae


class ReceivingNode:
    """The listener with everything it needs; :meth:`start` returns once it is accepting."""

    def __init__(self, config: Config) -> None:
        if not isinstance(config, Config):
            raise TypeError("config must be a dicomnode.config.Config")
        self.config = config
        self.data_dir = Path(config.node.data_dir).resolve()
        self.spool = Spool(self.data_dir / "spool")
        self.db_engine = create_db_engine(config.node.effective_database_url)
        self.sessions = create_session_factory(self.db_engine)
        self.scheduler = create_scheduler(config, self.sessions, self.spool, self.data_dir)
        self.ae = create_storage_ae(config)
        self._server: ThreadedAssociationServer | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the node is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        migrate_database(self.config.node.effective_database_url)
        check_schema(self.db_engine)
        reconcile_spool(self.spool, self.sessions, self.config.routing)
        write_effective_config(self.config, self.data_dir)
        ctx = StoreContext(config=self.config, spool=self.spool, sessions=self.sessions)
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, handle_echo),
            (evt.EVT_C_STORE, handle_store, [ctx]),
            (evt.EVT_REQUESTED, handle_association_request, [self.config]),
        ]
        node = self.config.node
        try:
            self._server = self.ae.start_server(
                (node.bind_address, node.port), block=False, evt_handlers=handlers
            )
        except OSError as exc:
            raise DicomNodeError(
                f"cannot listen on {node.bind_address}:{node.port}: {exc.strerror}. "
                "Stop the other process using it or set node.port to a free port."
            ) from exc
        self.scheduler.start()
        logger.info(
            "node %s listening on %s:%d, data in %s",
            node.ae_title,
            node.bind_address,
            self.port,
            self.data_dir,
        )

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self._server is not None:
            self._server.shutdown()
        self.db_engine.dispose()
        logger.info("node stopped")
