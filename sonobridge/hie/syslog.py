"""The ATNA audit feed (IHE ITI-20 Record Audit Event): the audit trail sent to a collector as
DICOM PS3.15 A.5 ``AuditMessage`` XML in RFC 5424 syslog messages, over TLS with RFC 5425
octet-counting framing (the IHE default, port 6514) or over UDP (RFC 5426) as a fallback.

``SONOBRIDGE_AUDIT_FEED`` names the collector: ``tls://host:6514`` or ``udp://host:514``.
Over TLS the gateway authenticates as a node (ITI-19): it presents its certificate and key
(``SONOBRIDGE_AUDIT_FEED_CERT``/``_KEY``, else the node's ``SONOBRIDGE_TLS_CERT``/``_KEY``) and
checks the collector's against ``SONOBRIDGE_AUDIT_FEED_CA`` (else ``SONOBRIDGE_TLS_CA``, else
the system's trust store); relative paths are files in the data directory.

Each message is one AuditEvent of the trail (``core/audit.py``) in the DICOM form (``to_xml``),
validated by the tests against the RELAX NG schema kept in ``schemas/``. The trail is the
queue (``core/exchange/auditfeed.py``): the sender runs with the cluster's duties (one process
per cluster), reads the events after its cursor in batches, writes them on one kept-open
connection and moves the cursor once the batches are written (saved at most once a second,
and at stop); a collector that is away is tried
again after 5 s, doubling up to an hour (the send queues' rule), and nothing is lost meanwhile
because the events wait in the trail. Sending happens on its own thread, never on a request's.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from lxml import etree
from prometheus_client import Counter

from sonobridge.config import ConfigError, Settings
from sonobridge.core.exchange.auditfeed import AuditFeed, Entry
from sonobridge.core.services import Core
from sonobridge.periodic import Periodic
from sonobridge.store.queues import retry_delay

log = logging.getLogger("sonobridge.hie.syslog")

SENT = Counter("sonobridge_audit_feed_sent_total", "Audit messages the ATNA feed delivered")
FAILED = Counter("sonobridge_audit_feed_failures_total",
                 "Rounds of the ATNA feed that could not deliver (the events wait)")

SCHEMA = Path(__file__).parent / "schemas" / "dicom-audit-message.rng"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
# FHIR code systems as the DICOM message names them (codeSystemName).
_SYSTEM_NAMES = {
    DCM: "DCM",
    "http://terminology.hl7.org/CodeSystem/audit-entity-type": "RFC-3881",
    "http://terminology.hl7.org/CodeSystem/object-role": "RFC-3881",
    "urn:ihe:event-type-code": "IHE Transactions",  # the IHE transaction (ITI-41…)
}
PRI = 10 * 8 + 5  # facility 10 (security/authorization), severity 5 (notice): ITI-20
MSGID = "IHE+RFC-3881"  # ITI-20's MSGID for the audit message payload
UDP_MAX = 65_000  # RFC 5426: one message per datagram
BATCH = 500
SAVE_EVERY = 1.0  # seconds between writes of the cursor while sending


# ------------------------------------------------------------------ the message


def _coded(parent: etree._Element, tag: str, coding: dict[str, Any]) -> None:
    system = str(coding.get("system") or "")
    code = str(coding.get("code") or "")
    display = str(coding.get("display") or code)
    etree.SubElement(parent, tag, {
        "csd-code": code, "codeSystemName": _SYSTEM_NAMES.get(system, system or "-"),
        "displayName": display, "originalText": display})


def _id_type(entity: dict[str, Any]) -> tuple[dict[str, str], str]:
    """(ParticipantObjectIDTypeCode, ParticipantObjectID) of an AuditEvent entity."""
    what = entity.get("what") or {}
    role = str((entity.get("role") or {}).get("code") or "")
    reference = str(what.get("reference") or "")
    identifier = what.get("identifier") or {}
    if identifier.get("system") == "urn:dicom:uid":
        return ({"system": DCM, "code": "110180", "display": "Study Instance UID"},
                str(identifier.get("value") or "").removeprefix("urn:oid:"))
    if role == "1" and reference:
        return ({"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                 "code": "2", "display": "Patient Number"}, reference)
    if role == "24":
        return ({"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                 "code": "rest", "display": "FHIR query"}, "query")
    return ({"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
             "code": "12", "display": "URI"}, reference or "-")


def to_xml(event: dict[str, Any], source_id: str, site_id: str = "") -> bytes:
    """A stored AuditEvent (BALP-shaped, ``core/audit.py``) as a DICOM AuditMessage."""
    root = etree.Element("AuditMessage")
    ident = etree.SubElement(root, "EventIdentification", {
        "EventActionCode": str(event.get("action") or "E"),
        "EventDateTime": str(event.get("recorded")),
        "EventOutcomeIndicator": str(event.get("outcome") or "0")})
    _coded(ident, "EventID", event.get("type") or {})
    for subtype in event.get("subtype") or []:
        _coded(ident, "EventTypeCode", subtype)
    if event.get("outcomeDesc"):
        etree.SubElement(ident, "EventOutcomeDescription").text = str(event["outcomeDesc"])
    for agent in event.get("agent") or []:
        who = agent.get("who") or {}
        attrs = {"UserID": str((who.get("identifier") or {}).get("value")
                               or who.get("reference") or "-"),
                 "UserIsRequestor": "true" if agent.get("requestor") else "false"}
        if who.get("reference"):
            attrs["AlternativeUserID"] = str(who["reference"])
        if who.get("display"):
            attrs["UserName"] = str(who["display"])
        network = agent.get("network") or {}
        if network.get("address"):
            attrs["NetworkAccessPointID"] = str(network["address"])
            attrs["NetworkAccessPointTypeCode"] = str(network.get("type") or "2")
        participant = etree.SubElement(root, "ActiveParticipant", attrs)
        for coding in (agent.get("type") or {}).get("coding") or []:
            _coded(participant, "RoleIDCode", coding)
    # The gateway itself: the application that recorded the event (DCM 110150).
    gateway = etree.SubElement(root, "ActiveParticipant", {
        "UserID": source_id, "UserIsRequestor": "false",
        "NetworkAccessPointID": socket.gethostname()[:255] or "-",
        "NetworkAccessPointTypeCode": "1"})
    _coded(gateway, "RoleIDCode", {"system": DCM, "code": "110150", "display": "Application"})
    source = etree.SubElement(root, "AuditSourceIdentification", {
        "AuditSourceID": source_id, **({"AuditEnterpriseSiteID": site_id} if site_id else {})})
    _coded(source, "AuditSourceTypeCode", {"system": DCM, "code": "4",
                                           "display": "Application Server"})
    for entity in event.get("entity") or []:
        type_code, object_id = _id_type(entity)
        attrs = {"ParticipantObjectID": object_id}
        if (entity.get("type") or {}).get("code"):
            attrs["ParticipantObjectTypeCode"] = str(entity["type"]["code"])
        if (entity.get("role") or {}).get("code"):
            attrs["ParticipantObjectTypeCodeRole"] = str(entity["role"]["code"])
        obj = etree.SubElement(root, "ParticipantObjectIdentification", attrs)
        _coded(obj, "ParticipantObjectIDTypeCode", type_code)
        if entity.get("query"):
            etree.SubElement(obj, "ParticipantObjectQuery").text = str(entity["query"])
        for detail in entity.get("detail") or []:
            value = str(detail.get("valueString") or "")
            etree.SubElement(obj, "ParticipantObjectDetail", {
                "type": str(detail.get("type") or "-"),
                "value": base64.b64encode(value.encode()).decode()})
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def syslog_message(xml: bytes, *, hostname: str, app: str = "sonobridge",
                   procid: str | None = None, stamp: float | None = None) -> bytes:
    """RFC 5424: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG``."""
    moment = time.time() if stamp is None else stamp
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + \
        f".{int(moment % 1 * 1000):03d}Z"
    header = f"<{PRI}>1 {when} {hostname or '-'} {app} {procid or os.getpid()} {MSGID} - "
    return header.encode("ascii", "replace") + b"\xef\xbb\xbf" + xml


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 (and RFC 6587) framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode() + b" " + message


# ------------------------------------------------------------------ the collector


class Collector:
    """A connection to the configured collector, opened when first needed and kept."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        target = urlsplit(settings.audit_feed)
        if target.scheme not in ("tls", "udp") or not target.hostname:
            raise ConfigError(f"SONOBRIDGE_AUDIT_FEED={settings.audit_feed!r}: use "
                              "tls://host:6514 or udp://host:514")
        self.scheme = target.scheme
        self.host = target.hostname
        self.port = target.port or (6514 if self.scheme == "tls" else 514)
        self.timeout = timeout
        self.context = client_context(settings) if self.scheme == "tls" else None
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            if self.scheme == "udp":
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._sock.connect((self.host, self.port))
            else:
                assert self.context is not None
                raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
                try:
                    self._sock = self.context.wrap_socket(raw, server_hostname=self.host)
                except BaseException:
                    raw.close()
                    raise
        return self._sock

    def send(self, messages: list[bytes]) -> None:
        """Deliver every message or raise ``OSError`` (the connection is then dropped)."""
        try:
            sock = self._connect()
            if self.scheme == "udp":
                for message in messages:
                    if len(message) > UDP_MAX:
                        log.warning("an audit message of %d bytes is too large for UDP; "
                                    "sent cut at %d", len(message), UDP_MAX)
                    sock.send(message[:UDP_MAX])
            else:
                sock.sendall(b"".join(octet_counted(m) for m in messages))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


