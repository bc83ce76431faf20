"""SonoBridge as XDS.b Document Repository + Registry (a regional deployment): what ITI-41,
ITI-18 and ITI-43 do with the core. Documents live where every other API finds them: a
``Binary`` with the bytes, a ``DocumentReference`` with the metadata (``entries.py``), the
SubmissionSet as an MHD ``List`` (``code`` submissionset) holding its entries; so what XDS
stores, MHD (ITI-67/68) and FHIR search find, and a WS/T 500.6 CDA submitted by XDS is
checked and filed for its patient by ``core/documents`` like one posted to FHIR.

Every answer is built here as ebRIM; errors are ``MetadataError`` with the IHE code
(``XDSRepositoryMetadataError``, ``XDSUnknownPatientId``, ``XDSDocumentUniqueIdError``,
``XDSMissingDocument``…)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from lxml import etree

from sonobridge.core.errors import CoreError
from sonobridge.core.exchange.mhd import SUBMITTING
from sonobridge.core.policy import Caller
from sonobridge.core.resources import SearchSpec
from sonobridge.hie.xds import ebrim
from sonobridge.hie.xds.ebrim import MetadataError
from sonobridge.hie.xds.entries import (
    URI,
    document_entry,
    document_reference,
    entry_uuid_of,
    patient_cx,
    unique_id_of,
)
from sonobridge.hie.xds.peers import Peers
from sonobridge.hie.xds.soap import Message
from sonobridge.hie.xds.xml import NS, q, schema_errors
from sonobridge.mappings.cda.documentref import uuid_of_unique_id
from sonobridge.store.resources import Writer, new_id

if TYPE_CHECKING:
    from sonobridge.core.services import Core

Resource = dict[str, Any]
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
MAX_RESULTS = 1000  # objects one stored query returns (XDSTooManyResults past it)
MAX_DOCUMENTS = 100  # documents one ITI-41 or ITI-43 carries
PDF_ARC = "1"  # a report PDF's uniqueId: its CDA's uniqueId (a 2.25 OID) + ".1"

FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
GET_SUBMISSION_SETS = "urn:uuid:51224314-5390-4169-9b91-b1980040715a"
GET_ASSOCIATIONS = "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155"
QUERIES = {FIND_DOCUMENTS: "FindDocuments", GET_DOCUMENTS: "GetDocuments",
           GET_SUBMISSION_SETS: "GetSubmissionSets", GET_ASSOCIATIONS: "GetAssociations"}
STATUS_OF = {ebrim.APPROVED: "current", ebrim.DEPRECATED: "superseded"}


@dataclass
class Retrieved:
    unique_id: str
    mime_type: str
    data: bytes


class Registry:
    def __init__(self, core: Core, peers: Peers) -> None:
        self.core = core
        self.peers = peers

    # ------------------------------------------------------------------ ITI-41

    def provide_and_register(self, caller: Caller, message: Message) -> list[MetadataError]:
        """Store a Provide and Register Document Set-b: [] or the errors (nothing stored).
        The patient it was filed for is left in ``message.patient`` (for the audit)."""
        request = message.body
        if request.tag != q("xds", "ProvideAndRegisterDocumentSetRequest"):
            return [MetadataError("XDSRepositoryMetadataError",
                                  f"the body is {request.tag}, not a "
                                  "ProvideAndRegisterDocumentSetRequest")]
        documents: dict[str, bytes] = {}
        nodes = request.findall(q("xds", "Document"))
        if len(nodes) > MAX_DOCUMENTS:
            return [MetadataError("XDSRepositoryError",
                                  f"more than {MAX_DOCUMENTS} documents in one submission")]
        for node in nodes:
            doc_id = node.get("id", "")
            try:
                documents[doc_id] = message.binary(node)
            except KeyError as exc:
                return [MetadataError("XDSMissingDocument",
                                      f"the document's MTOM part {exc.args[0]} is not in the "
                                      "message", doc_id)]
        problems = schema_errors(message.inline())
        if problems:
            return [MetadataError("XDSRepositoryMetadataError", "schema: " + p)
                    for p in problems]
        submit = request.find(q("lcm", "SubmitObjectsRequest"))
        assert submit is not None  # the schema requires it
        try:
            sset, entries, _ = ebrim.read_submission(submit)
            self._check_documents(entries, documents)
            # Symbolic ids ("Document01") get their entryUUID here (ITI TF-3 4.2.3.1.5).
            if not sset.entry_uuid.startswith("urn:uuid:"):
                sset.entry_uuid = f"urn:uuid:{uuid.uuid4()}"
            for entry in entries:
                if not entry.entry_uuid.startswith("urn:uuid:"):
                    fresh = f"urn:uuid:{uuid.uuid4()}"
                    documents[fresh] = documents.pop(entry.entry_uuid)
                    entry.entry_uuid = fresh
            return self._store(caller, message, sset, entries, documents)
        except MetadataError as exc:
            return [exc]

    def _check_documents(self, entries: list[ebrim.DocEntry], documents: dict[str, bytes]
                         ) -> None:
        ids = {e.entry_uuid for e in entries}
        for doc_id in documents:
            if doc_id not in ids:
                raise MetadataError("XDSMissingDocumentMetadata",
                                    "a Document has no DocumentEntry with its id", doc_id)
        for entry in entries:
            data = documents.get(entry.entry_uuid)
            if data is None:
                raise MetadataError("XDSMissingDocument",
                                    "the DocumentEntry has no Document in the message",
                                    entry.entry_uuid)
            digest = hashlib.sha1(data).hexdigest()
            if entry.hash and entry.hash != digest:
                raise MetadataError("XDSRepositoryMetadataError",
                                    f"hash {entry.hash} is not the document's ({digest})",
                                    f"{entry.entry_uuid} hash")
            if entry.size is not None and entry.size != len(data):
                raise MetadataError("XDSRepositoryMetadataError",
                                    f"size {entry.size} is not the document's ({len(data)})",
                                    f"{entry.entry_uuid} size")
            if entry.repository_unique_id and \
                    entry.repository_unique_id != self.peers.repository_unique_id:
                raise MetadataError("XDSRepositoryMetadataError",
                                    f"repositoryUniqueId {entry.repository_unique_id} is not "
                                    "this repository's", f"{entry.entry_uuid} repositoryUniqueId")
            entry.hash, entry.size = digest, len(data)
            entry.repository_unique_id = self.peers.repository_unique_id

    def _patient(self, writer: Writer, patient_cx: str, where: str) -> str:
        parts = ebrim.cx_parts(patient_cx)
        if parts is None or parts[1] != self.peers.affinity_domain:
            raise MetadataError("XDSUnknownPatientId",
                                f"{patient_cx} is not an id of the affinity domain "
                                f"({self.peers.affinity_domain})", where)
        pair = (f"urn:oid:{parts[1]}", parts[0])
        found = self.core.resources.identifier_matches(writer, "Patient", [pair]).get(pair, [])
        if len(found) != 1:
            raise MetadataError("XDSUnknownPatientId",
                                f"no patient here is {patient_cx}" if not found else
                                f"{patient_cx} names {len(found)} patients", where)
        return found[0]

    def _store(self, caller: Caller, message: Message, sset: ebrim.SubmissionSet,
               entries: list[ebrim.DocEntry], documents: dict[str, bytes]
               ) -> list[MetadataError]:
        resources = self.core.resources
        submitting = SUBMITTING.set("ITI-41")  # not an MHD ITI-65 (core/exchange/mhd.py)
        try:
            with self.core.store.write() as writer:
                patient_id = self._patient(writer, sset.patient_id,
                                           f"{sset.entry_uuid} XDSSubmissionSet.patientId")
                refs: list[str] = []
                for entry in entries:
                    pair = (URI, f"urn:oid:{entry.unique_id}")
                    if resources.identifier_matches(writer, "DocumentReference",
                                                    [pair]).get(pair):
                        raise MetadataError("XDSDocumentUniqueIdError",
                                            f"a document with uniqueId {entry.unique_id} is "
                                            "already registered",
                                            f"{entry.entry_uuid} XDSDocumentEntry.uniqueId")
                    binary_id = new_id()
                    resources.create(caller, "Binary", {
                        "resourceType": "Binary", "contentType": entry.mime_type,
                        "data": base64.b64encode(documents[entry.entry_uuid]).decode()},
                        assigned_id=binary_id, writer=writer)
                    doc = document_reference(entry, patient_id, binary_id,
                                             self.peers.affinity_domain)
                    written = resources.create(caller, "DocumentReference", doc, writer=writer)
                    refs.append(f"DocumentReference/{written.stored.id}")
                resources.create(caller, "List", submission_list(sset, patient_id, refs),
                                 writer=writer)
                message.patient = f"Patient/{patient_id}"
        except CoreError as exc:
            # 409: the documents domain has the CDA's document id already; 400/422: what the
            # document or metadata says is refused; anything else (403: the caller's rights)
            # is the repository's refusal, not the metadata's fault.
            code = {409: "XDSDocumentUniqueIdError", 400: "XDSRepositoryMetadataError",
                    422: "XDSRepositoryMetadataError"}.get(exc.status, "XDSRepositoryError")
            return [MetadataError(code, issue.diagnostics, ", ".join(issue.expression))
                    for issue in exc.issues]
        finally:
            SUBMITTING.reset(submitting)
        return []

    # ------------------------------------------------------------------ ITI-18

    def stored_query(self, caller: Caller, message: Message) -> etree._Element:
        """An AdhocQueryResponse: the objects found, or the errors."""
        request = message.body
        problems = schema_errors(request)
        if request.tag != q("query", "AdhocQueryRequest") or problems:
            return query_response([], [MetadataError(
                "XDSRegistryError", "not a valid AdhocQueryRequest: " + "; ".join(problems))])
        option = request.find(q("query", "ResponseOption"))
        leaf = option is None or option.get("returnType", "ObjectRef") == "LeafClass"
        query = request.find(q("rim", "AdhocQuery"))
        assert query is not None  # the schema requires it
        query_id = query.get("id", "")
        params = query_params(query)
        try:
            if query_id == FIND_DOCUMENTS:
                docs = self._find_documents(caller, params)
                return query_response(self._objects(caller, docs, leaf), [])
            if query_id == GET_DOCUMENTS:
                docs = self._get_documents(caller, params)
                return query_response(self._objects(caller, docs, leaf), [])
            if query_id == GET_SUBMISSION_SETS:
                return query_response(self._submission_sets(caller, params, leaf), [])
            if query_id == GET_ASSOCIATIONS:
                return query_response(self._associations(caller, params), [])
        except MetadataError as exc:
            return query_response([], [exc])
        except CoreError as exc:
            return query_response([], [MetadataError("XDSRegistryError", str(exc))])
        return query_response([], [MetadataError(
            "XDSUnknownStoredQuery", f"stored query {query_id} is not supported (supported: "
            + ", ".join(QUERIES.values()) + ")", query_id)])

    def _search(self, caller: Caller, res_type: str, params: list[tuple[str, str]]
                ) -> list[Resource]:
        spec = SearchSpec(res_type, [*params, ("_count", str(MAX_RESULTS))])
        bundle = self.core.resources.search(caller, spec).bundle
        # Entries hold the stored bytes (an orjson Fragment): read back as dicts.
        found = [orjson.loads(orjson.dumps(e["resource"])) for e in bundle.get("entry") or []
                 if e.get("search", {}).get("mode", "match") == "match"]
        if any(link.get("relation") == "next" for link in bundle.get("link") or []):
            raise MetadataError("XDSTooManyResults",
                                f"more than {MAX_RESULTS} results: narrow the query")
        return found

    def _find_documents(self, caller: Caller, params: dict[str, list[str]]) -> list[Resource]:
        patient = _single(params, "$XDSDocumentEntryPatientId")
        statuses = params.get("$XDSDocumentEntryStatus")
        if not statuses:
            raise MetadataError("XDSStoredQueryParamNumber",
                                "$XDSDocumentEntryStatus is required", "$XDSDocumentEntryStatus")
        parts = ebrim.cx_parts(patient)
        if parts is None:
            raise MetadataError("XDSStoredQueryParamNumber",
                                f"$XDSDocumentEntryPatientId {patient!r} is not a CX",
                                "$XDSDocumentEntryPatientId")
        fhir_status = sorted({STATUS_OF[s] for s in statuses if s in STATUS_OF})
        if not fhir_status:
            return []
        wanted = [("patient.identifier", f"urn:oid:{parts[1]}|{parts[0]}"),
                  ("status", ",".join(fhir_status))]
        docs = self._search(caller, "DocumentReference", wanted)
        return [d for d in docs if _matches(d, params)]

    def _get_documents(self, caller: Caller, params: dict[str, list[str]]) -> list[Resource]:
        uuids = params.get("$XDSDocumentEntryEntryUUID") or []
        uids = params.get("$XDSDocumentEntryUniqueId") or []
        if bool(uuids) == bool(uids):
            raise MetadataError("XDSStoredQueryParamNumber",
                                "exactly one of $XDSDocumentEntryEntryUUID and "
                                "$XDSDocumentEntryUniqueId is required")
        if len(uuids) + len(uids) > MAX_RESULTS:
            raise MetadataError("XDSTooManyResults", f"more than {MAX_RESULTS} ids")
        if uids:
            return list(self._by_unique_id(caller, [u.strip() for u in uids]).values())
        return self._search(caller, "DocumentReference",
                            [("identifier", ",".join(f"{URI}|{v}" for v in uuids))])

    def _by_unique_id(self, caller: Caller, unique_ids: list[str]) -> dict[str, Resource]:
        """The DocumentReferences with these XDS uniqueIds (those the caller may read), by
        uniqueId: one identifier search for the master identifiers that are the OID, the
        ``urn:uuid:`` ones a 2.25 OID stands for, and the derived uniqueIds the
        DocumentReferences carry as identifiers; each match checked against the uniqueId
        ITI-18 gives it (an entryUUID that happens to be the same UUID is not a match)."""
        values: list[str] = []
        for unique_id in dict.fromkeys(unique_ids):
            values.append(f"{URI}|urn:oid:{unique_id}")
            as_uuid = uuid_of_unique_id(unique_id)
            if as_uuid:
                values.append(f"{URI}|{as_uuid}")
        if not values:
            return {}
        wanted = set(unique_ids)
        found: dict[str, Resource] = {}
        for doc in self._search(caller, "DocumentReference", [("identifier", ",".join(values))]):
            unique_id = unique_id_of(doc)
            if unique_id in wanted:
                found.setdefault(unique_id, doc)
        return found

    def _objects(self, caller: Caller, docs: list[Resource], leaf: bool
                 ) -> list[etree._Element]:
        out: list[etree._Element] = []
        patients: dict[str, str] = {}
        for doc in docs:
            if not leaf:
                out.append(object_ref(entry_uuid_of(doc)))
                continue
            ref = str((doc.get("subject") or {}).get("reference") or "")
            if ref not in patients:
                patients[ref] = self._patient_cx(caller, doc)
            entry = document_entry(doc, patients[ref], self.peers.repository_unique_id,
                                   self._home())
            out.append(ebrim.extrinsic(entry))
        return out

    def _home(self) -> str:
        hcid = self.peers.home_community_id
        return hcid if not hcid or hcid.startswith("urn:oid:") else f"urn:oid:{hcid}"

    def _patient_cx(self, caller: Caller, doc: Resource) -> str:
        subject = doc.get("subject") or {}
        ident = subject.get("identifier") or {}
        affinity = self.peers.affinity_domain
        if ident.get("system") == f"urn:oid:{affinity}" and ident.get("value"):
            return ebrim.cx(str(ident["value"]), affinity)
        ref = str(subject.get("reference") or "")
        if ref.startswith("Patient/"):
            stored = self.core.store.read("Patient", ref[8:])
            if stored is not None and stored.content:
                from sonobridge.jsonio import loads

                found = patient_cx(loads(stored.content), affinity)
                if found:
                    return found
        return ebrim.cx(ref.rpartition("/")[2] or "unknown", affinity)

    def _lists_of(self, caller: Caller, docs: list[Resource]) -> list[Resource]:
        if not docs:
            return []
        items = ",".join(f"DocumentReference/{d['id']}" for d in docs)
        return self._search(caller, "List", [("item", items),
                                             ("code", f"{LIST_TYPES}|submissionset")])

    def _docs_by_uuid(self, caller: Caller, params: dict[str, list[str]]) -> list[Resource]:
        uuids = params.get("$uuid") or []
        if not uuids:
            raise MetadataError("XDSStoredQueryParamNumber", "$uuid is required", "$uuid")
        return self._search(caller, "DocumentReference",
                            [("identifier", ",".join(f"{URI}|{u}" for u in uuids))])

    def _submission_sets(self, caller: Caller, params: dict[str, list[str]], leaf: bool
                         ) -> list[etree._Element]:
        docs = self._docs_by_uuid(caller, params)
        by_ref = {f"DocumentReference/{d['id']}": entry_uuid_of(d) for d in docs}
        out: list[etree._Element] = []
        for number, found in enumerate(self._lists_of(caller, docs), 1):
            sset = submission_set_of(found, self._patient_cx(caller, found), self.peers)
            if leaf:
                out.append(ebrim.registry_package(sset))
                out.append(ebrim.package_classification(sset))
            else:
                out.append(object_ref(sset.entry_uuid))
            for item in found.get("entry") or []:
                target = by_ref.get(str((item.get("item") or {}).get("reference")))
                if target:
                    out.append(ebrim.association(sset.entry_uuid, target, number))
        return out

    def _associations(self, caller: Caller, params: dict[str, list[str]]
                      ) -> list[etree._Element]:
        docs = self._docs_by_uuid(caller, params)
        out: list[etree._Element] = []
        for number, found in enumerate(self._lists_of(caller, docs), 1):
            source = list_uuid_of(found)
            for doc in docs:
                ref = f"DocumentReference/{doc['id']}"
                if any((i.get("item") or {}).get("reference") == ref
                       for i in found.get("entry") or []):
                    out.append(ebrim.association(source, entry_uuid_of(doc), number))
        return out

    # ------------------------------------------------------------------ ITI-43

    def retrieve(self, caller: Caller, message: Message
                 ) -> tuple[list[Retrieved], list[MetadataError]]:
        request = message.body
        problems = schema_errors(request)
        if request.tag != q("xds", "RetrieveDocumentSetRequest") or problems:
            return [], [MetadataError("XDSRepositoryError",
                                      "not a valid RetrieveDocumentSetRequest: "
                                      + "; ".join(problems))]
        asked = [(r.findtext(q("xds", "RepositoryUniqueId")) or "",
                  r.findtext(q("xds", "DocumentUniqueId")) or "")
                 for r in request.findall(q("xds", "DocumentRequest"))]
        return self.documents(caller, asked)

    def documents(self, caller: Caller, asked: list[tuple[str, str]]
                  ) -> tuple[list[Retrieved], list[MetadataError]]:
        """Each (repositoryUniqueId, uniqueId) asked: the bytes, or an error for it."""
        if len(asked) > MAX_DOCUMENTS:
            return [], [MetadataError("XDSRepositoryError",
                                      f"more than {MAX_DOCUMENTS} documents asked at once")]
        found: list[Retrieved] = []
        errors: list[MetadataError] = []
        ours = [u.strip() for r, u in asked if r.strip() == self.peers.repository_unique_id]
        docs = self._by_unique_id(caller, ours + [pdf_parent(u) for u in ours
                                                  if pdf_parent(u)]) if ours else {}
        for repository, asked_id in asked:
            unique_id = asked_id.strip()
            if repository.strip() != self.peers.repository_unique_id:
                errors.append(MetadataError("XDSUnknownRepositoryId",
                                            f"repository {repository} is not this one",
                                            unique_id))
                continue
            doc = docs.get(unique_id)
            got: tuple[bytes, str] | None = None
            if doc is not None:
                data = self._bytes(caller, doc)
                attachment = (doc.get("content") or [{}])[0].get("attachment") or {}
                if data is not None:
                    got = data, str(attachment.get("contentType") or
                                    "application/octet-stream")
            elif pdf_parent(unique_id) in docs:
                got = self._report_pdf(caller, docs[pdf_parent(unique_id)])
            if got is None:
                errors.append(MetadataError("XDSDocumentUniqueIdError",
                                            f"no document {unique_id} in this repository",
                                            unique_id))
                continue
            found.append(Retrieved(unique_id, got[1], got[0]))
        return found, errors

    def _report_pdf(self, caller: Caller, doc: Resource) -> tuple[bytes, str] | None:
        """The report's PDF a WS/T 500.6 document of ours was shared with (ITI-41 gives it
        the uniqueId ``<the CDA's uniqueId>.1``): the printable report of the same version,
        read with the caller's rights."""
        from sonobridge.hie.xds.outbound import report_pdf_binary

        binary_id = report_pdf_binary(self.core, doc)
        if binary_id is None:
            return None
        data = self._bytes(caller, {"content": [{"attachment": {"url": f"Binary/{binary_id}"}}]})
        return (data, "application/pdf") if data is not None else None

    def _bytes(self, caller: Caller, doc: Resource) -> bytes | None:
        url = str(((doc.get("content") or [{}])[0].get("attachment") or {}).get("url") or "")
        if not url.startswith("Binary/"):
            return None
        try:
            binary = self.core.resources.read(caller, "Binary", url[7:])
        except CoreError:
            return None
        body = binary if isinstance(binary, dict) else _json(binary)
        data = body.get("data")
        return base64.b64decode(data) if data else None


