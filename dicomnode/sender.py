"""C-STORE SCU: deliver the report objects to a PACS and say, per object, what happened.

One association per destination carries all objects of a batch (association reuse);
it asks for exactly the SOP classes being sent, each with the object's own transfer
syntax and, for uncompressed objects, both little-endian syntaxes as fallbacks.

Every object gets a :class:`StoreOutcome` with one of four :class:`StoreStatus` values:

- ``success`` / ``warning``: the PACS stored it (a warning such as "coercion of data
  elements" is kept with its status code);
- ``refused``: the PACS answered with a failure status (or accepts no presentation
  context for the object's SOP class). Sending it again unchanged would fail again,
  so it must not be retried blindly: the status code, its meaning and the peer's
  Error Comment are recorded for a person to act on;
- ``transient``: no answer about the object (connection refused, association
  rejected or aborted, timeout). Retrying later is the right thing.

Persisting outcomes and scheduling retries belong to the caller (database, scheduler).
"""

from __future__ import annotations

import enum
import logging
import ssl
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, Association, build_context
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from dicomnode.ae_title import validate_ae_title
from dicomnode.exceptions import DestinationError
from dicomnode.tls import create_tls_context

logger = logging.getLogger(__name__)

#: Our AE title when the caller names none.
DEFAULT_CALLING_AE_TITLE = "CXRNODE"
#: The most presentation contexts one association may propose (PS3.8 9.3.2.2: odd IDs 1-255).
MAX_CONTEXTS = 128

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True)
class TLSOptions:
    """TLS for one destination (PS3.15 B.1 secure transport).

    ``ca_file`` verifies the PACS's certificate (the system store when ``None``);
    ``cert_file``/``key_file`` present our own certificate when the PACS requires it.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        for attr in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, attr)
            if value is not None and not Path(value).is_file():
                raise DestinationError(f"TLSOptions.{attr} {value} is not a readable file")
        if (self.cert_file is None) != (self.key_file is None):
            raise DestinationError("TLSOptions.cert_file and key_file must be given together")

    def client_context(self) -> ssl.SSLContext:
        """A client-side context that verifies the peer (TLS 1.2 or later)."""
        return create_tls_context(
            server_side=False,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            check_hostname=self.check_hostname,
        )


@dataclass(frozen=True)
class Destination:
    """A C-STORE SCP to deliver to, with the timeouts for talking to it (seconds)."""

    ae_title: str
    host: str
    port: int
    tls: TLSOptions | None = None
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    connection_timeout: float = 10.0

    def __post_init__(self) -> None:
        validate_ae_title(self.ae_title, name="Destination.ae_title", error=DestinationError)
        if not isinstance(self.host, str) or not self.host.strip():
            raise DestinationError("Destination.host must be a non-empty host name or address")
        if not isinstance(self.port, int) or isinstance(self.port, bool):
            raise DestinationError(f"Destination.port must be an int, got {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise DestinationError(f"Destination.port {self.port} must be in 1..65535")
        if self.tls is not None and not isinstance(self.tls, TLSOptions):
            raise DestinationError("Destination.tls must be a TLSOptions or None")
        for attr in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            value = getattr(self, attr)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise DestinationError(f"Destination.{attr} must be a positive number of seconds")

    def __str__(self) -> str:
        scheme = "dicom-tls" if self.tls else "dicom"
        return f"{scheme}://{self.ae_title}@{self.host}:{self.port}"


class StoreStatus(enum.StrEnum):
    """What became of one object."""

    SUCCESS = "success"
    WARNING = "warning"
    REFUSED = "refused"
    TRANSIENT = "transient"


@dataclass(frozen=True)
class StoreOutcome:
    """The result of sending one object; plain values so it can be stored as is."""

    sop_instance_uid: str
    sop_class_uid: str
    status: StoreStatus
    status_code: int | None = None
    reason: str = ""
    destination: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def stored(self) -> bool:
        """Whether the peer stored the object (success or warning)."""
        return self.status in (StoreStatus.SUCCESS, StoreStatus.WARNING)

    @property
    def retryable(self) -> bool:
        """Whether sending the same object again later may succeed."""
        return self.status is StoreStatus.TRANSIENT

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


def status_meaning(code: int) -> str:
    """The standard meaning of a C-STORE status code (PS3.4 B.2.3, PS3.7 C)."""
    if code == 0x0000:
        return "Success"
    entry = STORAGE_SERVICE_CLASS_STATUS.get(code)
    if entry and entry[1]:
        return f"{entry[1]} (0x{code:04X})"
    return f"{code_to_category(code)} status 0x{code:04X}"


def outcome_from_status(
    status: Dataset, sop_instance_uid: str, sop_class_uid: str, destination: str
) -> StoreOutcome:
    """Classify the C-STORE response status dataset pynetdicom returned."""
    if "Status" not in status:
        # pynetdicom returns an empty dataset on DIMSE timeout, abort or an invalid reply.
        return StoreOutcome(
            sop_instance_uid,
            sop_class_uid,
            StoreStatus.TRANSIENT,
            None,
            "no C-STORE response (timeout, abort or invalid response)",
            destination,
        )
    code = int(status.Status)
    category = code_to_category(code)
    reason = status_meaning(code)
    comment = status.get("ErrorComment")
    if comment:
        reason = f"{reason}: {comment}"
    if category == "Success":
        kind = StoreStatus.SUCCESS
    elif category == "Warning":
        kind = StoreStatus.WARNING
    else:
        # Failure (and anything unknown): the peer looked at the object and said no.
        kind = StoreStatus.REFUSED
    return StoreOutcome(sop_instance_uid, sop_class_uid, kind, code, reason, destination)


def _load(item: Dataset | str | Path) -> Dataset:
    if isinstance(item, Dataset):
        return item
    if isinstance(item, str | Path):
        return dcmread(item)
    raise TypeError(f"objects must be pydicom Datasets or file paths, got {type(item).__name__}")


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(meta.TransferSyntaxUID)
    # In-memory objects without file meta are encoded by pynetdicom as the context says.
    return ExplicitVRLittleEndian


def requested_contexts(datasets: Iterable[Dataset]) -> list[Any]:
    """Presentation contexts for exactly the SOP classes and transfer syntaxes being sent."""
    wanted: dict[str, list[str | UID]] = {}
    for ds in datasets:
        syntax = _transfer_syntax(ds)
        # A compressed object is sent as is; an uncompressed one may be re-encoded.
        syntaxes = [syntax] if syntax.is_compressed else [syntax, *_UNCOMPRESSED]
        known = wanted.setdefault(str(ds.SOPClassUID), [])
        for s in syntaxes:
            if s not in known:
                known.append(s)
    contexts = [build_context(sop_class, syntaxes) for sop_class, syntaxes in wanted.items()]
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(
            f"{len(contexts)} SOP classes in one batch exceed the {MAX_CONTEXTS} presentation "
            "contexts of an association; send them in smaller batches"
        )
    return contexts


class StoreSCU:
    """Our C-STORE SCU application entity (pynetdicom) with the calling AE title."""

    def __init__(self, calling_ae_title: str = DEFAULT_CALLING_AE_TITLE) -> None:
        self.calling_ae_title = validate_ae_title(
            calling_ae_title, name="calling_ae_title", error=DestinationError
        )

    def _associate(self, destination: Destination, datasets: Sequence[Dataset]) -> Association:
        ae = AE(ae_title=self.calling_ae_title)
        ae.acse_timeout = destination.acse_timeout
        ae.dimse_timeout = destination.dimse_timeout
        ae.network_timeout = destination.network_timeout
        ae.connection_timeout = destination.connection_timeout
        tls_args = None
        if destination.tls is not None:
            tls_args = (destination.tls.client_context(), destination.host)
        return ae.associate(
            destination.host,
            destination.port,
            contexts=requested_contexts(datasets),
            ae_title=destination.ae_title,
            tls_args=tls_args,
        )

    @contextmanager
    def open(
        self, destination: Destination, objects: Sequence[Dataset | str | Path]
    ) -> Iterator[StoreLink]:
        """One association able to carry ``objects``; released on exit.

        The caller stores the objects one at a time (:meth:`StoreLink.store`), so it can
        record each outcome, or decide not to send an object, between C-STOREs.
        """
        if not isinstance(destination, Destination):
            raise TypeError("destination must be a Destination")
        datasets = [_load(o) for o in objects]
        for index, ds in enumerate(datasets):
            missing = [k for k in ("SOPClassUID", "SOPInstanceUID") if k not in ds]
            if missing:
                raise ValueError(
                    f"objects[{index}] lacks {', '.join(missing)}: it is not a storable "
                    "DICOM object; build it with dicomnode.report.build_report_objects"
                )
        where = str(destination)
        if not datasets:
            yield StoreLink(None, where, "nothing to send")
            return
        try:
            assoc = self._associate(destination, datasets)
        except (OSError, ssl.SSLError) as exc:
            yield StoreLink(None, where, f"cannot connect: {exc}")
            return
        if not assoc.is_established:
            if assoc.rejected_contexts and not assoc.accepted_contexts:
                # The peer answered but took none of the SOP classes (pynetdicom then
                # aborts): like a single rejected context, resending unchanged cannot help.
                yield StoreLink(None, where, _refused_contexts_reason(assoc), refused=True)
                return
            reason = _association_failure(assoc, tls=destination.tls is not None)
            logger.warning("delivery to %s failed: %s", where, reason)
            yield StoreLink(None, where, reason)
            return
        try:
            yield StoreLink(assoc, where)
        finally:
            if assoc.is_established:
                assoc.release()

    def send(
        self, destination: Destination, objects: Sequence[Dataset | str | Path]
    ) -> list[StoreOutcome]:
        """Send ``objects`` over one association; one outcome per object, in order."""
        datasets = [_load(o) for o in objects]
        with self.open(destination, datasets) as link:
            return [link.store(ds) for ds in datasets]

    @staticmethod
    def _store_one(assoc: Association, ds: Dataset, msg_id: int, where: str) -> StoreOutcome:
        uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
        try:
            status = assoc.send_c_store(ds, msg_id=msg_id % 65536)
        except ValueError as exc:
            # No accepted context for this SOP class / transfer syntax: the peer does not
            # take this kind of object, so resending it unchanged cannot help.
            return StoreOutcome(
                uid, sop_class, StoreStatus.REFUSED, None, f"not accepted by the peer: {exc}", where
            )
        except (OSError, RuntimeError) as exc:
            return StoreOutcome(uid, sop_class, StoreStatus.TRANSIENT, None, str(exc), where)
        return outcome_from_status(status, uid, sop_class, where)


class StoreLink:
    """An open association (or the reason there is none) that stores one object at a time."""

    def __init__(
        self,
        assoc: Association | None,
        where: str,
        failure: str = "",
        *,
        refused: bool = False,
    ) -> None:
        self._assoc = assoc
        self._where = where
        self._failure = failure
        self._refused = refused
        self._msg_id = 0

    @property
    def established(self) -> bool:
        return self._assoc is not None and self._assoc.is_established

    def store(self, ds: Dataset) -> StoreOutcome:
        """C-STORE ``ds``; without an association, the outcome says why it was not sent."""
        uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
        if self._assoc is None:
            kind = StoreStatus.REFUSED if self._refused else StoreStatus.TRANSIENT
            return StoreOutcome(uid, sop_class, kind, None, self._failure, self._where)
        if not self._assoc.is_established:
            return StoreOutcome(
                uid, sop_class, StoreStatus.TRANSIENT, None, "association ended early", self._where
            )
        self._msg_id += 1
        outcome = StoreSCU._store_one(self._assoc, ds, self._msg_id, self._where)
        log = logger.info if outcome.stored else logger.warning
        log(
            "C-STORE %s to %s: %s %s",
            outcome.sop_instance_uid,
            self._where,
            outcome.status.value,
            outcome.reason,
        )
        return outcome


def _association_failure(assoc: Association, *, tls: bool) -> str:
    if assoc.is_rejected:
        rejection = assoc.acceptor.primitive
        if rejection is not None:
            result = getattr(rejection, "result_str", "")
            source = getattr(rejection, "source_str", "")
            diagnostic = getattr(rejection, "reason_str", "")
            return f"association rejected ({result}, {source}: {diagnostic})"
        return "association rejected"
    # pynetdicom reports a failed TCP connect or TLS handshake as an abort too.
    causes = "connection refused or timed out, or the peer aborted"
    if tls:
        causes = "TLS handshake failed (certificates), " + causes
    return f"association not established: {causes}"


def _refused_contexts_reason(assoc: Association) -> str:
    rejected = sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts})
    reason = (
        "not accepted by the peer: it accepted no presentation context for "
        f"{', '.join(UID(u).name for u in rejected)}; configure the PACS to accept them"
    )
    logger.warning("delivery refused: %s", reason)
    return reason


def send_objects(
    destination: Destination,
    objects: Sequence[Dataset | str | Path],
    *,
    calling_ae_title: str = DEFAULT_CALLING_AE_TITLE,
) -> list[StoreOutcome]:
    """Send ``objects`` to ``destination`` over one association (see :class:`StoreSCU`)."""
    return StoreSCU(calling_ae_title).send(destination, objects)
