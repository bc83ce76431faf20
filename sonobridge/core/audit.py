"""The audit trail: an ``AuditEvent`` (shaped after IHE BALP) for every access and change.

Each event is stored as a FHIR AuditEvent (so the audit administrator can search it) and
chained in ``audit_log``: ``hash = sha256(previous hash + the event's stored bytes)``. Editing
or deleting an event, or a link of the chain, breaks the chain; ``sonobridge audit verify``
finds it. Changes are audited inside their own transaction (``ResourceStore.before_commit``);
reads, searches, DICOMweb retrievals and logins are queued and written by a background thread
in batches, and the queue is drained on shutdown.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, Row, insert, select, text

from sonobridge.core.events import Answered, Events, ResourceChanged
from sonobridge.core.policy import Caller
from sonobridge.store.resources import ResourceStore, Writer
from sonobridge.store.tables import audit_log as AL
from sonobridge.store.timeutil import to_instant

if TYPE_CHECKING:
    from sonobridge.core.audit_writer import WriterProcess

log = logging.getLogger("sonobridge.audit")

GENESIS = "0" * 64
# Built once: the chain head is read by every audited write.
_CHAIN_HEAD = select(AL.c.hash).order_by(AL.c.seq.desc()).limit(1)
DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
SONO = "urn:sonobridge:audit-event"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
# (type system, type code, display) per kind of record
KINDS = {
    "rest": (EVENT_TYPE, "rest", "RESTful Operation"),
    "dicom-access": (DCM, "110103", "DICOM Instances Accessed"),
    "dicom-store": (DCM, "110104", "DICOM Instances Transferred"),
    "dicom-query": (DCM, "110112", "Query"),
    "login": (DCM, "110114", "User Authentication"),
    "logout": (DCM, "110114", "User Authentication"),
    "token": (DCM, "110114", "User Authentication"),
    "introspect": (DCM, "110114", "User Authentication"),
    "revoke": (DCM, "110114", "User Authentication"),
    "register": (DCM, "110114", "User Authentication"),
    "dicom-association": (DCM, "110100", "Application Activity"),
    "hl7-in": (DCM, "110107", "Import"),
    "hl7-out": (DCM, "110106", "Export"),
    # document exchange (IHE XDS.b/XDS-I.b, MHD, PIXm, PDQm): the event type of the
    # transaction's audit message, its transaction code in the subtype (SUBTYPES)
    "import": (DCM, "110107", "Import"),
    "export": (DCM, "110106", "Export"),
    "query": (DCM, "110112", "Query"),
    "patient-record": (DCM, "110110", "Patient Record"),
}
MAX_INSTANCES = 1000  # listed in one aggregated event; the count says how many retrievals
IHE = "urn:ihe:event-type-code"
# subtype codes with their own system; any other subtype is a restful interaction ("rest")
# or a SonoBridge code
SUBTYPES = {
    "login": (DCM, "110122", "Login"), "logout": (DCM, "110123", "Logout"),
    **{code: (IHE, code, display) for code, display in (
        ("ITI-8", "Patient Identity Feed"), ("ITI-9", "PIX Query"),
        ("ITI-18", "Registry Stored Query"),
        ("ITI-41", "Provide and Register Document Set-b"),
        ("ITI-42", "Register Document Set-b"), ("ITI-43", "Retrieve Document Set"),
        ("ITI-65", "Provide Document Bundle"), ("ITI-66", "Find Document Lists"),
        ("ITI-67", "Find Document References"), ("ITI-68", "Retrieve Document"),
        ("ITI-78", "Mobile Patient Demographics Query"),
        ("ITI-83", "Mobile Patient Identifier Cross-reference Query"),
        ("ITI-104", "Patient Identity Feed FHIR"), ("ITI-119", "Patient Demographics Match"),
        ("RAD-68", "Provide and Register Imaging Document Set - MTOM/XOP"),
        ("RAD-69", "Retrieve Imaging Document Set"))},
}
_OUTCOME = {"0": "success", "4": "minor failure", "8": "serious failure"}


@dataclass
class Record:
    """One thing to audit, before it becomes an AuditEvent."""

    kind: str  # a key of KINDS
    action: str  # C R U D E
    subtype: str  # read, search-type, create, login, token, ...
    outcome: str = "0"  # 0 success, 4 minor failure (refused), 8 serious failure
    who: str = ""  # user id or client id (the token's sub)
    client_id: str = ""
    fhir_user: str | None = None
    username: str | None = None
    ip: str = ""
    resource: str | None = None  # Type/id
    patient: str | None = None  # Patient/id
    study: str | None = None  # Study Instance UID
    query: str | None = None
    detail: str = ""
    recorded: float = field(default_factory=time.time)
    instances: tuple[str, ...] = ()  # SOP Instance UIDs (DICOM Instances Accessed)
    count: int = 1  # the retrievals this record stands for (aggregated DICOM reads)
    # More resources the one event is about (Type/id), each an entity: a batch of derived
    # writes audited as one event (an SR's measurement Observations).
    resources: tuple[str, ...] = ()


def record_of(caller: Caller, kind: str, action: str, subtype: str, *, outcome: str = "0",
              resource: str | None = None, patient: str | None = None,
              study: str | None = None, query: str | None = None, detail: str = "",
              instances: tuple[str, ...] = (), resources: tuple[str, ...] = ()) -> Record:
    """The one place a caller becomes the agents of an audit record: who (the token's
    subject, ``dicom:AET``, ``hl7:APP``), the client, the FHIR user, the address, and the
    patient in context when the record names no other."""
    policy = caller.policy
    return Record(kind, action, subtype, outcome=outcome, who=policy.subject,
                  client_id=policy.client_id, fhir_user=policy.fhir_user,
                  username=caller.username, ip=caller.address, resource=resource,
                  patient=patient or caller.patient_reference, study=study, query=query,
                  detail=detail, instances=instances, resources=resources)


def to_audit_event(record: Record) -> dict[str, Any]:
    system, code, display = KINDS[record.kind]
    sub_system, sub_code, sub_display = SUBTYPES.get(record.subtype) or (
        RESTFUL if record.kind == "rest" else SONO, record.subtype, record.subtype)
    agent_who: dict[str, Any] = {"identifier": {"system": "urn:sonobridge:user",
                                                "value": record.who or "anonymous"}}
    if record.fhir_user:
        agent_who["reference"] = record.fhir_user
    if record.username:
        agent_who["display"] = record.username
    agents: list[dict[str, Any]] = [{
        "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP",
                             "display": "information recipient"}]},
        "who": agent_who, "requestor": True,
        **({"network": {"address": record.ip, "type": "2"}} if record.ip else {}),
    }]
    if record.client_id:
        agents.append({
            "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": "urn:sonobridge:client",
                                   "value": record.client_id}},
            "requestor": False})
    entities: list[dict[str, Any]] = []
    if record.patient:
        entities.append({"what": {"reference": record.patient},
                         "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})
    for resource in (record.resource, *record.resources):
        if resource and resource != record.patient:
            entities.append({"what": {"reference": resource},
                             "type": {"system": ENTITY_TYPE, "code": "2",
                                      "display": "System Object"}})
    if record.study:
        study: dict[str, Any] = {
            "what": {"identifier": {"system": "urn:dicom:uid",
                                    "value": f"urn:oid:{record.study}"}},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "3", "display": "Report"}}
        details = []
        if record.count > 1:
            details.append({"type": "retrievals", "valueString": str(record.count)})
        if record.instances:
            # As DICOM's "Instances Accessed" message lists them (ParticipantObjectDescription)
            details.append({"type": "SOP Instance UIDs",
                            "valueString": "\\".join(record.instances[:MAX_INSTANCES])})
        if details:
            study["detail"] = details
        entities.append(study)
    if record.query is not None:
        entities.append({"type": {"system": ENTITY_TYPE, "code": "2",
                                  "display": "System Object"},
                         "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                         "query": base64.b64encode(record.query.encode()).decode()})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": system, "code": code, "display": display},
        "subtype": [{"system": sub_system, "code": sub_code, "display": sub_display}],
        "action": record.action,
        "recorded": to_instant(int(record.recorded * 1_000_000)),
        "outcome": record.outcome,
        "agent": agents,
        "source": {"observer": {"display": "SonoBridge"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                       "security-source-type", "code": "4",
                             "display": "Application Server"}]},
    }
    if record.outcome != "0" or record.detail:
        event["outcomeDesc"] = record.detail or _OUTCOME[record.outcome]
    if entities:
        event["entity"] = entities
    return event


@dataclass
class _Window:
    """DICOM reads of one study by one caller, gathered since ``opened``."""

    record: Record
    opened: float
    count: int = 0
    instances: dict[str, None] = field(default_factory=dict)  # ordered, unique


class AuditTrail:
    """Writes the trail. Reads are queued and written by one background thread in batches
    (at most ``BATCH_SECONDS`` after they happen); changes are written in their own
    transaction.

    DICOM retrievals come in bursts (a viewer fetches a cine frame by frame, a C-MOVE sends a
    series): the first retrieval of a study by a caller is recorded at once, the ones that
    follow within ``read_window`` seconds become one more event at the window's end, with
    their count and the SOP instances they touched, as DICOM's "Instances Accessed" message
    does. A clean shutdown writes every open window; a killed process loses at most what
    was gathered in open windows and the last batch (``docs/security.md``)."""

    BATCH_SECONDS = 0.05

    def __init__(self, store: ResourceStore, *, syslog: str = "", batch: int = 100,
                 read_window: float = 60.0) -> None:
        self.store = store
        self.batch = batch
        self.read_window = read_window
        self._queue: queue.Queue[Record | None] = queue.Queue(maxsize=50_000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, ...], _Window] = {}
        self._windows_lock = threading.Lock()
        self._syslog = _Syslog(syslog) if syslog else None
        self._process: WriterProcess | None = None
        self._closed = False
        store.before_commit.append(self._append_pending)

    def use_process(self, database_url: str, syslog: str = "", *, wait: bool = True) -> None:
        """Write the batches of reads in a process of their own (``core/audit_writer.py``);
        changes are still audited in their own transaction, here. Without ``wait`` the
        process starts in the background (a second or so of imports) and this process writes
        until it is ready, so that a server answers at once."""
        def start() -> None:
            from sonobridge.core.audit_writer import WriterProcess

            try:
                process = WriterProcess(database_url, syslog)
            except Exception:
                log.exception("the audit writer process could not start; audit events are "
                              "written by the server's process")
                return
            with self._lock:
                if self._closed:
                    process.stop()
                else:
                    self._process = process

        if self._process is not None:
            return
        if wait:
            start()
        else:
            threading.Thread(target=start, name="audit-writer-start", daemon=True).start()

    # ------------------------------------------------------------------ listening

    def listen(self, events: Events) -> None:
        """Audit what the core says happened (``core/events.py``)."""
        events.listen(ResourceChanged, self._changed)
        events.listen(Answered, self._answered)

    def _changed(self, event: ResourceChanged) -> None:
        if not event.caller.audited or not event.audited:
            return
        stored = event.stored
        patient = patient_of(event.resource) if event.resource is not None else None
        self.in_transaction(event.writer, record_of(
            event.caller, "rest", event.action, event.interaction,
            resource=f"{stored.type}/{stored.id}", patient=patient))

    def _answered(self, event: Answered) -> None:
        record = record_of(event.caller, event.kind, event.action, event.subtype,
                           outcome=event.outcome, resource=event.resource,
                           patient=event.patient, study=event.study, query=event.query,
                           detail=event.detail, instances=event.instances)
        if event.writer is not None:
            self.in_transaction(event.writer, record)
        elif not self._gathered(record):
            self.later(record)

    # ------------------------------------------------------------------ recording

    def in_transaction(self, writer: Writer, record: Record) -> None:
        """Audit a change with the transaction that makes it."""
        writer.pending_audit.append(record)

    def _gathered(self, record: Record) -> bool:
        """True when ``record`` joins an open window of DICOM reads (written later)."""
        if self.read_window <= 0 or record.kind != "dicom-access" or record.action != "R" \
                or record.outcome != "0" or not record.study:
            return False
        key = (record.who, record.client_id, record.ip, record.study, record.fhir_user or "")
        with self._windows_lock:
            window = self._windows.get(key)
            if window is None:  # the first: written now, and a window opens
                self._windows[key] = _Window(record, time.monotonic())
                return False
            window.count += 1
            for uid in record.instances:
                window.instances[uid] = None
        self._start()
        return True

    def _closed_windows(self, everything: bool = False) -> list[Record]:
        """The windows whose time is up (or all of them), as one record each."""
        now = time.monotonic()
        out = []
        with self._windows_lock:
            for key, window in list(self._windows.items()):
                if everything or now - window.opened >= self.read_window:
                    del self._windows[key]
                    if window.count:
                        first = window.record
                        out.append(Record(
                            first.kind, first.action, "retrieve", who=first.who,
                            client_id=first.client_id, fhir_user=first.fhir_user,
                            username=first.username, ip=first.ip, patient=first.patient,
                            study=first.study, instances=tuple(window.instances),
                            count=window.count,
                            detail=f"{window.count} more retrievals of the study within "
                                   f"{self.read_window:g} s of the first"))
        return out

    def later(self, record: Record) -> None:
        """Audit a read (or a refused request): written within a moment, in a batch."""
        self._start()
        try:
            self._queue.put_nowait(record)
        except queue.Full:  # never drop an event: write it now, on this thread
            with self.store.write() as writer:
                writer.pending_audit.append(record)

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="audit-writer",
                                                    daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            try:  # wake at least once a second to close the windows whose time is up
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                first = _TICK
            if first is None:
                self._write(self._closed_windows(everything=True))
                return
            batch = [] if first is _TICK else [first]
            while len(batch) < self.batch:
                try:
                    item = self._queue.get(timeout=self.BATCH_SECONDS)
                except queue.Empty:
                    break
                if item is None:
                    self._write(batch + self._closed_windows(everything=True))
                    return
                batch.append(item)
            self._write(batch + self._closed_windows())

    def _write(self, batch: list[Record]) -> None:
        if not batch:
            return
        process = self._process
        if process is not None:
            try:
                process.write(batch)
                return
            except (OSError, ValueError, EOFError):  # it died: write here from now on
                log.error("the audit writer process is gone (exit code %s); audit events "
                          "are written by the server's process again",
                          process.process.exitcode)
                self._process = None
        for attempt in range(5):
            try:
                with self.store.write() as writer:
                    writer.pending_audit.extend(batch)
                return
            except Exception:  # the database may be briefly unavailable; retry, then log
                log.exception("writing %d audit events failed (attempt %d)", len(batch),
                              attempt + 1)
                time.sleep(0.2 * (attempt + 1))

    def flush(self) -> None:
        """Write everything queued (at shutdown, and in tests)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        if self._process is not None:
            self._process.flush()

    def close(self) -> None:
        """Flush, and stop the writer process if there is one."""
        self.flush()
        with self._lock:
            self._closed = True
            process, self._process = self._process, None
        if process is not None:
            process.stop()

    # ------------------------------------------------------------------ the chain

    def _append_pending(self, writer: Writer) -> None:
        if not writer.pending_audit:
            return
        records, writer.pending_audit = writer.pending_audit, []
        conn = writer.conn
        if conn.dialect.name == "postgresql":
            # One chain: appends queue on this lock until the holder commits.
            conn.execute(text("SELECT pg_advisory_xact_lock(7413001)"))
        head = conn.execute(_CHAIN_HEAD).scalar()
        previous = head or GENESIS
        rows = []
        events = []
        created = writer.create_many("AuditEvent", [to_audit_event(r) for r in records])
        for record, stored in zip(records, created, strict=True):
            assert stored.content is not None
            digest = chain_hash(previous, stored.content)
            rows.append({"recorded": int(record.recorded * 1_000_000),
                         "event": stored.content, "res_id": stored.id,
                         "prev_hash": previous, "hash": digest})
            events.append(stored.content)
            previous = digest
        conn.execute(insert(AL), rows)  # their index rows go with the change's (``write``)
        if self._syslog is not None:
            for content in events:
                self._syslog.send(content)