def _file(settings: Settings, name: str) -> str:
    if not name:
        return ""
    path = Path(name)
    return str(path if path.is_absolute() else settings.data_dir / path)


def client_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2+ towards the collector, the node's certificate presented (ITI-19)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    ca = _file(settings, settings.audit_feed_ca or settings.tls_ca)
    cert = _file(settings, settings.audit_feed_cert or settings.tls_cert)
    key = _file(settings, settings.audit_feed_key or settings.tls_key)
    try:
        if ca:
            context.load_verify_locations(cafile=ca)
        if cert:
            context.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"the audit feed's TLS files cannot be loaded: {exc}") from None
    return context


# ------------------------------------------------------------------ the sender


class AuditFeedSender(Periodic):
    """Sends the trail after the cursor, in batches, until it is caught up."""

    name = "audit-feed"

    def __init__(self, core: Core, interval: float = 0.2) -> None:
        super().__init__(interval)
        settings = core.settings
        self.feed = AuditFeed(core, settings.audit_feed)
        self.collector = Collector(settings)
        self.source_id = settings.audit_source_id or settings.dicom_aet
        self.hostname = socket.gethostname()[:255] or "-"
        self.failures = 0
        self.retry_at = 0.0
        self._position: int | None = None
        self._saved: int | None = None
        self._saved_at = 0.0

    def round(self) -> int:
        if time.monotonic() < self.retry_at:
            return 0
        sent = 0
        try:
            if self._position is None:
                self._position = self._saved = self.feed.position()
            while not self.stopping:
                batch = self.feed.after(self._position, BATCH)
                if not batch:
                    break
                self.collector.send([self.message(e) for e in batch])
                self._position = batch[-1].seq
                SENT.inc(len(batch))
                sent += len(batch)
                self._save(due_only=True)
            self._save(due_only=True)
            self.failures = 0
        except OSError as exc:
            self.failures += 1
            FAILED.inc()
            delay = retry_delay(self.failures)
            self.retry_at = time.monotonic() + delay
            log.warning("audit feed to %s: %s; %d events wait, next try in %d s",
                        self.feed.target, exc, self.feed.head() - (self._position or 0),
                        delay)
        return sent

    def _save(self, due_only: bool) -> None:
        """Write the cursor: at most once per ``SAVE_EVERY`` seconds while sending (each
        write is a transaction the requests share the database with), and at stop."""
        if self._position is None or self._position == self._saved:
            return
        if due_only and time.monotonic() - self._saved_at < SAVE_EVERY:
            return
        self.feed.advance(self._position)
        self._saved, self._saved_at = self._position, time.monotonic()

    def message(self, entry: Entry) -> bytes:
        event = orjson.loads(entry.event)
        event.setdefault("id", entry.res_id)
        return syslog_message(to_xml(event, self.source_id), hostname=self.hostname)

    def stop(self) -> None:
        super().stop()
        self.collector.close()
        try:
            self._save(due_only=False)
        except Exception:  # the database away at shutdown: at most one second is sent again
            log.exception("audit feed: the cursor could not be saved at stop")
