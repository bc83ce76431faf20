"""SonoBridge as XDS.b Document Source: a final report's WS/T 500.6 CDA to the platform's
repository by ITI-41 Provide and Register Document Set-b.

Queued durably as FHIR ``Task`` resources (no table of its own): when ``core/documents``
stores a report's document (a ``DocumentReference`` ``cda-…`` with the WS/T 500.6 format) and
``SONOBRIDGE_XDS_REPOSITORY_URL`` is set, a Task (``code`` ``urn:sonobridge:xds|ITI-41``,
``focus`` the DocumentReference, status ``requested``) is written in the same transaction, so
it commits with the document or not at all. The sender (``XdsSender``, run once per cluster
by ``app/listeners.py``) takes due Tasks, builds the submission (ebRIM metadata validated
against the schemas before anything leaves), sends it as SOAP 1.2 + WS-Addressing + MTOM over
HTTP(S) — with the node's certificate for mutual TLS (ITI-19) when ``SONOBRIDGE_TLS_CERT`` is
set — and records the outcome on the Task: ``completed`` on Success; ``failed`` with the
registry's error codes when the platform refuses the metadata (it will not change by
trying again); otherwise (the network, HTTP 5xx, XDS*Busy) ``requested`` again with the next
attempt in ``restriction.period.start``, backing off as the other send queues do
(``store/queues.py``: 5 s doubling to an hour), and ``failed`` after ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import logging
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from lxml import etree

from sonobridge.config import Settings
from sonobridge.core.events import Answered, ResourceChanged
from sonobridge.core.resources import SearchSpec
from sonobridge.hie.xds import ebrim, soap
from sonobridge.hie.xds.ebrim import Code, MetadataError
from sonobridge.hie.xds.entries import document_entry, patient_cx
from sonobridge.hie.xds.peers import Peers
from sonobridge.hie.xds.xml import NS, q, schema_errors
from sonobridge.jsonio import loads
from sonobridge.periodic import Periodic
from sonobridge.store import queues
from sonobridge.store.resources import Writer

if TYPE_CHECKING:
    from sonobridge.core.services import Core

log = logging.getLogger("sonobridge.hie.xds")

QUEUE_SYSTEM = "urn:sonobridge:xds"
ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
REPORT_FORMAT = "urn:oid:2.16.156.10011.2.1.1.26"
MAX_ATTEMPTS = 20
PDF_WAIT = 3  # attempts (5 s, 10 s, 20 s apart) that wait for the report's PDF
BATCH = 20  # Tasks one round sends
TRANSIENT = {"XDSRegistryBusy", "XDSRepositoryBusy", "XDSRegistryOutOfResources",
             "XDSRepositoryOutOfResources"}
CONTENT_TYPE = Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study")

Resource = dict[str, Any]


class NotReady(Exception):
    """The submission cannot be built (yet or ever): the reason is recorded on the Task."""


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_report_document(doc_id: str, doc: Resource) -> bool:
    """A report's own WS/T 500.6 document, as ``core/documents`` stores it (not one
    received from a referring hospital, MHD or XDS)."""
    formats = [str((c.get("format") or {}).get("code")) for c in doc.get("content") or []]
    return doc_id.startswith("cda-") and REPORT_FORMAT in formats


def queue_task(doc_id: str, doc: Resource, transaction: str, now: datetime) -> Resource:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": QUEUE_SYSTEM, "code": transaction}],
                     "text": f"IHE {transaction} to the regional platform"},
            "focus": {"reference": f"DocumentReference/{doc_id}"},
            **({"for": doc["subject"]} if doc.get("subject") else {}),
            "authoredOn": _instant(now), "lastModified": _instant(now),
            "restriction": {"period": {"start": _instant(now)}},
            "input": [{"type": {"text": "attempts"}, "valueInteger": 0}]}


class Outbox:
    """Queues a report's document for ITI-41 (a ``ResourceChanged`` listener)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def on_changed(self, event: ResourceChanged) -> None:
        stored, doc = event.stored, event.resource
        if stored.type != "DocumentReference" or event.action != "C" or doc is None:
            return
        if doc.get("status") != "current" or not is_report_document(stored.id, doc):
            return
        self.enqueue(event.writer, stored.id, doc)

    def enqueue(self, writer: Writer, doc_id: str, doc: Resource) -> None:
        """ITI-41 of the document and, first time a report is final, RAD-68 of a manifest
        of each study it reports on."""
        now = datetime.now(UTC)
        resources, server = self.core.resources, self.core.server
        resources.create(server, "Task", queue_task(doc_id, doc, "ITI-41", now), writer=writer)
        if doc_id.rpartition("-")[2] != "1":  # a later version: the studies went with the first
            return
        for related in (doc.get("context") or {}).get("related") or []:
            ref = str(related.get("reference") or "")
            if not ref.startswith("DiagnosticReport/"):
                continue
            report = resources.current(writer, "DiagnosticReport", ref.partition("/")[2])
            for study in (report or {}).get("imagingStudy") or []:
                study_ref = str(study.get("reference") or "")
                if study_ref.startswith("ImagingStudy/"):
                    task = queue_task(doc_id, doc, "RAD-68", now)
                    task["focus"] = {"reference": study_ref}
                    resources.create(server, "Task", task, writer=writer)