_TICK = Record("rest", "R", "tick")  # the writer's wake-up: no event


def chain_hash(previous: str, content: bytes) -> str:
    return hashlib.sha256(previous.encode() + content).hexdigest()


@dataclass
class Verification:
    events: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)


def verify(store: ResourceStore, progress: Callable[[int], None] | None = None) -> Verification:
    """Walk the chain: every link's hash, and every event still stored exactly as chained."""
    from sonobridge.store.tables import resource_versions as V
    from sonobridge.store.tables import resources as R

    result = Verification()
    previous = GENESIS
    with store.reader.connect() as conn:
        for rows in _batches(conn, 2000):
            ids = [row.res_id for row in rows]
            current = {r.res_id: (r.deleted, r.content) for r in conn.execute(
                select(R.c.res_id, R.c.deleted, V.c.content).select_from(
                    R.join(V, (V.c.rid == R.c.rid) & (V.c.version_id == R.c.version_id)))
                .where(R.c.res_type == "AuditEvent", R.c.res_id.in_(ids)))}
            for row in rows:
                if row.prev_hash != previous:
                    result.problems.append(f"event #{row.seq}: the link to the previous event "
                                           "is broken (an event before it was removed or "
                                           "changed)")
                if chain_hash(row.prev_hash, row.event) != row.hash:
                    result.problems.append(f"event #{row.seq}: its content does not match its "
                                           "hash (the chain row was edited)")
                found = current.get(row.res_id)
                if found is None or found[0]:
                    result.problems.append(f"event #{row.seq} (AuditEvent/{row.res_id}) was "
                                           "deleted")
                elif bytes(found[1]) != bytes(row.event):
                    result.problems.append(f"event #{row.seq} (AuditEvent/{row.res_id}) was "
                                           "changed after it was recorded")
                previous = row.hash
                result.events += 1
            if progress is not None:
                progress(len(rows))
    result.head = previous
    return result


