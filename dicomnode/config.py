"""The node's configuration: one TOML file, overridable by environment variables, validated once.

Precedence, lowest first: built-in defaults (the embedded defaults), the TOML file, then
environment variables named ``DICOMNODE__<SECTION>__<KEY>`` (for example
``DICOMNODE__NODE__PORT=11113``). Environment values are parsed as TOML values when they
can be (``'["PACS1", "PACS2"]'``, ``true``, ``42``) and taken as plain strings otherwise.

A bad value fails at start-up with :class:`~dicomnode.exceptions.ConfigError` naming the
key, e.g. ``node.port: Input should be less than or equal to 65535``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import ssl
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dicomnode.ae_title import validate_ae_title
from dicomnode.exceptions import ConfigError
from dicomnode.tls import create_tls_context
from dicomnode.uids import DEFAULT_UID_ROOT, validate_uid_root

logger = logging.getLogger(__name__)

ENV_PREFIX = "DICOMNODE__"
CONFIG_ENV = "DICOMNODE_CONFIG"
#: The demonstration engine committed with the sources (engines/cxr-unpaired-es/MODEL_CARD.md).
BUNDLED_ENGINE = Path(__file__).resolve().parents[1] / "engines" / "cxr-unpaired-es"


def bundled_engine() -> Path | None:
    """The engine shipped beside the package (a source checkout), or None where it is not
    there (e.g. an installed wheel): then the node receives but does not report."""
    return BUNDLED_ENGINE if (BUNDLED_ENGINE / "manifest.json").is_file() else None


def _check_ae_title(value: str) -> str:
    # Padding spaces are not part of the title: compare and store it stripped.
    return validate_ae_title(value, name="AE title").strip()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenerTlsConfig(_Section):
    """TLS on the listener (DICOM PS3.15 Annex B secure transport; PEM files).

    ``cert_file``/``key_file``: the node's certificate (chain) and private key. ``ca_file``:
    the CA that issued the senders' certificates; with ``require_client_cert`` a sender must
    present one it signed, without it a certificate is verified only when one is offered.
    When enabled the port speaks only TLS (1.2 or later): run a second node for plain senders.
    """

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _check(self) -> ListenerTlsConfig:
        if not self.enabled:
            return self
        for name in ("cert_file", "key_file"):
            if getattr(self, name) is None:
                raise ValueError(
                    f"{name} is required when tls is enabled: set node.tls.cert_file and "
                    "node.tls.key_file to the node's certificate and private key (PEM), "
                    "or set node.tls.enabled = false"
                )
        if self.require_client_cert and self.ca_file is None:
            raise ValueError(
                "require_client_cert needs ca_file: set node.tls.ca_file to the CA (PEM) that "
                "issued the senders' certificates, or set node.tls.require_client_cert = false"
            )
        for name in ("cert_file", "key_file", "ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {path} does not exist or is not a file")
        files = [p for p in (self.cert_file, self.key_file, self.ca_file) if p is not None]
        if not all(os.access(p, os.R_OK) for p in files):
            # e.g. `dicomnode status` run by an administrator who may not read the service's
            # key: the node loads the files when it starts, and says what is wrong there.
            return self
        try:
            self.create_context()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ValueError(
                f"cannot load cert_file {self.cert_file}, key_file {self.key_file}"
                f"{f' or ca_file {self.ca_file}' if self.ca_file else ''}: {exc}. "
                "They must be PEM files, the key the certificate's own and unencrypted"
            ) from None
        return self

    def create_context(self) -> ssl.SSLContext:
        """The listener's server-side context (see :func:`dicomnode.tls.create_tls_context`)."""
        return create_tls_context(
            server_side=True,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            require_peer_cert=self.require_client_cert,
        )


class NodeConfig(_Section):
    """The listener: identity, network, storage, limits."""

    ae_title: str = "CXRNODE"
    bind_address: str = "0.0.0.0"
    # 0 asks the OS for a free port (tests, benchmarks); the bound port is logged.
    port: int = Field(default=11112, ge=0, le=65535)
    data_dir: Path = Path("data")
    database_url: str = ""
    # Associations (A-ASSOCIATE-RQ complete and accepted), in all and from one address.
    max_associations: int = Field(default=16, ge=1, le=1000)
    max_associations_per_peer: int = Field(default=8, ge=1, le=1000)
    # Connections accepted whose A-ASSOCIATE-RQ is not complete yet: counted apart, capped,
    # and dropped after pending_timeout seconds however slowly they send.
    max_pending: int = Field(default=32, ge=1, le=10000)
    max_pending_per_address: int = Field(default=4, ge=1, le=10000)
    pending_timeout: float = Field(default=10.0, gt=0)
    acse_timeout: float = Field(default=30.0, gt=0)
    dimse_timeout: float = Field(default=60.0, gt=0)
    network_timeout: float = Field(default=60.0, gt=0)
    maximum_pdu_size: int = Field(default=0, ge=0)
    # One data set held in memory costs about three times its size while it is stored.
    max_dataset_mb: int = Field(default=512, ge=1)
    min_free_disk_mb: int = Field(default=1024, ge=0)
    min_free_inodes: int = Field(default=10000, ge=0)
    tls: ListenerTlsConfig = ListenerTlsConfig()

    _ae = field_validator("ae_title")(_check_ae_title)

    @field_validator("bind_address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if value != "localhost":
                raise ValueError(f"{value!r} is not an IP address") from None
        return value

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite database under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'node.db').resolve()}"