# --------------------------------------------------------------------------- building


@dataclass
class Submission:
    content_type: str
    body: bytes
    message_id: str
    unique_ids: list[str]


def provide_and_register(sset: ebrim.SubmissionSet, entries: list[ebrim.DocEntry],
                         documents: dict[str, bytes]) -> Submission:
    """The ITI-41 message: the metadata and documents inline are validated against the
    schemas first (a message that fails is never sent: ``MetadataError``), then the documents
    move to MTOM parts."""
    request = etree.Element(q("xds", "ProvideAndRegisterDocumentSetRequest"),
                            nsmap={"xds": NS["xds"], "lcm": NS["lcm"], "rim": NS["rim"]})
    request.append(ebrim.submit_objects(sset, entries))
    nodes = []
    for entry in entries:
        node = etree.SubElement(request, q("xds", "Document"), id=entry.entry_uuid)
        node.text = base64.b64encode(documents[entry.entry_uuid]).decode()
        nodes.append(node)
    problems = schema_errors(request)
    if problems:
        raise MetadataError("XDSRepositoryMetadataError",
                            "the submission built fails the schemas: " + "; ".join(problems))
    parts: dict[str, bytes] = {}
    for number, (node, entry) in enumerate(zip(nodes, entries, strict=True), 1):
        cid = f"document{number}.{uuid.uuid4().hex}@sonobridge"
        parts[cid] = documents[entry.entry_uuid]
        soap.xop_include(node, cid)
    content_type, body, message_id = soap.write(ITI41, request, attachments=parts)
    return Submission(content_type, body, message_id, [e.unique_id for e in entries])


class PdfPending(Exception):
    """The report's PDF is queued but not made yet: the submission waits for it."""


def report_pdf_binary(core: Core, doc: Resource) -> str | None:
    """The Binary id of the PDF of the report version a WS/T 500.6 DocumentReference of ours
    was made from (``core/pdf``: ``presentedForm`` → ``Binary/rpdf-…``, rendered by a
    cluster duty shortly after signing), when that report version names one."""
    from sonobridge.core.documents.stored import source_version
    from sonobridge.core.pdf.report import pdf_attachment

    report_id = next((str(r["reference"]).partition("/")[2]
                      for r in (doc.get("context") or {}).get("related") or []
                      if str(r.get("reference", "")).startswith("DiagnosticReport/")), "")
    version = source_version(doc)
    stored = core.store.vread("DiagnosticReport", report_id, version) \
        if report_id and version else None
    form = pdf_attachment(loads(stored.content)) if stored and stored.content else None
    return str(form["url"]).partition("/")[2] if form is not None else None


def report_pdf(core: Core, doc: Resource, attempts: int) -> tuple[bytes, str] | None:
    """(the PDF, its Binary id) of the report version the document was made from, when the
    report has one (``report_pdf_binary``). Not made yet: ``PdfPending`` for the first
    ``PDF_WAIT`` attempts, then the CDA goes alone."""
    binary_id = report_pdf_binary(core, doc)
    if binary_id is None:
        return None
    binary = core.store.read("Binary", binary_id)
    if binary is None or not binary.content:
        if attempts <= PDF_WAIT:
            raise PdfPending(f"the report's PDF (Binary/{binary_id}) is not made yet")
        log.warning("ITI-41 of %s without the report's PDF (Binary/%s never made)",
                    doc.get("id"), binary_id)
        return None
    return base64.b64decode(loads(binary.content).get("data") or ""), binary_id