def _batches(conn: Connection, size: int) -> Iterator[Sequence[Row[*tuple[Any, ...]]]]:
    last = 0
    while True:
        rows = conn.execute(select(AL).where(AL.c.seq > last).order_by(AL.c.seq).limit(size)
                            ).all()
        if not rows:
            return
        yield rows
        last = rows[-1].seq


def count(store: ResourceStore) -> int:
    from sqlalchemy import func

    with store.reader.connect() as conn:
        return conn.execute(select(func.count()).select_from(AL)).scalar_one()


class _Syslog:
    """RFC 5424 over UDP (RFC 5426), one AuditEvent JSON per message. The standard library's
    SysLogHandler writes the older RFC 3164 header, so the few lines are written here."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.address = (host or "127.0.0.1", int(port or 514))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.hostname = socket.gethostname()[:255] or "-"

    def send(self, content: bytes) -> None:
        # facility 10 (security/authorization), severity 5 (notice): PRI = 10*8+5 = 85
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        header = f"<85>1 {stamp} {self.hostname} sonobridge - AuditEvent - ".encode()
        try:
            self.sock.sendto(header + b"\xef\xbb\xbf" + content[:60000], self.address)
        except OSError as exc:
            log.warning("syslog export failed: %s", exc)


def patient_of(resource: dict[str, Any]) -> str | None:
    """The patient a resource is about, for the audit entity (subject/patient references)."""
    if resource.get("resourceType") == "Patient" and resource.get("id"):
        return f"Patient/{resource['id']}"
    for key in ("subject", "patient", "beneficiary"):
        ref = resource.get(key)
        if isinstance(ref, dict):
            value = ref.get("reference", "")
            if isinstance(value, str) and "Patient/" in value:
                return "Patient/" + value.rsplit("Patient/", 1)[1].split("/")[0]
    return None


def dumps(record: Record) -> bytes:
    return orjson.dumps(to_audit_event(record))