def pdf_parent(unique_id: str) -> str:
    """The uniqueId of the WS/T 500.6 document a report PDF's uniqueId (``<cda>.1``) was
    made from, else ''."""
    parent, dot, arc = unique_id.rpartition(".")
    return parent if dot and arc == PDF_ARC and parent.startswith("2.25.") \
        and parent.count(".") == 2 else ""


def _json(stored: Any) -> Resource:
    from sonobridge.jsonio import loads

    loaded: Resource = loads(stored.content or b"{}")
    return loaded


def _single(params: dict[str, list[str]], name: str) -> str:
    values = params.get(name) or []
    if len(values) != 1:
        raise MetadataError("XDSStoredQueryParamNumber",
                            f"{name} is required once (given {len(values)} times)", name)
    return values[0]


def _codes(doc: Resource, key: str) -> set[str]:
    from sonobridge.hie.xds.entries import scheme_of

    concepts = doc.get(key) or []
    if isinstance(concepts, dict):
        concepts = [concepts]
    if key == "format":
        concepts = [{"coding": [c.get("format")]} for c in doc.get("content") or []
                    if c.get("format")]
    return {f"{c.get('code')}^^{scheme_of(str(c.get('system')))}"
            for concept in concepts for c in concept.get("coding") or []}


def _matches(doc: Resource, params: dict[str, list[str]]) -> bool:
    """FindDocuments' optional filters the FHIR search did not apply: class, type, format
    codes (code^^scheme, any of), creationTime range."""
    for name, key in (("$XDSDocumentEntryClassCode", "category"),
                      ("$XDSDocumentEntryTypeCode", "type"),
                      ("$XDSDocumentEntryFormatCode", "format")):
        wanted = params.get(name)
        if wanted and not set(wanted) & _codes(doc, key):
            return False
    from sonobridge.hie.xds.entries import dtm

    attachment = (doc.get("content") or [{}])[0].get("attachment") or {}
    created = dtm(attachment.get("creation") or doc.get("date"))
    low = (params.get("$XDSDocumentEntryCreationTimeFrom") or [""])[0]
    high = (params.get("$XDSDocumentEntryCreationTimeTo") or [""])[0]
    if low and created < low:
        return False
    return not (high and created >= high)