class SecurityConfig(_Section):
    """Who may send to the node. Empty lists mean anyone."""

    allowed_calling_ae_titles: tuple[str, ...] = ()
    allowed_networks: tuple[str, ...] = ()

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _check_aes(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_ae_title(v) for v in values)

    @field_validator("allowed_networks")
    @classmethod
    def _check_networks(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for v in values:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError as exc:
                raise ValueError(f"{v!r} is not a network in CIDR form: {exc}") from None
        return values


class StorageConfig(_Section):
    """What happens when an instance arrives again with the same SOP Instance UID but other
    bytes (a PACS re-sending after a demographics fix, or another transfer syntax).

    ``keep-latest``: the new version becomes the current one, the older file is kept for the
    audit trail, and a study already queued or reported is reopened. ``keep-first``: the new
    version is acknowledged and discarded. ``refuse``: answered 0xA910 and discarded. Every
    case is recorded and shown by ``dicomnode status``.
    """

    changed_instance: Literal["keep-latest", "keep-first", "refuse"] = "keep-latest"


class RoutingRule(_Section):
    """One rule: an instance matches when every non-empty criterion matches.

    Text criteria compare case-insensitively after stripping. An empty list means "any".
    The study is reported when at least one of its instances matches a rule.
    """

    name: str
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    view_positions: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    calling_ae_titles: tuple[str, ...] = ()


class RoutingConfig(_Section):
    """Which studies are reported; what happens to instances that match no rule."""

    unmatched: Literal["ignore", "refuse"] = "ignore"
    rules: tuple[RoutingRule, ...] = (
        RoutingRule(
            name="chest-radiographs",
            modalities=("CR", "DX"),
            # Empty body part is common on older CR: accept it, the engine checks the view.
            body_parts=("CHEST", "THORAX", "TORAX", "TÓRAX", ""),
        ),
    )

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: tuple[RoutingRule, ...]) -> tuple[RoutingRule, ...]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique, repeated: {', '.join(dupes)}")
        return rules


class StabilityConfig(_Section):
    """A study is stable when no instance arrived for ``window_seconds``."""

    window_seconds: float = Field(default=60.0, gt=0)
    check_interval_seconds: float = Field(default=5.0, gt=0)


