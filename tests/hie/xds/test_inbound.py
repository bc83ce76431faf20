"""SonoBridge as XDS.b Document Repository + Registry: ITI-41 in, ITI-18 and ITI-43 out, and
each bad input answered as the profiles say."""

from __future__ import annotations

import base64
import hashlib

from lxml import etree

from sonobridge.hie.xds import ebrim, soap
from sonobridge.hie.xds.peers import Peers
from sonobridge.hie.xds.xml import q, schema_errors
from tests.hie.xds import helpers as h

ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"


def submit(client, *docs):
    message = h.iti41(*docs)
    return h.post(client, "/xds/repository", message.content_type, message.body)


def test_provide_query_retrieve(client, core):
    patient_id = h.patient(client)
    data = "超声所见 肝脏大小形态正常。".encode()
    entry = h.entry(data)
    status, body = submit(client, (entry, data))
    assert status == 200
    assert body.tag == q("rs", "RegistryResponse"), etree.tostring(body)
    assert body.get("status") == ebrim.SUCCESS, etree.tostring(body)
    assert schema_errors(body) == []

    # The same document through FHIR (MHD finds what XDS stored).
    found = client.get(f"/fhir/DocumentReference?subject=Patient/{patient_id}").json()
    docs = [e["resource"] for e in found.get("entry", [])]
    assert len(docs) == 1
    doc = docs[0]
    assert doc["masterIdentifier"]["value"] == f"urn:oid:{entry.unique_id}"
    assert doc["content"][0]["attachment"]["size"] == len(data)
    assert doc["content"][0]["attachment"]["hash"] == \
        base64.b64encode(hashlib.sha1(data).digest()).decode()
    lists = client.get(f"/fhir/List?subject=Patient/{patient_id}").json()
    assert lists["entry"][0]["resource"]["entry"][0]["item"]["reference"] == \
        f"DocumentReference/{doc['id']}"

    # ITI-18 FindDocuments
    status, answer = h.post_message(client, "/xds/registry", ITI18, h.find_documents())
    assert status == 200 and answer.action == f"{ITI18}Response"
    body = answer.body
    assert body.get("status") == ebrim.SUCCESS, etree.tostring(body)
    assert schema_errors(body) == []
    objects = body.findall(f".//{q('rim', 'ExtrinsicObject')}")
    assert len(objects) == 1
    got = ebrim.read_entry(objects[0])
    assert got.unique_id == entry.unique_id
    assert got.patient_id == h.PATIENT_CX
    assert got.hash == hashlib.sha1(data).hexdigest() and got.size == len(data)
    repository = Peers.of(core.settings).repository_unique_id
    assert got.repository_unique_id == repository
    assert got.entry_uuid.startswith("urn:uuid:")

    # ObjectRef, GetDocuments by uniqueId and by entryUUID, GetSubmissionSets, GetAssociations
    _, answer = h.post_message(client, "/xds/registry", ITI18,
                               h.find_documents(return_type="ObjectRef"))
    assert [o.get("id") for o in answer.body.iter(q("rim", "ObjectRef"))] == [got.entry_uuid]
    get_docs = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
    for slots in ({"$XDSDocumentEntryUniqueId": [f"('{entry.unique_id}')"]},
                  {"$XDSDocumentEntryEntryUUID": [f"('{got.entry_uuid}')"]}):
        request = h.find_documents(query_id=get_docs, **slots)
        for slot in list(request.iter(q("rim", "Slot"))):
            if slot.get("name") not in slots:
                slot.getparent().remove(slot)
        _, answer = h.post_message(client, "/xds/registry", ITI18, request)
        assert len(answer.body.findall(f".//{q('rim', 'ExtrinsicObject')}")) == 1, \
            etree.tostring(answer.body)
    for query_id, tag in (("urn:uuid:51224314-5390-4169-9b91-b1980040715a", "RegistryPackage"),
                          ("urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155", "Association")):
        request = h.find_documents(query_id=query_id)
        adhoc = request.find(q("rim", "AdhocQuery"))
        for slot in list(adhoc):
            adhoc.remove(slot)
        ebrim.slot(adhoc, "$uuid", [f"('{got.entry_uuid}')"])
        _, answer = h.post_message(client, "/xds/registry", ITI18, request)
        assert answer.body.get("status") == ebrim.SUCCESS, etree.tostring(answer.body)
        assert answer.body.findall(f".//{q('rim', tag)}"), etree.tostring(answer.body)
        assert schema_errors(answer.body) == []

    # ITI-43
    status, answer = h.post_message(client, "/xds/repository", ITI43,
                                    h.retrieve(repository, entry.unique_id))
    assert status == 200 and answer.action == f"{ITI43}Response"
    assert answer.parts, "the document travels as an MTOM part"
    document = answer.body.find(f".//{q('xds', 'Document')}")
    assert answer.binary(document) == data
    assert answer.body.findtext(f".//{q('xds', 'mimeType')}") == "text/plain"
    assert schema_errors(answer.inline()) == []