def query_params(query: etree._Element) -> dict[str, list[str]]:
    """The stored query's slots: each value unquoted, ('a','b') lists split."""
    out: dict[str, list[str]] = {}
    for item in query.findall(q("rim", "Slot")):
        values: list[str] = []
        for value in item.iter(q("rim", "Value")):
            values += _unquote_list(value.text or "")
        out.setdefault(item.get("name", ""), []).extend(values)
    return out


def _unquote_list(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    out, current, quoted = [], "", False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif char == "," and not quoted:
            out.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        out.append(current.strip())
    return out


def query_response(objects: list[etree._Element], errors: list[MetadataError]
                   ) -> etree._Element:
    node = etree.Element(q("query", "AdhocQueryResponse"),
                         {"status": ebrim.FAILURE if errors else ebrim.SUCCESS},
                         nsmap={"query": NS["query"], "rim": NS["rim"], "rs": NS["rs"]})
    ebrim.errors_list(node, errors)
    holder = etree.SubElement(node, q("rim", "RegistryObjectList"))
    for item in objects:
        holder.append(item)
    return node


def object_ref(entry_uuid: str) -> etree._Element:
    return etree.Element(q("rim", "ObjectRef"), {"id": entry_uuid}, nsmap={"rim": NS["rim"]})


def list_uuid_of(found: Resource) -> str:
    for ident in found.get("identifier") or []:
        if ident.get("use") == "official" and str(ident.get("value", "")).startswith("urn:uuid"):
            return str(ident["value"])
    import uuid

    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'List/' + str(found.get('id')))}"


