"""Every document this gateway publishes is retrievable with the uniqueId its registry gives
for it: the WS/T 500.6 CDA stored when a report goes final (its uniqueId is derived from the
WS/T document id, which is no OID), the report's PDF as ITI-41 shares it, a document received
by ITI-41, and MHD documents whose master identifier is a UUID or no OID at all — by ITI-43
and by MHD ITI-68."""

from __future__ import annotations

import base64
import hashlib
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from sonobridge.hie.xds import ebrim, soap
from sonobridge.hie.xds.peers import Peers
from sonobridge.hie.xds.xml import q, schema_errors
from sonobridge.mappings.cda.validate import problems
from tests.core.test_documents import (
    DEPT,
    EXPERT,
    FINDINGS,
    HOSPITAL,
    PATIENT,
    REPORT,
    REQUEST,
    SIZE,
    SONOGRAPHER,
)
from tests.core.test_mhd import provide_bundle
from tests.hie.xds import helpers as h
from tests.hie.xds.zeep_peer import zeep_client
from tests.live import serve

ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"
FIND = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
CARD = "110101199003070011"
CX = f"{CARD}^^^&2.16.156.10011.1.3&ISO"
REPOSITORY = "2.25.161803398874989484820"
JSON = {"Content-Type": "application/fhir+json"}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _values(*values: str) -> dict[str, Any]:
    return {"_value_1": [{"Value": v} for v in values]}