def test_unknown_patient(client):
    data = b"report"
    status, body = submit(client, (h.entry(data), data))
    assert status == 200
    assert body.get("status") == ebrim.FAILURE
    assert h.errors(body) == ["XDSUnknownPatientId"]


def test_hash_and_size_must_match(client):
    h.patient(client)
    data = b"report bytes"
    _, body = submit(client, (h.entry(data, hash="0" * 40), data))
    assert h.errors(body) == ["XDSRepositoryMetadataError"]
    assert "hash" in body.find(f".//{q('rs', 'RegistryError')}").get("codeContext")
    _, body = submit(client, (h.entry(data, size=len(data) + 1), data))
    assert h.errors(body) == ["XDSRepositoryMetadataError"]
    # nothing was stored
    assert client.get("/fhir/DocumentReference").json().get("total", 0) == 0


def test_unique_id_once(client):
    h.patient(client)
    data = b"report"
    entry = h.entry(data)
    assert submit(client, (entry, data))[1].get("status") == ebrim.SUCCESS
    _, body = submit(client, (h.entry(data, unique_id=entry.unique_id), data))
    assert h.errors(body) == ["XDSDocumentUniqueIdError"]


def test_metadata_rules(client):
    h.patient(client)
    data = b"report"
    # a patient id that is no CX
    _, body = submit(client, (h.entry(data, patient_id="12345"), data))
    assert h.errors(body) == ["XDSRegistryMetadataError"]
    # the entry's patient is not the submission set's
    other = f"999^^^&{h.AFFINITY}&ISO"
    _, body = submit(client, (h.entry(data, patient_id=other), data))
    assert h.errors(body) == ["XDSPatientIdDoesNotMatch"]
    # a bad creationTime
    _, body = submit(client, (h.entry(data, creation_time="2026-12-03"), data))
    assert h.errors(body) == ["XDSRegistryMetadataError"]


def test_mtom_part_missing_or_mismatched(client):
    h.patient(client)
    data = b"report"
    message = h.iti41((h.entry(data), data))
    cut = message.body.rsplit(b"--MIMEBoundary", 2)[0] + \
        message.body[message.body.rindex(b"--MIMEBoundary"):]
    _, body = h.post(client, "/xds/repository", message.content_type, cut)
    assert h.errors(body) == ["XDSMissingDocument"]
    # a part whose bytes are not the metadata's: the hash says so
    swapped = message.body.replace(b"\r\n\r\nreport\r\n", b"\r\n\r\nREPORT\r\n")
    assert swapped != message.body
    _, body = h.post(client, "/xds/repository", message.content_type, swapped)
    assert h.errors(body) == ["XDSRepositoryMetadataError"]


