"""IHE MHD Document Recipient rules (ITI-65 Provide Document Bundle), checked at commit.

An ITI-65 submission is an ordinary FHIR transaction (``POST /fhir`` with a Bundle): a
SubmissionSet ``List``, its ``DocumentReference`` entries and the ``Binary`` documents they
point at. The transaction writes them through the one write path (so a WS/T 500 CDA among
them is filed for its patient by ``core/documents``, and XDS finds what MHD stored); what this
module adds is the checks a Document Recipient owes the submitter, once every entry of the
transaction is written and references are resolved (``ResourceStore.before_commit``), so that
a failing submission is refused as a whole (FHIR transactions are all-or-nothing):

- a SubmissionSet (``List.code`` ``submissionset`` of the MHD list types): ``status``
  ``current``, ``mode`` ``working``, an ``identifier`` with ``use`` ``official`` (the
  uniqueId), ``subject`` a Patient, every ``entry.item`` a DocumentReference (or a folder
  List) written in the same transaction;
- each of its DocumentReferences: ``status`` ``current``, ``masterIdentifier``, the
  SubmissionSet's patient as ``subject``, each ``content.attachment`` with ``contentType``
  and ``url``;
- any ``current`` DocumentReference written whose ``attachment.url`` is a ``Binary`` of this
  server (MHD or not): the Binary exists, has the attachment's ``contentType``, and ``size``
  and ``hash`` (base64 SHA-1, FHIR R4 ``Attachment.hash``), when given, are those of its
  bytes.

Each failure is a 422 OperationOutcome naming the element (``expression``); a SubmissionSet
for a patient this server does not know is one of them (XDS's ``XDSUnknownPatientId``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import weakref
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sonobridge.core.errors import CoreError
from sonobridge.core.events import Answered, ResourceChanged, ResourceWriting
from sonobridge.core.policy import Caller
from sonobridge.mappings.cda.documentref import with_unique_id
from sonobridge.store.resources import Writer

if TYPE_CHECKING:
    from sonobridge.core.services import Core

LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
MAX_CHECKED = 1000  # DocumentReferences checked per transaction (the bundle's own limit is lower)


# The transaction that writes SubmissionSet Lists on this thread: ITI-65 (a FHIR
# transaction Bundle), unless the XDS repository says it is storing an ITI-41 (audited by
# its own endpoint, so not a second time here).
SUBMITTING: ContextVar[str] = ContextVar("sonobridge_mhd_submitting", default="ITI-65")


@dataclass
class _Pending:
    submission_sets: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    # ITI-65 submissions to audit: (caller, List id, patient reference)
    submitted: list[tuple[Caller, str, str | None]] = field(default_factory=list)


def list_type(resource: dict[str, Any]) -> str | None:
    """``submissionset`` or ``folder`` for an MHD List, else None."""
    for coding in (resource.get("code") or {}).get("coding") or []:
        if coding.get("system") == LIST_TYPES:
            return str(coding.get("code"))
    return None


def _binary_id(url: str) -> str | None:
    """The id of a Binary of this server a URL names: a relative ``Binary/{id}`` (what a
    transaction makes of an entry's ``urn:uuid``), else None — an absolute URL names a document
    another server holds (``http://example.org/xds/mhd/Binary/…``), which is not checked."""
    head, sep, tail = url.partition("Binary/")
    if head or not sep or not tail or "/" in tail:
        return None
    return tail


def _fail(message: str, where: str) -> CoreError:
    return CoreError(422, "processing", message, expression=[where])


class Mhd:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._pending: weakref.WeakKeyDictionary[Writer, _Pending] = \
            weakref.WeakKeyDictionary()
        # Checked and about to commit: audited once the commit is done.
        self._committing: weakref.WeakKeyDictionary[Writer, _Pending] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def attach(self) -> None:
        self.core.events.listen(ResourceWriting, self.on_writing)
        self.core.events.listen(ResourceChanged, self.on_changed)
        # After the documents domain's filing (which completes DocumentReferences).
        self.core.store.before_commit.append(self.settle)
        if self.core.audit is not None:
            self.core.store.after_commit.append(self.committed)

    @staticmethod
    def on_writing(event: ResourceWriting) -> None:
        """Every DocumentReference written (the documents domain's, ITI-41's, a client's)
        carries its XDS uniqueId as an identifier when that id is derived from a master
        identifier that is no OID (a WS/T 500 document id): ITI-18 answers that uniqueId,
        and ITI-43 finds the document by it (``mappings/cda/documentref.with_unique_id``)."""
        if event.res_type != "DocumentReference":
            return
        made = with_unique_id(event.resource)
        if made is not event.resource:
            event.resource["identifier"] = made["identifier"]

    def on_changed(self, event: ResourceChanged) -> None:
        resource = event.resource
        if resource is None or event.action not in ("C", "U"):
            return
        kind = event.stored.type
        if kind == "List" and list_type(resource) == "submissionset":
            with self._lock:
                pending = self._pending.setdefault(event.writer, _Pending())
                pending.submission_sets.append(event.stored.id)
                if event.action == "C" and SUBMITTING.get() == "ITI-65":
                    subject = str((resource.get("subject") or {}).get("reference") or "")
                    pending.submitted.append((event.caller, event.stored.id,
                                              subject if subject.startswith("Patient/")
                                              else None))
        elif kind == "DocumentReference":
            with self._lock:
                self._pending.setdefault(event.writer, _Pending()).documents.append(
                    event.stored.id)

    def settle(self, writer: Writer) -> None:
        with self._lock:
            pending = self._pending.pop(writer, None)
        if pending is None:
            return
        try:
            for list_id in pending.submission_sets:
                self._check_submission(writer, list_id, set(pending.documents))
            for doc_id in dict.fromkeys(pending.documents[:MAX_CHECKED]):
                doc = self.core.resources.current(writer, "DocumentReference", doc_id)
                # A superseded or withdrawn document is not served any more: its status may
                # change even when its bytes are gone.
                if doc is not None and doc.get("status") == "current":
                    self._check_attachments(writer, doc)
        except CoreError as exc:
            self._audit(pending, "4", f"{exc.status}: {str(exc)[:200]}")
            raise
        if pending.submitted and self.core.audit is not None:
            with self._lock:
                self._committing[writer] = pending

    def committed(self, writer: Writer) -> None:
        with self._lock:
            pending = self._committing.pop(writer, None)
        if pending is not None:
            self._audit(pending, "0", "")

    def _audit(self, pending: _Pending, outcome: str, detail: str) -> None:
        """ITI-65 received: Import (DCM 110107) with the transaction as the subtype, the
        SubmissionSet and its patient; a submission refused at commit is outcome 4 (its
        RESTful record says the same)."""
        if self.core.audit is None:
            return
        for caller, list_id, patient in pending.submitted:
            self.core.events.emit(Answered(caller, "import", "C", "ITI-65", outcome=outcome,
                                           resource=f"List/{list_id}", patient=patient,
                                           detail=detail))

    # ------------------------------------------------------------ the rules

    def _check_submission(self, writer: Writer, list_id: str, written: set[str]) -> None:
        ss = self.core.resources.current(writer, "List", list_id)
        if ss is None:
            return
        if ss.get("status") != "current":
            raise _fail("an MHD SubmissionSet's status is 'current'", "List.status")
        if ss.get("mode") != "working":
            raise _fail("an MHD SubmissionSet's mode is 'working'", "List.mode")
        if not any(i.get("use") == "official" and i.get("value")
                   for i in ss.get("identifier") or []):
            raise _fail("an MHD SubmissionSet needs its uniqueId: an identifier with use "
                        "'official'", "List.identifier")
        subject = str((ss.get("subject") or {}).get("reference") or "")
        if not subject.startswith("Patient/"):
            raise _fail("an MHD SubmissionSet's subject is the Patient it is about",
                        "List.subject")
        if self.core.resources.current(writer, "Patient", subject.removeprefix("Patient/")) \
                is None:
            raise _fail(f"{subject} is not a patient of this server (XDSUnknownPatientId): "
                        "register the patient first", "List.subject")
        for index, entry in enumerate(ss.get("entry") or []):
            where = f"List.entry[{index}].item"
            ref = str((entry.get("item") or {}).get("reference") or "")
            kind, _, item_id = ref.partition("/")
            if kind == "List":
                continue  # a folder
            if kind != "DocumentReference" or item_id not in written:
                raise _fail("an MHD SubmissionSet's entries are the DocumentReferences "
                            f"submitted with it; {ref or 'nothing'} is not one", where)
            doc = self.core.resources.current(writer, "DocumentReference", item_id)
            if doc is None:
                raise _fail(f"{ref} is not in the submission", where)
            self._check_document(doc, subject, ref)

    @staticmethod
    def _check_document(doc: dict[str, Any], subject: str, ref: str) -> None:
        if doc.get("status") != "current":
            raise _fail(f"{ref}: a submitted document's status is 'current'",
                        "DocumentReference.status")
        if not (doc.get("masterIdentifier") or {}).get("value"):
            raise _fail(f"{ref}: a submitted document needs its uniqueId "
                        "(masterIdentifier)", "DocumentReference.masterIdentifier")
        if str((doc.get("subject") or {}).get("reference") or "") != subject:
            raise _fail(f"{ref}: a document's subject must be the SubmissionSet's patient "
                        f"({subject})", "DocumentReference.subject")
        contents = doc.get("content") or []
        if not contents:
            raise _fail(f"{ref}: a document has content", "DocumentReference.content")
        for index, content in enumerate(contents):
            attachment = content.get("attachment") or {}
            for name in ("contentType", "url"):
                if not attachment.get(name):
                    raise _fail(f"{ref}: the attachment needs {name}",
                                f"DocumentReference.content[{index}].attachment.{name}")

    def _check_attachments(self, writer: Writer, doc: dict[str, Any]) -> None:
        for index, content in enumerate(doc.get("content") or []):
            attachment = content.get("attachment") or {}
            binary_id = _binary_id(str(attachment.get("url") or ""))
            if binary_id is None:
                continue
            where = f"DocumentReference.content[{index}].attachment"
            binary = self.core.resources.current(writer, "Binary", binary_id)
            if binary is None:
                raise _fail(f"the attachment's url names Binary/{binary_id}, which does "
                            "not exist", f"{where}.url")
            declared = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
            held = str(binary.get("contentType") or "").split(";")[0].strip().lower()
            if declared and held and declared != held:
                raise _fail(f"the attachment says {declared} but Binary/{binary_id} is "
                            f"{held}", f"{where}.contentType")
            try:
                data = base64.b64decode(str(binary.get("data") or ""), validate=True)
            except (binascii.Error, ValueError):
                raise _fail(f"Binary/{binary_id} data is not base64", f"{where}.url") \
                    from None
            size = attachment.get("size")
            if size is not None and size != len(data):
                raise _fail(f"the attachment's size is {size} but the document has "
                            f"{len(data)} bytes", f"{where}.size")
            digest = attachment.get("hash")
            if digest is not None:
                actual = base64.b64encode(hashlib.sha1(data).digest()).decode()
                if digest != actual:
                    raise _fail("the attachment's hash is not the SHA-1 of the document "
                                f"(it is {actual})", f"{where}.hash")


def attach(core: Core) -> None:
    Mhd(core).attach()