def _subject_cx(core: Core, subject: str, peers: Peers) -> str:
    """The subject Patient's identifier in the affinity domain, as XDS sends it (CX); a
    submission waits (``NotReady``) until the patient has one."""
    patient = core.store.read("Patient", subject[8:]) if subject.startswith("Patient/") \
        else None
    cx = patient_cx(loads(patient.content), peers.affinity_domain) \
        if patient is not None and patient.content else None
    if cx is None:
        raise NotReady(f"{subject or 'the subject'} has no identifier in the affinity domain "
                       f"(system urn:oid:{peers.affinity_domain})")
    return cx


def submission_of(core: Core, peers: Peers, doc_id: str, now: datetime, attempts: int = 1
                  ) -> tuple[ebrim.SubmissionSet, list[ebrim.DocEntry], dict[str, bytes]]:
    """The submission set, entries and bytes of a stored DocumentReference: the CDA, and
    the report's PDF (the same version) as a second DocumentEntry when there is one."""
    stored = core.store.read("DocumentReference", doc_id)
    if stored is None or not stored.content:
        raise NotReady(f"DocumentReference/{doc_id} is gone")
    doc: Resource = loads(stored.content)
    doc["id"] = doc_id
    url = str(((doc.get("content") or [{}])[0].get("attachment") or {}).get("url") or "")
    binary = core.store.read("Binary", url.rpartition("/")[2]) if url.startswith("Binary/") \
        else None
    if binary is None or not binary.content:
        raise NotReady(f"the document's bytes ({url or 'no url'}) are not stored")
    data = base64.b64decode(loads(binary.content).get("data") or "")
    subject = str((doc.get("subject") or {}).get("reference") or "")
    cx = _subject_cx(core, subject, peers)
    entry = document_entry(doc, cx, "")
    entry.hash, entry.size = hashlib.sha1(data).hexdigest(), len(data)
    entry.entry_uuid = "Document01"  # a symbolic id: the registry assigns the UUID
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    sset = ebrim.SubmissionSet(
        entry_uuid="SubmissionSet01",
        unique_id=f"{peers.source_oid}.{uuid.uuid4().int >> 64}",
        source_id=peers.source_oid, patient_id=cx, submission_time=stamp,
        content_type=CONTENT_TYPE, title=entry.title)
    entries, documents = [entry], {entry.entry_uuid: data}
    pdf = report_pdf(core, doc, attempts)
    if pdf is not None:
        from sonobridge.hie.xds.entries import DEFAULT_FORMAT
        from sonobridge.hie.xds.peers import derived_oid
        from sonobridge.hie.xds.registry import PDF_ARC, pdf_parent

        pdf_entry = copy.copy(entry)
        pdf_entry.entry_uuid = "Document02"
        # Under the CDA's own 2.25 arc, so that this gateway's ITI-43 maps it back to the
        # report (Registry.documents); the CDA of our reports always has a derived uniqueId.
        pdf_entry.unique_id = f"{entry.unique_id}.{PDF_ARC}"
        if not pdf_parent(pdf_entry.unique_id):
            pdf_entry.unique_id = derived_oid("sonobridge-report-pdf", pdf[1])
        pdf_entry.mime_type, pdf_entry.format_code = "application/pdf", DEFAULT_FORMAT
        pdf_entry.title = f"{entry.title} (PDF)"
        pdf_entry.hash, pdf_entry.size = hashlib.sha1(pdf[0]).hexdigest(), len(pdf[0])
        entries.append(pdf_entry)
        documents[pdf_entry.entry_uuid] = pdf[0]
    return sset, entries, documents