def _seed(put: Any) -> None:
    for resource in (PATIENT, HOSPITAL, DEPT, EXPERT, SONOGRAPHER, REQUEST, FINDINGS, SIZE,
                     REPORT, {**REPORT, "status": "final"}):
        r = put(f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
        assert r.status_code in (200, 201), r.text


def test_a_final_reports_cda_is_found_and_retrieved_by_zeep(tmp_path: Path) -> None:
    """Report final → ITI-18 FindDocuments (zeep) finds its CDA → ITI-43 (zeep, and the raw
    MTOM answer) with that uniqueId → the same bytes, which pass the CDA checks; ITI-68 too."""
    with serve(f"sqlite:///{tmp_path}/gw.db", tmp_path, "--no-sample",
               SONOBRIDGE_XDS_REPOSITORY_UNIQUE_ID=REPOSITORY) as (base, log), \
            httpx.Client(base_url=base, timeout=30) as http:
        _seed(lambda path, resource: http.put(path, json=resource, headers=JSON))
        cda = http.get("/fhir/DiagnosticReport/rep1/$cda").content
        assert problems(cda) == []

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = zeep_client(f"{base}/xds/wsdl")
        registry = client.bind("SonoBridgeXDS", "DocumentRegistry_Port_Soap12")
        answer = registry.DocumentRegistry_RegistryStoredQuery(
            ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
            AdhocQuery={"id": FIND, "Slot": [
                {"name": "$XDSDocumentEntryPatientId", "ValueList": _values(f"'{CX}'")},
                {"name": "$XDSDocumentEntryStatus",
                 "ValueList": _values(f"('{ebrim.APPROVED}')")}]})
        assert answer.status == ebrim.SUCCESS, answer
        entries = [ebrim.read_entry(o) for o in answer.RegistryObjectList._raw_elements]
        assert len(entries) == 1, log.read_text()[-2000:]
        entry = entries[0]
        assert entry.format_code.code == "urn:oid:2.16.156.10011.2.1.1.26"
        assert entry.repository_unique_id == REPOSITORY
        assert entry.unique_id.startswith("2.25.")  # derived: the WS/T id is no OID
        assert entry.hash == hashlib.sha1(cda).hexdigest() and entry.size == len(cda)

        repository = client.bind("SonoBridgeXDS", "DocumentRepository_Port_Soap12")
        got = repository.DocumentRepository_RetrieveDocumentSet(DocumentRequest=[
            {"RepositoryUniqueId": REPOSITORY, "DocumentUniqueId": entry.unique_id}])
        assert got.RegistryResponse.status == ebrim.SUCCESS, got
        assert got.DocumentResponse[0].DocumentUniqueId == entry.unique_id
        assert got.DocumentResponse[0].mimeType == "application/xml"
        # zeep strips CR/LF from both ends of a binary MTOM part (docs/exchange.md)
        assert got.DocumentResponse[0].Document == cda.strip(b"\r\n")

        # The same answer read byte-exact: an MTOM part, the very bytes, a valid CDA.
        ctype, data, _ = soap.write(ITI43, h.retrieve(REPOSITORY, entry.unique_id))
        r = http.post("/xds/repository", content=data, headers={"Content-Type": ctype})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("multipart/related")
        assert "application/xop+xml" in r.headers["content-type"]
        message = soap.read(r.headers["content-type"], r.content)
        assert message.parts, "the document travels as an MTOM part"
        document = message.binary(message.body.find(f".//{q('xds', 'Document')}"))
        assert document == cda
        assert problems(document) == []
        assert schema_errors(message.inline()) == []

        # GetDocuments by that uniqueId finds it too.
        got = registry.DocumentRegistry_RegistryStoredQuery(
            ResponseOption={"returnType": "ObjectRef", "returnComposedObjects": True},
            AdhocQuery={"id": GET_DOCUMENTS, "Slot": [
                {"name": "$XDSDocumentEntryUniqueId",
                 "ValueList": _values(f"('{entry.unique_id}')")}]})
        assert got.status == ebrim.SUCCESS
        assert [o.get("id") for o in got.RegistryObjectList._raw_elements] == \
            [entry.entry_uuid]

        # MHD: ITI-67 finds the same document under the same uniqueId, ITI-68 gives it.
        found = http.get("/fhir/DocumentReference", params={
            "identifier": f"urn:ietf:rfc:3986|urn:oid:{entry.unique_id}"}).json()
        assert len(found["entry"]) == 1
        url = found["entry"][0]["resource"]["content"][0]["attachment"]["url"]
        r = http.get(f"/fhir/{url}", headers={"Accept": "application/xml"})
        assert r.status_code == 200 and r.content == cda


def _iti18(client: Any, request: etree._Element) -> list[ebrim.DocEntry]:
    status, answer = h.post_message(client, "/xds/registry", ITI18, request)
    assert status == 200 and answer.body.get("status") == ebrim.SUCCESS, \
        etree.tostring(answer.body)
    return [ebrim.read_entry(o) for o in answer.body.iter(q("rim", "ExtrinsicObject"))]


def _iti43(client: Any, repository: str, *unique_ids: str) -> tuple[soap.Message, list[bytes]]:
    status, answer = h.post_message(client, "/xds/repository", ITI43,
                                    h.retrieve(repository, *unique_ids))
    assert status == 200
    return answer, [answer.binary(d) for d in answer.body.iter(q("xds", "Document"))]


def test_the_shared_report_pdf_is_retrieved_by_its_unique_id(client: Any, core: Any) -> None:
    """ITI-41 shares the report's PDF with the uniqueId ``<the CDA's>.1``; this gateway's
    ITI-43 gives the PDF of that report version for it."""
    from sonobridge.core.pdf.report import report_pdf_of
    from sonobridge.hie.xds.outbound import submission_of

    _seed(lambda path, resource: client.put(path, json=resource, headers=JSON))
    report_pdf_of(core).drain()
    peers = Peers.of(core.settings)
    (cda_entry,) = _iti18(client, h.find_documents(patient_cx=CX))
    doc_id = client.get("/fhir/DocumentReference?related=DiagnosticReport/rep1").json()[
        "entry"][0]["resource"]["id"]
    _, shared, documents = submission_of(core, peers, doc_id, datetime.now(UTC))
    assert [e.mime_type for e in shared] == ["application/xml", "application/pdf"]
    assert shared[0].unique_id == cda_entry.unique_id
    pdf_id = shared[1].unique_id
    assert pdf_id == f"{cda_entry.unique_id}.1"

    answer, got = _iti43(client, peers.repository_unique_id, pdf_id, cda_entry.unique_id)
    assert answer.body.find(q("rs", "RegistryResponse")).get("status") == ebrim.SUCCESS
    assert got[0] == documents["Document02"] and got[0].startswith(b"%PDF")
    assert got[1] == documents["Document01"]
    assert [m.text for m in answer.body.iter(q("xds", "mimeType"))] == \
        ["application/pdf", "application/xml"]
    # A ".1" under a uniqueId that is no document of ours is no PDF.
    answer, got = _iti43(client, peers.repository_unique_id, f"{pdf_id}.1", "2.25.12345.1")
    assert got == [] and h.errors(answer.body) == ["XDSDocumentUniqueIdError"] * 2


def test_received_documents_are_retrieved_by_xds_and_mhd(client: Any, core: Any) -> None:
    """An ITI-41 document, an MHD document with an OID, a UUID and a plain-text master
    identifier: each found by ITI-18 and retrieved by ITI-43 with that uniqueId, and by its
    attachment URL (ITI-68)."""
    h.patient(client)
    repository = Peers.of(core.settings).repository_unique_id
    data = b"ITI-41 document"
    entry = h.entry(data)
    message = h.iti41((entry, data))
    _, body = h.post(client, "/xds/repository", message.content_type, message.body)
    assert body.get("status") == ebrim.SUCCESS, etree.tostring(body)
    patient = client.get(f"/fhir/Patient?identifier=urn:oid:{h.AFFINITY}|{h.ID_CARD}").json()[
        "entry"][0]["resource"]["id"]
    masters = {"oid": "urn:oid:1.2.156.77.1", "uuid": "urn:uuid:6e8bc430-9c3a-11d9-9669-"
               "0800200c9a66", "text": "HOSP-DOC-0042"}
    sent = {"iti41": data}
    for number, (name, master) in enumerate(masters.items()):
        payload = f"MHD document {name}".encode()
        bundle = provide_bundle(patient, payload, unique=f"1.2.156.1.{number + 10}")
        bundle["entry"][1]["resource"]["masterIdentifier"]["value"] = master
        bundle["entry"][2]["resource"]["contentType"] = "text/plain"
        bundle["entry"][1]["resource"]["content"][0]["attachment"]["contentType"] = "text/plain"
        r = client.post("/fhir", json=bundle, headers=JSON)
        assert r.status_code == 200, r.text
        sent[name] = payload
    entries = _iti18(client, h.find_documents())
    assert len(entries) == 4
    by_id = {e.unique_id: e for e in entries}
    assert entry.unique_id in by_id and "1.2.156.77.1" in by_id
    assert "2.25.146940788003261066995555168538975836774" in by_id  # the UUID's X.667 OID
    answer, got = _iti43(client, repository, *by_id)
    assert answer.body.find(q("rs", "RegistryResponse")).get("status") == ebrim.SUCCESS, \
        etree.tostring(answer.body)
    assert sorted(got) == sorted(sent.values())
    for doc in client.get("/fhir/DocumentReference").json()["entry"]:
        attachment = doc["resource"]["content"][0]["attachment"]
        r = client.get(f"/fhir/{attachment['url']}", headers={"Accept": "text/plain"})
        assert r.status_code == 200 and r.content in sent.values()
        assert attachment["hash"] == base64.b64encode(hashlib.sha1(r.content).digest()).decode()
        # application/xml asked of a document that is no XML: the Binary resource, in XML
        r = client.get(f"/fhir/{attachment['url']}", headers={"Accept": "application/xml"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
        assert r.content.startswith(b"<") and b"<Binary" in r.content[:200]