def test_soap_faults(client):
    body = h.find_documents()
    # an action the endpoint does not offer
    status, answer = h.post_message(client, "/xds/repository", ITI18, body)
    assert status == 400
    assert answer.body.tag == q("soap", "Fault")
    assert answer.body.findtext(f".//{q('soap', 'Subcode')}/{q('soap', 'Value')}") == \
        "wsa:ActionNotSupported"
    # no WS-Addressing
    envelope = (b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
                + etree.tostring(body) + b"</s:Body></s:Envelope>")
    status, fault = h.post(client, "/xds/registry", "application/soap+xml", envelope)
    assert status == 400
    assert fault.findtext(f".//{q('soap', 'Subcode')}/{q('soap', 'Value')}") == \
        "wsa:MessageAddressingHeaderRequired"
    # not SOAP
    response = client.post("/xds/registry", content=b"{}",
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 415


def test_xml_entities_refused(client):
    evil = (b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">'
            b'<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&x;&b;'
            b"</s:Body></s:Envelope>")
    status, fault = h.post(client, "/xds/registry", "application/soap+xml", evil)
    assert status == 400
    assert fault.tag == q("soap", "Fault")
    assert "DOCTYPE" in fault.findtext(f".//{q('soap', 'Text')}")
    assert b"root:" not in etree.tostring(fault)


def test_query_errors(client):
    # unknown stored query
    _, answer = h.post_message(client, "/xds/registry", ITI18,
                               h.find_documents(query_id="urn:uuid:00000000-0000-0000-0000-0"))
    assert h.errors(answer.body) == ["XDSUnknownStoredQuery"]
    # FindDocuments without its status
    _, answer = h.post_message(client, "/xds/registry", ITI18,
                               h.find_documents(**{"$XDSDocumentEntryStatus": []}))
    assert h.errors(answer.body) == ["XDSStoredQueryParamNumber"]
    assert schema_errors(answer.body) == []


def test_retrieve_unknown(client, core):
    repository = Peers.of(core.settings).repository_unique_id
    _, answer = h.post_message(client, "/xds/repository", ITI43,
                               h.retrieve(repository, "1.2.3.4"))
    assert h.errors(answer.body) == ["XDSDocumentUniqueIdError"]
    assert answer.body.find(q("rs", "RegistryResponse")).get("status") == ebrim.FAILURE
    _, answer = h.post_message(client, "/xds/repository", ITI43, h.retrieve("1.2.9", "1.2.3"))
    assert h.errors(answer.body) == ["XDSUnknownRepositoryId"]


def test_wsdl_and_schemas(client):
    wsdl = client.get("/xds/wsdl")
    assert wsdl.status_code == 200
    root = etree.fromstring(wsdl.content)
    assert "http://sono.test/xds/registry" in wsdl.text
    assert root.tag == "{http://schemas.xmlsoap.org/wsdl/}definitions"
    assert client.get("/xds/schema/rim.xsd").status_code == 200
    assert client.get("/xds/schema/..%2Fxml.py").status_code == 404
    assert soap  # imported for the fault helpers used above


def test_cda_through_xds_is_filed_or_refused_with_its_line(client):
    from tests.core.test_documents import _foreign_cda

    card = "110101199003070011"
    patient_id = h.patient(client, card)
    cx = f"{card}^^^&{h.AFFINITY}&ISO"
    cda = _foreign_cda(card=card)
    entry = h.entry(cda, patient_cx=cx, mime="application/xml")
    message = h.iti41((entry, cda), sset=h.submission_set(cx))
    _, body = h.post(client, "/xds/repository", message.content_type, message.body)
    assert body.get("status") == ebrim.SUCCESS, etree.tostring(body)
    reports = client.get(f"/fhir/DiagnosticReport?subject=Patient/{patient_id}").json()
    assert len(reports.get("entry", [])) == 1  # filed for its patient by core/documents

    broken = cda.replace(b"<title>", b"<titel>").replace(b"</title>", b"</titel>")
    entry = h.entry(broken, patient_cx=cx, mime="application/xml")
    message = h.iti41((entry, broken), sset=h.submission_set(cx))
    _, body = h.post(client, "/xds/repository", message.content_type, message.body)
    assert body.get("status") == ebrim.FAILURE
    assert set(h.errors(body)) == {"XDSRepositoryMetadataError"}
    context = " ".join(e.get("codeContext") for e in body.iter(q("rs", "RegistryError")))
    assert "line" in context and "titel" in context, context
    assert len(client.get(f"/fhir/DocumentReference?subject=Patient/{patient_id}")
               .json().get("entry", [])) == 1  # stored nowhere

    evil = cda.replace(b"<ClinicalDocument", b'<!DOCTYPE x [<!ENTITY e SYSTEM '
                       b'"file:///etc/passwd">]><ClinicalDocument', 1)
    entry = h.entry(evil, patient_cx=cx, mime="application/xml")
    message = h.iti41((entry, evil), sset=h.submission_set(cx))
    _, body = h.post(client, "/xds/repository", message.content_type, message.body)
    assert body.get("status") == ebrim.FAILURE
    assert b"root:" not in etree.tostring(body)


def test_find_documents_filters(client):
    h.patient(client)
    data = b"report"
    assert submit(client, (h.entry(data), data))[1].get("status") == ebrim.SUCCESS
    cases = [({"$XDSDocumentEntryTypeCode": ["('18748-4^^2.16.840.1.113883.6.1')"]}, 1),
             ({"$XDSDocumentEntryTypeCode": ["('11488-4^^2.16.840.1.113883.6.1')"]}, 0),
             ({"$XDSDocumentEntryCreationTimeFrom": ["20261203"]}, 1),
             ({"$XDSDocumentEntryCreationTimeTo": ["20261203"]}, 0),
             ({"$XDSDocumentEntryStatus": [f"('{ebrim.DEPRECATED}')"]}, 0)]
    for slots, count in cases:
        _, answer = h.post_message(client, "/xds/registry", ITI18, h.find_documents(**slots))
        assert answer.body.get("status") == ebrim.SUCCESS
        assert len(answer.body.findall(f".//{q('rim', 'ExtrinsicObject')}")) == count, slots
    # another patient: nothing
    _, answer = h.post_message(client, "/xds/registry", ITI18,
                               h.find_documents(f"999^^^&{h.AFFINITY}&ISO"))
    assert answer.body.findall(f".//{q('rim', 'ExtrinsicObject')}") == []


def test_rad69_errors(client, core):
    from sonobridge.hie.xds.xml import NS

    repository = Peers.of(core.settings).repository_unique_id

    def request(repo: str, sop: str) -> etree._Element:
        root = etree.Element(q("xdsi", "RetrieveImagingDocumentSetRequest"),
                             nsmap={"xdsi": NS["xdsi"], "xds": NS["xds"]})
        study = etree.SubElement(root, q("xdsi", "StudyRequest"), studyInstanceUID="1.2.3")
        series = etree.SubElement(study, q("xdsi", "SeriesRequest"), seriesInstanceUID="1.2.4")
        doc = etree.SubElement(series, q("xds", "DocumentRequest"))
        etree.SubElement(doc, q("xds", "RepositoryUniqueId")).text = repo
        etree.SubElement(doc, q("xds", "DocumentUniqueId")).text = sop
        syntaxes = etree.SubElement(root, q("xdsi", "TransferSyntaxUIDList"))
        etree.SubElement(syntaxes, q("xdsi", "TransferSyntaxUID")).text = "1.2.840.10008.1.2.1"
        return root

    rad69 = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
    status, answer = h.post_message(client, "/xds/imaging", rad69, request(repository, "1.2.5"))
    assert status == 200 and answer.action == f"{rad69}Response"
    assert h.errors(answer.body) == ["XDSDocumentUniqueIdError"]
    _, answer = h.post_message(client, "/xds/imaging", rad69, request("1.9", "1.2.5"))
    assert h.errors(answer.body) == ["XDSUnknownRepositoryId"]
    # RAD-69 at the repository endpoint: not offered there
    status, answer = h.post_message(client, "/xds/repository", rad69,
                                    request(repository, "1.2.5"))
    assert status == 400 and answer.body.tag == q("soap", "Fault")
    # a request that fails the schema
    broken = request(repository, "1.2.5")
    broken.remove(broken.find(q("xdsi", "TransferSyntaxUIDList")))
    _, answer = h.post_message(client, "/xds/imaging", rad69, broken)
    assert h.errors(answer.body) == ["XDSRepositoryError"]
