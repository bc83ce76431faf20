"""Settings: one object, read from ``SONOBRIDGE_*`` variables, an optional TOML file and options.

Precedence, lowest first: built-in defaults, the TOML file named by ``SONOBRIDGE_CONFIG``,
environment variables, then explicit overrides (``sonobridge serve`` options, tests).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "SONOBRIDGE_"

# Setting name -> environment variable. The names are part of the interfaces contract.
ENV_NAMES: dict[str, str] = {
    "http_host": "SONOBRIDGE_HTTP_HOST",
    "http_port": "SONOBRIDGE_HTTP_PORT",
    "base_url": "SONOBRIDGE_BASE_URL",
    "data_dir": "SONOBRIDGE_DATA_DIR",
    "database_url": "SONOBRIDGE_DATABASE_URL",
    "blob_url": "SONOBRIDGE_BLOB_URL",
    "log_format": "SONOBRIDGE_LOG_FORMAT",
    "log_level": "SONOBRIDGE_LOG_LEVEL",
    "max_body_size": "SONOBRIDGE_MAX_BODY_SIZE",
    "history_page_max": "SONOBRIDGE_HISTORY_PAGE_MAX",
    "bundle_max_entries": "SONOBRIDGE_BUNDLE_MAX_ENTRIES",
    "search_default_count": "SONOBRIDGE_SEARCH_DEFAULT_COUNT",
    "search_max_count": "SONOBRIDGE_SEARCH_MAX_COUNT",
    "search_max_includes": "SONOBRIDGE_SEARCH_MAX_INCLUDES",
    "db_threads": "SONOBRIDGE_DB_THREADS",
    "dicom_max_object_size": "SONOBRIDGE_DICOM_MAX_OBJECT_SIZE",
    "dicom_patient_id_system": "SONOBRIDGE_DICOM_PATIENT_ID_SYSTEM",
    "patient_id_issuer": "SONOBRIDGE_PATIENT_ID_ISSUER",
    "dicom_cache_size": "SONOBRIDGE_DICOM_CACHE_SIZE",
    "limit_frame_pixels": "SONOBRIDGE_LIMIT_FRAME_PIXELS",
    "limit_decoded_bytes": "SONOBRIDGE_LIMIT_DECODED_BYTES",
    "limit_video_frames": "SONOBRIDGE_LIMIT_VIDEO_FRAMES",
    "limit_decode_seconds": "SONOBRIDGE_LIMIT_DECODE_SECONDS",
    "limit_frame_list": "SONOBRIDGE_LIMIT_FRAME_LIST",
    "limit_video_pixels": "SONOBRIDGE_LIMIT_VIDEO_PIXELS",
    "cors_origins": "SONOBRIDGE_CORS_ORIGINS",
    "trusted_proxies": "SONOBRIDGE_TRUSTED_PROXIES",
    "auth": "SONOBRIDGE_AUTH",
    "token_lifetime": "SONOBRIDGE_TOKEN_LIFETIME",
    "refresh_lifetime": "SONOBRIDGE_REFRESH_LIFETIME",
    "session_idle_timeout": "SONOBRIDGE_SESSION_IDLE_TIMEOUT",
    "audit_syslog": "SONOBRIDGE_AUDIT_SYSLOG",
    "audit_read_window": "SONOBRIDGE_AUDIT_READ_WINDOW",
    "audit_writer": "SONOBRIDGE_AUDIT_WRITER",
    "audit": "SONOBRIDGE_AUDIT",
    "audit_feed": "SONOBRIDGE_AUDIT_FEED",
    "audit_feed_cert": "SONOBRIDGE_AUDIT_FEED_CERT",
    "audit_feed_key": "SONOBRIDGE_AUDIT_FEED_KEY",
    "audit_feed_ca": "SONOBRIDGE_AUDIT_FEED_CA",
    "audit_source_id": "SONOBRIDGE_AUDIT_SOURCE_ID",
    "mllp_host": "SONOBRIDGE_MLLP_HOST",
    "mllp_port": "SONOBRIDGE_MLLP_PORT",
    "mllp_tls_port": "SONOBRIDGE_MLLP_TLS_PORT",
    "tls_cert": "SONOBRIDGE_TLS_CERT",
    "tls_key": "SONOBRIDGE_TLS_KEY",
    "tls_ca": "SONOBRIDGE_TLS_CA",
    "hl7_receiving_application": "SONOBRIDGE_HL7_RECEIVING_APPLICATION",
    "hl7_senders": "SONOBRIDGE_HL7_SENDERS",
    "hl7_max_message_size": "SONOBRIDGE_HL7_MAX_MESSAGE_SIZE",
    "hl7_time_zone": "SONOBRIDGE_HL7_TIME_ZONE",
    "hl7_idle_timeout": "SONOBRIDGE_HL7_IDLE_TIMEOUT",
    "hl7_message_timeout": "SONOBRIDGE_HL7_MESSAGE_TIMEOUT",
    "hl7_max_connections_per_peer": "SONOBRIDGE_HL7_MAX_CONNECTIONS_PER_PEER",
    "hl7_max_field_size": "SONOBRIDGE_HL7_MAX_FIELD_SIZE",
    "hl7_max_segments": "SONOBRIDGE_HL7_MAX_SEGMENTS",
    "hl7_destinations": "SONOBRIDGE_HL7_DESTINATIONS",
    "hl7_destinations_file": "SONOBRIDGE_HL7_DESTINATIONS_FILE",
    "hl7_sending_application": "SONOBRIDGE_HL7_SENDING_APPLICATION",
    "hl7_sending_facility": "SONOBRIDGE_HL7_SENDING_FACILITY",
    "dicom_aet": "SONOBRIDGE_DICOM_AET",
    "dicom_host": "SONOBRIDGE_DICOM_HOST",
    "dicom_port": "SONOBRIDGE_DICOM_PORT",
    "dicom_tls_port": "SONOBRIDGE_DICOM_TLS_PORT",
    "dicom_peers": "SONOBRIDGE_DICOM_PEERS",
    "dicom_peers_file": "SONOBRIDGE_DICOM_PEERS_FILE",
    "dicom_known_callers_only": "SONOBRIDGE_DICOM_KNOWN_CALLERS_ONLY",
    "dicom_unlisted_rights": "SONOBRIDGE_DICOM_UNLISTED_RIGHTS",
    "dicom_forward": "SONOBRIDGE_DICOM_FORWARD",
    "xds_repository_url": "SONOBRIDGE_XDS_REPOSITORY_URL",
    "xds_registry_url": "SONOBRIDGE_XDS_REGISTRY_URL",
    "xds_source_oid": "SONOBRIDGE_XDS_SOURCE_OID",
    "xds_home_community_id": "SONOBRIDGE_XDS_HOME_COMMUNITY_ID",
    "xds_repository_unique_id": "SONOBRIDGE_XDS_REPOSITORY_UNIQUE_ID",
    "xds_affinity_domain": "SONOBRIDGE_XDS_AFFINITY_DOMAIN",
    "dicom_worklist_stations": "SONOBRIDGE_DICOM_WORKLIST_STATIONS",
    "deid_key": "SONOBRIDGE_DEID_KEY",
    "deid_masks_file": "SONOBRIDGE_DEID_MASKS_FILE",
    "consultation_deadlines": "SONOBRIDGE_CONSULTATION_DEADLINES",
    "subscription_allow_private": "SONOBRIDGE_SUBSCRIPTION_ALLOW_PRIVATE",
    "export_max_jobs": "SONOBRIDGE_EXPORT_MAX_JOBS",
    "export_retention": "SONOBRIDGE_EXPORT_RETENTION",
    "export_file_max_size": "SONOBRIDGE_EXPORT_FILE_MAX_SIZE",
}


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message says which and why."""