def manifest_submission_of(core: Core, peers: Peers, study_ref: str, subject: str,
                           now: datetime
                           ) -> tuple[ebrim.SubmissionSet, list[ebrim.DocEntry],
                                      dict[str, bytes]]:
    """RAD-68: a KOS manifest of every stored instance of the study, as an ITI-41
    submission (mimeType application/dicom, formatCode the KOS SOP class, the study in
    referenceIdList)."""
    from sonobridge.core.errors import CoreError
    from sonobridge.hie.xds.entries import (
        DEFAULT_CLASS,
        DEFAULT_CONFIDENTIALITY,
        DEFAULT_FACILITY,
        DEFAULT_PRACTICE,
    )
    from sonobridge.hie.xds.manifest import KOS, kos_manifest

    stored = core.store.read("ImagingStudy", study_ref.partition("/")[2])
    study: Resource = loads(stored.content) if stored is not None and stored.content else {}
    uid = next((str(i["value"])[8:] for i in study.get("identifier") or []
                if i.get("system") == "urn:dicom:uid"
                and str(i.get("value", "")).startswith("urn:oid:")), "")
    if not uid:
        raise NotReady(f"{study_ref} has no Study Instance UID")
    try:
        instances = core.archive.instances(uid)
    except CoreError as exc:
        raise NotReady(f"study {uid}: {exc}") from exc
    cx = _subject_cx(core, subject, peers)
    data, sop_uid = kos_manifest(instances, peers.repository_unique_id, now)
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    entry = ebrim.DocEntry(
        entry_uuid="Document01", unique_id=sop_uid, patient_id=cx,
        mime_type="application/dicom", creation_time=stamp, class_code=DEFAULT_CLASS,
        type_code=DEFAULT_CLASS,
        format_code=Code(KOS, "1.2.840.10008.2.6.1", "Key Object Selection Document"),
        confidentiality=DEFAULT_CONFIDENTIALITY, facility_type=DEFAULT_FACILITY,
        practice_setting=DEFAULT_PRACTICE, title="Manifest",
        hash=hashlib.sha1(data).hexdigest(), size=len(data), source_patient_id=cx,
        reference_ids=[f"{uid}^^^^urn:ihe:iti:xds:2016:studyInstanceUID"])
    sset = ebrim.SubmissionSet(
        entry_uuid="SubmissionSet01", unique_id=f"{peers.source_oid}.{uuid.uuid4().int >> 64}",
        source_id=peers.source_oid, patient_id=cx, submission_time=stamp,
        content_type=CONTENT_TYPE, title="Imaging manifest")
    return sset, [entry], {entry.entry_uuid: data}


# --------------------------------------------------------------------------- sending


class Rejected(Exception):
    """The platform answered and refused: its errors."""

    def __init__(self, errors: list[MetadataError]) -> None:
        super().__init__("; ".join(f"{e.code}: {e.message}" for e in errors))
        self.errors = errors


def client(settings: Settings, timeout: float = 30.0) -> httpx.Client:
    """HTTP(S) to the platform; with the node certificate for mutual TLS when configured."""
    context = ssl.create_default_context(cafile=settings.tls_ca or None)
    if settings.tls_cert and settings.tls_key:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return httpx.Client(timeout=timeout, verify=context)


def send(http: httpx.Client, url: str, submission: Submission) -> None:
    """POST the message; returns on Success, raises ``Rejected`` (a RegistryResponse with
    errors, or a SOAP Fault) or ``OSError``/``httpx.HTTPError`` (try again later)."""
    response = http.post(url, content=submission.body,
                         headers={"Content-Type": submission.content_type})
    if response.status_code >= 500 and "soap" not in response.headers.get("content-type", "") \
            and "multipart" not in response.headers.get("content-type", ""):
        raise OSError(f"HTTP {response.status_code} from {url}")
    try:
        answer = soap.read(response.headers.get("content-type", ""), response.content)
    except soap.SoapFault as exc:
        raise OSError(f"HTTP {response.status_code}, not a SOAP answer: {exc.reason}") from exc
    if answer.body.tag == q("soap", "Fault"):
        reason = answer.body.findtext(f".//{q('soap', 'Text')}") or "SOAP Fault"
        raise Rejected([MetadataError("SOAPFault", reason)])
    errors = ebrim.response_errors(answer.body)
    if ebrim.response_status(answer.body) != ebrim.SUCCESS:
        raise Rejected(errors or [MetadataError("XDSRegistryError",
                                                "the platform answered without Success")])