class TlsConfig(_Section):
    """Optional TLS for a destination (paths to PEM files)."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _check_pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        if self.enabled:
            for name in ("ca_file", "cert_file", "key_file"):
                path = getattr(self, name)
                if path is not None and not Path(path).is_file():
                    raise ValueError(f"{name} {path} does not exist or is not a file")
        return self


class DestinationConfig(_Section):
    """A DICOM peer the reports are sent to.

    ``receives = "all"``: every report (the PACS). ``receives = "own"``: only the reports of
    studies this AE sent, recognised by the calling AE title (send drafts back to the modality
    or PACS they came from, never another sender's patients).
    """

    name: str
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    receives: Literal["all", "own"] = "all"
    tls: TlsConfig = TlsConfig()
    # Seconds: TCP connect, association negotiation, each C-STORE response, idle network.
    connection_timeout: float = Field(default=10.0, gt=0)
    acse_timeout: float = Field(default=30.0, gt=0)
    dimse_timeout: float = Field(default=120.0, gt=0)
    network_timeout: float = Field(default=60.0, gt=0)

    _ae = field_validator("ae_title")(_check_ae_title)


class DeliveryConfig(_Section):
    """Where reports go and how failed deliveries are retried."""

    destinations: tuple[DestinationConfig, ...] = ()
    max_attempts: int = Field(default=8, ge=1)
    backoff_initial_seconds: float = Field(default=30.0, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    check_interval_seconds: float = Field(default=5.0, gt=0)
    # How long an object being sent stays hidden from other senders without progress; 0
    # derives it from the destinations' timeouts (see dicomnode.delivery.claim_seconds).
    claim_seconds: float = Field(default=0.0, ge=0)
    calling_ae_title: str = "CXRNODE"

    _ae = field_validator("calling_ae_title")(_check_ae_title)

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, dests: tuple[DestinationConfig, ...]) -> tuple[DestinationConfig, ...]:
        names = [d.name for d in dests]
        if len(names) != len(set(names)):
            raise ValueError("destination names must be unique")
        return dests


class EngineConfig(_Section):
    """The engine artifact the worker runs. No artifact (``""``): the node receives but does
    not report. Default: the demonstration engine of a source checkout."""

    artifact: Path | None = Field(default_factory=bundled_engine)
    backend: str = "onnxruntime"
    lease_seconds: float = Field(default=600.0, gt=0)
    # The worker renews its lease this often while the engine runs; 0: a third of the lease.
    heartbeat_seconds: float = Field(default=0.0, ge=0)
    # The heartbeat stops renewing after this long on one batch, so a hung engine gives its
    # studies back (one lease later) instead of holding them for ever.
    max_report_seconds: float = Field(default=3600.0, gt=0)
    batch_size: int = Field(default=4, ge=1)

    @field_validator("artifact", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # TOML has no null: an empty string turns the default engine off.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_heartbeat(self) -> EngineConfig:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be shorter than "
                f"lease_seconds ({self.lease_seconds}), or the lease lapses between renewals"
            )
        return self

    @property
    def effective_heartbeat_seconds(self) -> float:
        return self.heartbeat_seconds or self.lease_seconds / 3


class WorkerConfig(_Section):
    """Where reporting workers run, and how they wait (for work, for a database outage)."""

    db_retry_initial_seconds: float = Field(default=1.0, gt=0)
    db_retry_max_seconds: float = Field(default=30.0, gt=0)
    # `dicomnode serve` also runs one worker in a thread when engine.artifact is set; false
    # for deployments that run `dicomnode worker` units (several workers, GPUs, PostgreSQL).
    in_serve: bool = True
    # An idle worker is woken when studies are queued; this poll is only the safety net.
    poll_seconds: float = Field(default=2.0, gt=0)


class ReportConfig(_Section):
    """Which objects are written for each report, and how they are identified."""

    presentation_state: bool = True
    # What the presentation state draws: findings coded present, or present and uncertain.
    presentation_state_findings: Literal["present", "present_and_uncertain"] = "present"
    # The site's own registered root, if it has one; derived UIDs are hashed under it.
    uid_root: str = DEFAULT_UID_ROOT
    institution_name: str = ""

    @field_validator("uid_root")
    @classmethod
    def _check_root(cls, value: str) -> str:
        return validate_uid_root(value)


class RetentionConfig(_Section):
    """How long finished studies (ignored, or reported and delivered) are kept; 0 keeps all."""

    keep_days: float = Field(default=7.0, ge=0)
    check_interval_seconds: float = Field(default=3600.0, gt=0)


class Config(_Section):
    """The whole, validated configuration."""

    node: NodeConfig = NodeConfig()
    security: SecurityConfig = SecurityConfig()
    storage: StorageConfig = StorageConfig()
    routing: RoutingConfig = RoutingConfig()
    stability: StabilityConfig = StabilityConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    engine: EngineConfig = EngineConfig()
    worker: WorkerConfig = WorkerConfig()
    report: ReportConfig = ReportConfig()
    retention: RetentionConfig = RetentionConfig()

    def to_jsonable(self) -> dict[str, Any]:
        """The effective configuration as plain JSON types (written beside the node's data)."""
        data: dict[str, Any] = json.loads(self.model_dump_json())
        data["node"]["effective_database_url"] = _redact_url(self.node.effective_database_url)
        data["node"]["database_url"] = _redact_url(self.node.database_url)
        return data


def _redact_url(url: str) -> str:
    # Never write a database password to disk or logs.
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        target = overrides
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = _parse_env_value(raw)
    return overrides


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {key}: {err['msg']}")
    lines.append("Fix these keys in the file or the DICOMNODE__* environment variables.")
    return "\n".join(lines)


def _resolve_engine_path(data: dict[str, Any], folder: Path) -> None:
    """A relative ``engine.artifact`` in a file names a path beside that file, so a
    configuration and its engine move together (the shipped file names the bundled engine)."""
    engine = data.get("engine")
    if not isinstance(engine, dict):
        return
    artifact = engine.get("artifact")
    if isinstance(artifact, str) and artifact.strip() and not Path(artifact).is_absolute():
        engine["artifact"] = str((folder / artifact).resolve())


def load_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration.

    ``path`` defaults to ``$DICOMNODE_CONFIG``; with neither, the embedded defaults apply.
    Raises :class:`ConfigError` naming every bad key.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = environ[CONFIG_ENV]
    data: dict[str, Any] = {}
    source = "embedded defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"configuration file {path} does not exist; pass an existing file "
                "or omit --config to use the embedded defaults"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
        _resolve_engine_path(data, path.parent)
    overrides = _env_overrides(environ)
    if overrides:
        source += " + DICOMNODE__* environment"
        data = _merge(data, overrides)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    logger.debug("configuration loaded from %s", source)
    return config


def write_effective_config(config: Config, directory: Path) -> Path:
    """Write the effective configuration as JSON beside the node's data, for support."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "effective-config.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config.to_jsonable(), indent=2, ensure_ascii=False) + "\n", "utf-8")
    os.replace(tmp, target)
    return target