def _parse_size(text: str) -> int:
    """Parse ``10485760``, ``10MB``, ``512k``, ``1GiB`` into bytes."""
    units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
             "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
    raw = text.strip().lower()
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
    unit = raw[len(digits):].strip()
    if not digits.isdecimal() or unit not in units:
        raise ConfigError(f"not a size: {text!r} (examples: 1048576, 64MB, 1GiB)")
    return int(digits) * units[unit]


@dataclass(frozen=True)
class Settings:
    """Everything the gateway can be told. Passed down explicitly; nothing reads the env later."""

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    base_url: str | None = None
    data_dir: Path = Path("data")
    database_url: str | None = None
    blob_url: str | None = None
    log_format: str = "text"
    log_level: str = "info"
    max_body_size: int = 64 * 1024 * 1024
    history_page_max: int = 1000
    bundle_max_entries: int = 10_000
    search_default_count: int = 20
    search_max_count: int = 1000
    search_max_includes: int = 1000
    db_threads: int = 0  # 0: as many as CPUs for SQLite, four times that for PostgreSQL
    dicom_max_object_size: int = 4 * 1024**3
    dicom_patient_id_system: str = "urn:sonobridge:dicom:patient-id"
    # The issuer of DICOM Patient IDs that name none (and whose sending AE has no issuer=):
    # unset, they are unqualified (core/patients.py)
    patient_id_issuer: str = ""
    dicom_cache_size: int = 256 * 1024 * 1024  # decoded frames and renderings kept in memory
    # Bounded work per request (core/limits.py, docs/security.md)
    limit_frame_pixels: int = 8192 * 8192
    limit_decoded_bytes: int = 2_000_000_000
    limit_video_frames: int = 3600
    limit_decode_seconds: int = 120
    limit_frame_list: int = 1000
    limit_video_pixels: int = 2_500_000_000
    cors_origins: str = ""  # comma-separated origins allowed to call the APIs from a browser
    # Addresses (or networks) whose X-Forwarded-Proto/Host/Prefix/For are believed
    trusted_proxies: str = "127.0.0.1,::1"
    load_sample: bool = True
    auth: str = "enabled"  # "disabled" opens the APIs: local development on loopback only
    token_lifetime: int = 3600  # seconds an access token is valid
    refresh_lifetime: int = 30 * 86400  # seconds an offline_access refresh token is valid
    session_idle_timeout: int = 900  # a login session ends after this many idle seconds
    mllp_host: str = "127.0.0.1"  # HL7 v2 MLLP listener address
    mllp_port: int = 2575  # 0: no MLLP listener in `serve`
    mllp_tls_port: int = 0  # MLLP over TLS (needs tls_cert/tls_key); 0: none
    # TLS (HTTPS on http_port, and the DICOM/MLLP TLS ports): PEM certificate chain and key;
    # tls_ca: the CA whose certificates DICOM and MLLP peers must present (mutual TLS).
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    hl7_receiving_application: str = ""  # MSH-5 to accept (empty: any); others get AR
    hl7_senders: str = ""  # MSH-3 values to accept, comma-separated (empty: any); others AR
    hl7_max_message_size: int = 32 * 1024 * 1024
    hl7_idle_timeout: int = 600  # seconds a connection may wait between messages
    hl7_message_timeout: int = 60  # seconds from a message's <VT> to its <FS><CR>
    hl7_max_connections_per_peer: int = 16  # open MLLP connections from one address
    hl7_max_field_size: int = 16 * 1024 * 1024  # bytes of one field (an ED report PDF fits)
    hl7_max_segments: int = 20_000  # segments of one message
    hl7_destinations: str = ""  # where results (ORU^R01) go: name@host:port, comma-separated
    hl7_destinations_file: str = ""  # more destinations, one name@host:port per line
    hl7_sending_application: str = "SONOBRIDGE"  # MSH-3 of what we send
    hl7_sending_facility: str = ""  # MSH-4 of what we send
    hl7_time_zone: str = "+08:00"  # the zone of HL7 times that carry none (China Standard Time)
    dicom_aet: str = "SONOBRIDGE"  # our AE title
    dicom_host: str = "127.0.0.1"  # DIMSE listener address
    dicom_port: int = 11112  # 0: no DIMSE listener in `serve`
    dicom_tls_port: int = 0  # DICOM TLS (PS3.15 B.1 secure transport); 0: none
    dicom_peers: str = ""  # known remote AEs: AET@host:port, comma-separated
    dicom_peers_file: str = ""  # more peers, one AET@host:port per line
    dicom_known_callers_only: bool = False  # refuse associations from unknown calling AEs
    # DIMSE services a calling AE title not in the peers may use (echo+store: it may send
    # images, not query or retrieve them); see hie/dimse/peers.py
    dicom_unlisted_rights: str = "echo+store"
    dicom_forward: str = ""  # routing rules: DEST[:modality=US,source=CART*];DEST2
    # IHE XDS.b / XDS-I.b (hie/xds, docs/exchange.md): the platform's repository (ITI-41,
    # RAD-68: final reports are submitted there when set) and registry (ITI-18) endpoints,
    # this gateway's source OID, home community, own repository uniqueId, and the affinity
    # domain's patient-id assigning authority (an OID; default 身份证号). The source and
    # repository OIDs, unset, are 2.25 OIDs derived from the data directory (hie/xds/peers.py)
    xds_repository_url: str = ""
    xds_registry_url: str = ""
    xds_source_oid: str = ""
    xds_home_community_id: str = ""
    xds_repository_unique_id: str = ""
    xds_affinity_domain: str = "2.16.156.10011.1.3"
    # Scheduled Station AE Titles of orders that name no modality Device: US=CART1,US=CART2
    dicom_worklist_stations: str = ""
    audit: bool = True  # the audit trail; off only for tests and throw-away benchmarks
    # Subscriptions may send to private/loopback addresses (off: no SSRF into the LAN)
    subscription_allow_private: bool = False
    audit_syslog: str = ""  # host:port of an RFC 5424 syslog receiver (UDP), or empty
    audit_read_window: int = 60  # seconds DICOM reads of a study by a caller make one event
    # Who writes the AuditEvents of reads (core/audit_writer.py): "thread" (a thread of the
    # server's process) or "process" (a process of its own, off the requests' interpreter:
    # for machines with cores to spare; about 130 MB more per worker)
    audit_writer: str = "thread"
    # The ATNA audit feed (hie/syslog.py, docs/exchange.md): tls://host:6514 (RFC 5425) or
    # udp://host:514 (RFC 5426); the node's TLS files unless its own are given (relative
    # paths are in the data directory); the AuditSourceID (default: dicom_aet)
    audit_feed: str = ""
    audit_feed_cert: str = ""
    audit_feed_key: str = ""
    audit_feed_ca: str = ""
    audit_source_id: str = ""
    # How long a consultation request may stay open, per priority (core/consultation.py)
    consultation_deadlines: str = "routine=24h,urgent=2h,asap=1h,stat=30m"
    # De-identification (core/deid): the HMAC key for UIDs, pseudonyms and date shifts (text,
    # at least 16 characters; empty: a random key kept in <data>/keys/deid.key), and a JSON
    # file of per-scanner-model pixel masks for ultrasound without regions (docs/training.md)
    deid_key: str = ""
    deid_masks_file: str = ""
    # Bulk Data $export (core/export): jobs queued or running at once (429 past it), seconds
    # the files are kept after completion, and the size an NDJSON file is split at
    export_max_jobs: int = 4
    export_retention: int = 86400
    export_file_max_size: int = 256 * 1024**2
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log format must be 'text' or 'json', not {self.log_format!r}")
        if not 0 < self.http_port < 65536:
            raise ConfigError(f"HTTP port out of range: {self.http_port}")
        if not (len(self.hl7_time_zone) == 6 and self.hl7_time_zone[0] in "+-"
                and self.hl7_time_zone[3] == ":"):
            raise ConfigError(f"HL7 time zone must look like +08:00, not {self.hl7_time_zone!r}")
        if not 0 <= self.dicom_port < 65536:
            raise ConfigError(f"DICOM port out of range: {self.dicom_port}")
        if not 0 < len(self.dicom_aet) <= 16:
            raise ConfigError(f"DICOM AE title must be 1-16 characters: {self.dicom_aet!r}")
        if not 0 <= self.mllp_port < 65536:
            raise ConfigError(f"MLLP port out of range: {self.mllp_port}")
        for name in ("dicom_tls_port", "mllp_tls_port"):
            value = getattr(self, name)
            if not 0 <= value < 65536:
                raise ConfigError(f"{ENV_NAMES[name]} out of range: {value}")
            if value and not (self.tls_cert and self.tls_key):
                raise ConfigError(f"{ENV_NAMES[name]} needs SONOBRIDGE_TLS_CERT and "
                                  "SONOBRIDGE_TLS_KEY (the server's certificate and key)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("SONOBRIDGE_TLS_CERT and SONOBRIDGE_TLS_KEY go together")
        if self.max_body_size < 1024:
            raise ConfigError("maximum body size must be at least 1KB")
        if self.audit_writer not in ("process", "thread"):
            raise ConfigError("SONOBRIDGE_AUDIT_WRITER must be 'thread' or 'process', "
                              f"not {self.audit_writer!r}")
        if self.auth not in ("enabled", "disabled"):
            raise ConfigError(f"SONOBRIDGE_AUTH must be 'enabled' or 'disabled', not {self.auth!r}")
        if self.auth == "disabled" and not self.is_loopback:
            raise ConfigError("SONOBRIDGE_AUTH=disabled is refused: the listener "
                              f"{self.http_host} is not loopback, so the APIs would be open to "
                              "the network")
        if not 60 <= self.token_lifetime <= 86400:
            raise ConfigError("token lifetime must be between 60 and 86400 seconds")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base URL must be absolute http(s), got {self.base_url!r}")
        _ = self.worklist_stations  # refused at start, not at the first worklist query
        _ = self.consultation_deadline_seconds
        _ = self.trusted_networks

    @property
    def consultation_deadline_seconds(self) -> dict[str, int]:
        """``routine=24h,urgent=2h,asap=1h,stat=30m`` as seconds per Task/ServiceRequest
        priority (units s, m, h, d)."""
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        out: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in self.consultation_deadlines.split(","))):
            name, _, value = part.partition("=")
            name, value = name.strip(), value.strip().lower()
            if name not in ("routine", "urgent", "asap", "stat") or len(value) < 2 \
                    or value[-1] not in units or not value[:-1].isdecimal() \
                    or int(value[:-1]) == 0:
                raise ConfigError(f"SONOBRIDGE_CONSULTATION_DEADLINES: {part!r} is not "
                                  "priority=duration (routine|urgent|asap|stat, e.g. 2h, 30m)")
            out[name] = int(value[:-1]) * units[value[-1]]
        return out

    @property
    def sends_results(self) -> bool:
        """Whether any HL7 destination is configured (the results outbox and its sender)."""
        return bool(self.hl7_destinations.strip() or self.hl7_destinations_file)

    @property
    def resolved_database_url(self) -> str:
        """The database URL; the embedded default is a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'sonobridge.db').resolve()}"

    @property
    def resolved_blob_url(self) -> str:
        return self.blob_url or str((self.data_dir / "blobs").resolve())

    @property
    def worker_threads(self) -> int:
        """Threads for blocking database work (see ``db_threads``)."""
        if self.db_threads > 0:
            return self.db_threads
        cpus = os.cpu_count() or 2
        postgres = (self.database_url or "").startswith(("postgres", "postgresql"))
        return max(2, cpus * 4 if postgres else cpus)

    @property
    def worklist_stations(self) -> dict[str, tuple[str, ...]]:
        """``dicom_worklist_stations`` as modality -> AE titles (a modality may repeat)."""
        stations: dict[str, tuple[str, ...]] = {}
        for entry in (e.strip() for e in self.dicom_worklist_stations.split(",") if e.strip()):
            modality, eq, aet = (part.strip() for part in entry.partition("="))
            if not eq or not modality or not 0 < len(aet) <= 16 or "\\" in aet:
                raise ConfigError("SONOBRIDGE_DICOM_WORKLIST_STATIONS is MODALITY=AET,... "
                                  f"(AE titles up to 16 characters), not {entry!r}")
            stations[modality] = (*stations.get(modality, ()), aet)
        return stations

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` as networks (a bare address is a network of one)."""
        out = []
        for item in (i.strip() for i in self.trusted_proxies.split(",") if i.strip()):
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(f"SONOBRIDGE_TRUSTED_PROXIES: {item!r} is not an address "
                                  "or a network (10.0.0.0/8, ::1)") from None
        return tuple(out)

    @property
    def public_root(self) -> str:
        """The root URL links use when there is no request to take it from (DIMSE, commands)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
        return f"http://{host}:{self.http_port}"

    @property
    def public_base(self) -> str:
        """The FHIR base URL without a request."""
        return f"{self.public_root}/fhir"

    @property
    def fhir_base_path(self) -> str:
        return "/fhir"

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "enabled"

    @property
    def is_loopback(self) -> bool:
        host = self.http_host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from defaults, the optional TOML file, the environment and overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_file = env.get("SONOBRIDGE_CONFIG")
        if config_file:
            path = Path(config_file)
            try:
                data = tomllib.loads(path.read_text("utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
            known = {f.name for f in fields(cls)}
            unknown = set(data) - known
            if unknown:
                raise ConfigError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
            values.update(data)
        for name, var in ENV_NAMES.items():
            if var in env and env[var] != "":
                values[name] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**_coerce(values))


_SIZES = {"max_body_size", "dicom_max_object_size", "dicom_cache_size",
          "hl7_max_message_size", "limit_decoded_bytes", "hl7_max_field_size",
          "export_file_max_size"}


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(Settings)}
    out: dict[str, Any] = {}
    for name, value in values.items():
        kind = types.get(name)
        try:
            if name in _SIZES and isinstance(value, str):
                out[name] = _parse_size(value)
            elif kind == "int":
                out[name] = int(value)
            elif kind == "Path":
                out[name] = Path(value)
            elif kind == "bool" and isinstance(value, str):
                out[name] = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                out[name] = value
        except ValueError as exc:
            var = ENV_NAMES.get(name, name)
            raise ConfigError(f"{var}: {exc}") from exc
    return out