class XdsSender(Periodic):
    """Sends the queued ITI-41 Tasks (leader only: ``app/listeners.py``)."""

    name = "xds-sender"

    def __init__(self, core: Core, interval: float = 2.0,
                 clock: Any = None) -> None:
        super().__init__(interval)
        self.core = core
        self.peers = Peers.of(core.settings)
        self.clock = clock or (lambda: datetime.now(UTC))

    def round(self) -> int:
        return self.send_due()

    def due(self) -> list[Resource]:
        spec = SearchSpec("Task", [("code", f"{QUEUE_SYSTEM}|ITI-41,{QUEUE_SYSTEM}|RAD-68"),
                                   ("status", "requested"), ("_sort", "_lastUpdated"),
                                   ("_count", "200")])
        bundle = self.core.resources.search(self.core.server, spec).bundle
        now = _instant(self.clock())
        tasks = [orjson.loads(orjson.dumps(e["resource"])) for e in bundle.get("entry") or []]
        return [t for t in tasks
                if str(((t.get("restriction") or {}).get("period") or {}).get("start", ""))
                <= now][:BATCH]

    def send_due(self) -> int:
        if not self.peers.repository_url:
            return 0
        tasks = self.due()
        if not tasks:
            return 0
        with client(self.core.settings) as http:
            for task in tasks:
                if self.stopping:
                    break
                self._send_one(http, task)
        return len(tasks)

    def _send_one(self, http: httpx.Client, task: Resource) -> None:
        now = self.clock()
        focus = str((task.get("focus") or {}).get("reference") or "")
        attempts = next((int(i.get("valueInteger") or 0) for i in task.get("input") or []
                         if (i.get("type") or {}).get("text") == "attempts"), 0) + 1
        status, note, sent = "completed", "Success", True
        try:
            code = next((c.get("code") for c in (task.get("code") or {}).get("coding") or []
                         if c.get("system") == QUEUE_SYSTEM), "ITI-41")
            if code == "RAD-68":
                subject = str((task.get("for") or {}).get("reference") or "")
                sset, entries, documents = manifest_submission_of(self.core, self.peers,
                                                                  focus, subject, now)
            else:
                sset, entries, documents = submission_of(self.core, self.peers,
                                                         focus.rpartition("/")[2], now,
                                                         attempts)
            submission = provide_and_register(sset, entries, documents)
            send(http, self.peers.repository_url, submission)
            note = f"Success: uniqueId {', '.join(submission.unique_ids)}"
        except PdfPending as exc:
            status, note = "requested", str(exc)
            sent = False
        except (NotReady, MetadataError, ValueError) as exc:
            status, note = "failed", str(exc)
        except Rejected as exc:
            transient = all(e.code in TRANSIENT for e in exc.errors)
            status = "requested" if transient and attempts < MAX_ATTEMPTS else "failed"
            note = str(exc)
        except (OSError, httpx.HTTPError) as exc:
            status = "requested" if attempts < MAX_ATTEMPTS else "failed"
            note = f"{type(exc).__name__}: {exc}"
        if status != "completed":
            log.warning("XDS submission of %s, attempt %d: %s", focus, attempts, note)
        self._record(task, status, attempts, note, now)
        events = self.core.events
        # The Document Source's Export (DCM 110106, the transaction ITI-41 or RAD-68 as the
        # subtype), each try that was made (waiting for the PDF sends nothing)
        if sent and events.wants(Answered):
            code = next((c.get("code") for c in (task.get("code") or {}).get("coding") or []
                         if c.get("system") == QUEUE_SYSTEM), "ITI-41")
            events.emit(Answered(self.core.server, "export", "C", str(code),
                                 outcome="0" if status == "completed" else "4",
                                 patient=str((task.get("for") or {}).get("reference") or "")
                                 or None, detail=note[:500]))

    def _record(self, task: Resource, status: str, attempts: int, note: str,
                now: datetime) -> None:
        updated = {k: v for k, v in task.items() if k not in ("meta", "text")}
        updated["status"] = status
        updated["lastModified"] = _instant(now)
        updated["input"] = [{"type": {"text": "attempts"}, "valueInteger": attempts}]
        updated["businessStatus"] = {"text": note[:1000]}
        if status == "requested":
            later = queues.retry_at(attempts, int(now.timestamp() * 1_000_000))
            updated["restriction"] = {"period": {"start": _instant(
                datetime.fromtimestamp(later / 1_000_000, UTC))}}
        if status == "completed":
            updated["output"] = [{"type": {"text": "RegistryResponse"},
                                  "valueString": note[:1000]}]
        self.core.resources.update(self.core.server, "Task", str(task["id"]), updated)


def status(core: Core) -> dict[str, int]:
    """Tasks of the XDS queue (ITI-41 and RAD-68) by status."""
    out: dict[str, int] = {}
    for state in ("requested", "completed", "failed"):
        spec = SearchSpec("Task", [("code", f"{QUEUE_SYSTEM}|ITI-41,{QUEUE_SYSTEM}|RAD-68"),
                                   ("status", state),
                                   ("_summary", "count")])
        out[state] = int(core.resources.search(core.server, spec).bundle.get("total") or 0)
    return out


def attach(core: Core) -> None:
    """Listed in ``core/domains.py``: queue report documents when a repository is set."""
    if core.settings.xds_repository_url:
        core.events.listen(ResourceChanged, Outbox(core).on_changed)
