"""WS/T 500 CDA documents of the remote-ultrasound record (STANDARDS.md §10, §12).

- ``GET /fhir/DiagnosticReport/{id}/$cda``: the WS/T 500.6 检查报告 of a final report
  (``application/xml``; 409 while the report is not final). ``GET /fhir/Task/{id}/$cda``: the
  WS/T 500.45 会诊记录 of a completed consultation. The report or Task is read with the
  caller's rights (a token that may not read it gets the same answer as for any read); what
  it refers to (patient, request, practitioners, organisations, measurements) is part of the
  document and read on the server's account, measurements only when they are the report's
  own subject's.
- When a report becomes final (a ``ResourceChanged`` listener, in the report's transaction)
  its document is stored: the CDA as a ``Binary`` and a ``DocumentReference`` (format
  ``urn:oid:2.16.156.10011.2.1.1.26``, content.attachment.url the Binary, hash and size) that
  XDS/MHD will serve. Each later change of the final report (amended, corrected) stores the
  next version of the same set: ``relatedDocument`` RPLC in the CDA, ``relatesTo`` replaces
  in the DocumentReference, the previous one ``superseded``. A report the document cannot be
  made from (no organisation, no name) is left as it is, with a warning in the log: the
  clinical write is never refused because its derived document cannot be made, and ``$cda``
  says why. A report deleted or entered in error takes its current document with it
  (DocumentReference ``entered-in-error``).
- When a consultation Task (``basedOn`` its request) becomes completed, its 会诊记录 is
  stored the same way, once (a DocumentReference related to the Task, the request and the
  report; format ``urn:oid:2.16.156.10011.2.1.1.65``); ``Task/{id}/$cda`` serves it.
- The reverse (a referring hospital's earlier reports): ``POST /fhir/DocumentReference``
  with the CDA as ``content.attachment.data``, or ``POST /fhir/Binary`` of the CDA itself.
  The CDA is checked (no DOCTYPE or entities, the CDA R2 schema with the WS/T 500 overlay,
  the WS/T 500.6 rules) — a failing one is stored nowhere and answered 422 with each problem
  (rule, line, XPath) — the patient is matched by 身份证号, then 健康卡号, then 门(急)诊号/住院号,
  and a DiagnosticReport is written for that patient with the caller's rights (so a token
  that may not write reports cannot import one); a new version (RPLC) updates the report the
  replaced version made. A posted Binary is checked at once and filed at commit: by the
  DocumentReference of the same transaction that points at it (an MHD-style bundle, in either
  order; that DocumentReference is completed), else by one made for it. A document id
  already filed is 409.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sonobridge.core.documents.received import (
    Pending,
    checked,
    completed,
    decoded,
    import_report,
)
from sonobridge.core.documents.sources import (
    Resource,
    consultation_sources,
    getter,
    imported,
    report_sources,
)
from sonobridge.core.documents.stored import (
    attachment_of,
    current_consultation,
    current_document,
    source_version,
    store_consultation_document,
    store_report_document,
    stored_bytes,
)
from sonobridge.core.errors import CoreError
from sonobridge.core.events import ResourceChanged, ResourceWriting
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.policy import Caller
from sonobridge.jsonio import loads as json_loads
from sonobridge.mappings.cda.consultation import consultation_document
from sonobridge.mappings.cda.documentref import document_reference, set_id_of, version_of
from sonobridge.mappings.cda.header import DocumentVersion, reference_id
from sonobridge.mappings.cda.problems import MappingError
from sonobridge.mappings.cda.report import FINAL, report_document
from sonobridge.mappings.cda.validate import problems
from sonobridge.store.resources import Writer

if TYPE_CHECKING:
    from sonobridge.core.services import Core

log = logging.getLogger("sonobridge.documents")

DEFINITION = "http://sonobridge.org/fhir/OperationDefinition/cda"


class Documents:
    """The documents domain of one core: ``$cda``, the listeners that store documents as
    reports and consultations become final, and the filing of received documents (``sources``
    reads what a document is made from, ``stored`` keeps documents, ``received`` files
    them)."""

    def __init__(self, core: Core, clock: Callable[[], datetime] | None = None) -> None:
        self.core = core
        self.clock = clock or (lambda: datetime.now(UTC))
        # Per open transaction; a transaction that fails takes its entry with it. Requests
        # run on several threads: the map itself is guarded, each entry has one writer.
        self._pending: weakref.WeakKeyDictionary[Writer, Pending] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _pending_of(self, writer: Writer) -> Pending:
        with self._lock:
            return self._pending.setdefault(writer, Pending())

    def attach(self) -> None:
        core = self.core
        core.operations.register(Operation(
            "cda", frozenset({"instance"}), self.cda,
            types=frozenset({"DiagnosticReport", "Task"}), definition=DEFINITION,
            documentation="The WS/T 500 CDA document: 500.6 检查报告 of a final "
                          "DiagnosticReport, 500.45 会诊记录 of a completed consultation Task "
                          "(application/xml)."))
        core.events.listen(ResourceChanged, self.on_changed)
        core.events.listen(ResourceWriting, self.on_writing)
        # First among the hooks: what it writes is then audited with the rest of the change.
        core.store.before_commit.insert(0, self.settle)

    # ------------------------------------------------------------ $cda

    def cda(self, call: OperationCall) -> OperationResult:
        assert call.res_type is not None and call.res_id is not None
        stored = self.core.resources.read(call.caller, call.res_type, call.res_id)
        assert stored.content is not None
        resource: Resource = json_loads(stored.content)
        get = getter(self.core, None)
        try:
            if call.res_type == "Task":
                if resource.get("status") != "completed":
                    raise CoreError(409, "conflict", f"Task/{call.res_id} is "
                                    f"{resource.get('status')!r}: a 会诊记录 is made when the "
                                    "consultation is completed", expression=["Task.status"])
                doc = current_consultation(self.core, None, call.res_id)
                stored_data = stored_bytes(self.core, None, doc) if doc else None
                data = stored_data or consultation_document(
                    consultation_sources(self.core, get, resource),
                    DocumentVersion(f"Task-{call.res_id}"), self.clock())
            else:
                if resource.get("status") not in FINAL:
                    raise CoreError(409, "conflict", f"DiagnosticReport/{call.res_id} is "
                                    f"{resource.get('status')!r}: its 检查报告 exists once it "
                                    "is final", expression=["DiagnosticReport.status"])
                data = self._stored_or_made(call.res_id, resource, stored.version_id)
        except MappingError as exc:
            raise CoreError(422, "processing", str(exc), expression=[exc.expression]) from None
        found = problems(data)
        if found:  # our own document failing our own checks: a bug, never served
            log.error("$cda of %s/%s fails its checks: %s", call.res_type, call.res_id,
                      "; ".join(map(str, found[:5])))
            raise CoreError(500, "exception", "the document made fails its own checks; "
                            "the server log has the details")
        return OperationResult(data, content_type="application/xml; charset=utf-8")

    def _stored_or_made(self, report_id: str, report: Resource, version: int) -> bytes:
        """The stored document of this version of the report (the same bytes every time),
        else one made now (the report was final before documents were stored)."""
        core = self.core
        doc = current_document(core, None, report_id)
        if doc is not None and source_version(doc) == version:
            held = stored_bytes(core, None, doc)
            if held is not None:
                return held
        old = DocumentVersion(set_id_of(doc) or f"DiagnosticReport-{report_id}",
                              version_of(doc)) if doc else None
        made = DocumentVersion(old.set_id if old else f"DiagnosticReport-{report_id}",
                               old.version + 1 if old else 1, old)
        sources = report_sources(getter(core, None), {**report, "id": report_id})
        return report_document(sources, made, self.clock())

    # ------------------------------------------------------------ listeners

    def on_changed(self, event: ResourceChanged) -> None:
        stored, resource = event.stored, event.resource
        if stored.type == "DiagnosticReport" and (
                resource is None or resource.get("status") == "entered-in-error"):
            self._withdraw(event.writer, stored.id)
            return
        if resource is None or not event.changed:
            return
        if stored.type == "DiagnosticReport":
            if resource.get("status") in FINAL and not imported(resource) \
                    and resource.get("subject"):
                try:
                    store_report_document(self.core, event.writer, stored.id, resource,
                                          stored.version_id, self.clock())
                except MappingError as exc:
                    log.warning("DiagnosticReport/%s is final but its WS/T 500.6 document "
                                "cannot be made: %s (%s)", stored.id, exc, exc.expression)
        elif stored.type == "Task" and resource.get("status") == "completed" \
                and any(reference_id(b, "ServiceRequest") for b in resource.get("basedOn") or []):
            try:
                store_consultation_document(self.core, event.writer, stored.id, resource,
                                            self.clock())
            except MappingError as exc:
                log.warning("Task/%s is completed but its WS/T 500.45 document cannot be "
                            "made: %s (%s)", stored.id, exc, exc.expression)
        elif stored.type == "Binary" and event.action == "C":
            self._binary_posted(event, stored.id, resource)
        elif stored.type == "DocumentReference" and event.action == "C":
            for content in resource.get("content") or []:
                url = str((content.get("attachment") or {}).get("url") or "")
                binary_id = reference_id({"reference": url}, "Binary")
                if binary_id:
                    pending = self._pending_of(event.writer)
                    pending.references.setdefault(f"Binary/{binary_id}", stored.id)

    def _withdraw(self, writer: Writer, report_id: str) -> None:
        """A report deleted or entered in error: its current document is too (a platform
        that took it sees the status change; the bytes stay for the record)."""
        doc = current_document(self.core, writer, report_id)
        if doc is not None and doc.get("id"):
            self.core.resources.update(self.core.server, "DocumentReference", str(doc["id"]),
                                       {**doc, "status": "entered-in-error"}, writer=writer)

    def _binary_posted(self, event: ResourceChanged, binary_id: str, binary: Resource) -> None:
        """A CDA posted as a Binary: checked now (a bad one fails the request at once), filed
        at commit, by the DocumentReference of the same transaction that points at it (an
        MHD-style bundle: Binary + DocumentReference) or else by one made for it."""
        context = binary.get("securityContext") or {}
        if reference_id(context, "DiagnosticReport") or reference_id(context, "Task"):
            return  # a document this server stored for a report or a consultation
        data = decoded({"data": binary.get("data"), "contentType": binary.get("contentType")},
                        "Binary.data")
        if data is None or b"ClinicalDocument" not in data[:4096]:
            return
        parsed = checked(data, "Binary.data")
        self._pending_of(event.writer).binaries[binary_id] = (data, parsed, event.caller)

    def settle(self, writer: Writer) -> None:
        """At commit: file the transaction's posted CDA Binaries."""
        with self._lock:
            pending = self._pending.pop(writer, None)
        if pending is None or not pending.binaries:
            return
        for binary_id, (data, parsed, caller) in pending.binaries.items():
            doc_id = pending.references.get(f"Binary/{binary_id}")
            doc = self.core.resources.current(writer, "DocumentReference", doc_id) \
                if doc_id else None
            patient_id, report_id, previous = import_report(
                self.core, writer, caller, parsed, "Binary.data",
                doc.get("subject") if doc else None)
            attachment = attachment_of(data, binary_id, parsed.info.date)
            binary = self.core.resources.current(writer, "Binary", binary_id) or {}
            if binary.get("contentType"):  # the attachment says what the Binary holds
                attachment["contentType"] = binary["contentType"]
            made = document_reference(
                parsed.info, subject={"reference": f"Patient/{patient_id}"},
                related=[{"reference": f"DiagnosticReport/{report_id}"}],
                attachment=attachment,
                replaces=f"DocumentReference/{previous['id']}" if previous else None)
            if doc is not None and doc_id is not None:
                index = next(i for i, c in enumerate(doc.get("content") or [])
                             if reference_id({"reference": (c.get("attachment") or {}).get(
                                 "url")}, "Binary") == binary_id)
                self.core.resources.update(caller, "DocumentReference", doc_id, {
                    **completed(doc, made, data, report_id, index), "id": doc_id},
                    writer=writer)
            else:
                self.core.resources.create(caller, "DocumentReference", made, writer=writer)
            self._supersede(writer, caller, previous)

    def _supersede(self, writer: Writer, caller: Caller, previous: Resource | None) -> None:
        if previous is not None and previous.get("id"):
            self.core.resources.update(caller, "DocumentReference", str(previous["id"]),
                                       {**previous, "status": "superseded"}, writer=writer)

    def on_writing(self, event: ResourceWriting) -> None:
        """A DocumentReference created with a CDA inline: checked, filed for its patient,
        and the DocumentReference completed (subject, related report, format, identity)."""
        if event.res_type != "DocumentReference" or event.interaction != "create":
            return
        body = event.resource
        for index, content in enumerate(body.get("content") or []):
            where = f"DocumentReference.content[{index}].attachment.data"
            data = decoded(content.get("attachment") or {}, where)
            if data is None or b"ClinicalDocument" not in data[:4096]:
                continue
            parsed = checked(data, where)
            patient_id, report_id, previous = import_report(
                self.core, event.writer, event.caller, parsed, where, body.get("subject"))
            made = document_reference(
                parsed.info, subject={"reference": f"Patient/{patient_id}"},
                related=[{"reference": f"DiagnosticReport/{report_id}"}], attachment={},
                replaces=f"DocumentReference/{previous['id']}" if previous else None)
            filled = completed(body, made, data, report_id, index)
            body.clear()  # the listener's contract: the body written is this dict
            body.update(filled)
            self._supersede(event.writer, event.caller, previous)
            return


def attach(core: Core) -> None:
    Documents(core).attach()