def submission_list(sset: ebrim.SubmissionSet, patient_id: str, refs: list[str]) -> Resource:
    """The MHD SubmissionSet List of an ITI-41: identifiers entryUUID (official) and
    uniqueId (usual), sourceId as ``source``'s identifier, the entries."""
    from sonobridge.hie.xds.entries import instant

    return {
        "resourceType": "List", "status": "current", "mode": "working",
        "code": {"coding": [{"system": LIST_TYPES, "code": "submissionset"}]},
        "identifier": [{"use": "official", "system": URI, "value": sset.entry_uuid},
                       {"use": "usual", "system": URI, "value": f"urn:oid:{sset.unique_id}"}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": instant(sset.submission_time),
        "title": sset.title or None,
        "source": {"identifier": {"system": URI, "value": f"urn:oid:{sset.source_id}"}},
        "entry": [{"item": {"reference": ref}} for ref in refs],
        "extension": [{"url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
                              "ihe-designationType",
                       "valueCodeableConcept": {"coding": [{
                           "system": f"urn:oid:{sset.content_type.scheme}"
                           if ebrim.OID.match(sset.content_type.scheme)
                           else sset.content_type.scheme,
                           "code": sset.content_type.code,
                           "display": sset.content_type.display}]}}],
    }


def submission_set_of(found: Resource, patient: str, peers: Peers) -> ebrim.SubmissionSet:
    from sonobridge.hie.xds.entries import DEFAULT_CLASS, code_of, dtm

    unique = next((str(i["value"])[8:] for i in found.get("identifier") or []
                   if i.get("use") == "usual" and str(i.get("value", "")).startswith("urn:oid:")),
                  "")
    source = str(((found.get("source") or {}).get("identifier") or {}).get("value") or "")
    designation = next((e.get("valueCodeableConcept") for e in found.get("extension") or []
                        if str(e.get("url", "")).endswith("ihe-designationType")), None)
    return ebrim.SubmissionSet(
        entry_uuid=list_uuid_of(found), unique_id=unique or peers.source_oid,
        source_id=source[8:] if source.startswith("urn:oid:") else (source or peers.source_oid),
        patient_id=patient, submission_time=dtm(found.get("date")),
        content_type=code_of(designation, DEFAULT_CLASS), title=str(found.get("title") or ""))
