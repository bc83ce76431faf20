"""WS/T 500 documents in the running server: the 检查报告 stored when a report goes final and
versioned (RPLC) when amended, ``$cda`` on a report and on a completed consultation, and a
referring hospital's CDA posted as a DocumentReference or a Binary filed for the patient its
identifiers match — or refused, stored nowhere, when it fails the checks."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from sonobridge.core.documents.stored import document_id_for
from sonobridge.mappings.cda import DocumentVersion
from sonobridge.mappings.cda.report import ReportSources, report_document
from sonobridge.mappings.cda.validate import problems
from sonobridge.mappings.cda.xml import NS
from tests.fhir.helpers import body, post, put

ID_CARD = "urn:oid:2.16.156.10011.1.3"
PATIENT = {"resourceType": "Patient", "id": "pt1",
           "identifier": [{"system": ID_CARD, "value": "110101199003070011"},
                          {"system": "urn:oid:2.16.156.10011.1.11", "value": "MZ-001"}],
           "name": [{"text": "张伟"}], "gender": "male", "birthDate": "1990-03-07"}
OTHER = {"resourceType": "Patient", "id": "pt2",
         "identifier": [{"system": ID_CARD, "value": "110101198001010022"}],
         "name": [{"text": "李娜"}], "gender": "female", "birthDate": "1980-01-01"}
HOSPITAL = {"resourceType": "Organization", "id": "hosp",
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "H-42"}],
            "name": "City Hospital", "alias": ["市人民医院"]}
DEPT = {"resourceType": "Organization", "id": "usdept", "name": "超声科",
        "partOf": {"reference": "Organization/hosp"}}
EXPERT = {"resourceType": "Practitioner", "id": "expert",
          "identifier": [{"system": "urn:oid:2.16.156.10011.1.4", "value": "D-7"}],
          "name": [{"text": "王主任"}]}
SONOGRAPHER = {"resourceType": "Practitioner", "id": "sono", "name": [{"text": "赵医生"}]}
REQUEST = {"resourceType": "ServiceRequest", "id": "req1", "status": "active",
           "intent": "order", "subject": {"reference": "Patient/pt1"},
           "identifier": [{"system": "urn:oid:2.16.156.10011.1.24", "value": "SQ-9"}],
           "code": {"text": "腹部超声"}, "reasonCode": [{"text": "右上腹痛"}],
           "performer": [{"reference": "Organization/hosp"}]}
FINDINGS = {"resourceType": "Observation", "id": "f1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "59776-5"}]},
            "subject": {"reference": "Patient/pt1"},
            "valueString": "胆囊壁毛糙，囊内见强回声团，后伴声影。"}  # noqa: RUF001
SIZE = {"resourceType": "Observation", "id": "m1", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "observation-category", "code": "imaging"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "246120007",
                             "display": "Nodule size"}], "text": "结石大小"},
        "subject": {"reference": "Patient/pt1"},
        "valueQuantity": {"value": 12, "unit": "mm", "system": "http://unitsofmeasure.org",
                          "code": "mm"}}
REPORT = {"resourceType": "DiagnosticReport", "id": "rep1", "status": "preliminary",
          "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                    "code": "RUS"}]}],
          "code": {"coding": [{"system": "http://loinc.org", "code": "24558-9",
                               "display": "US Abdomen"}]},
          "subject": {"reference": "Patient/pt1"},
          "basedOn": [{"reference": "ServiceRequest/req1"}],
          "effectiveDateTime": "2026-12-01T09:10:00+08:00",
          "issued": "2026-12-01T10:05:00+08:00",
          "performer": [{"reference": "Practitioner/expert"}, {"reference": "Organization/usdept"}],
          "resultsInterpreter": [{"reference": "Practitioner/sono"}],
          "result": [{"reference": "Observation/f1"}, {"reference": "Observation/m1"}],
          "conclusion": "胆囊结石。",
          "conclusionCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                          "code": "K80.2", "display": "胆囊结石"}]}]}


def _seed(client: Any) -> None:
    for resource in (PATIENT, OTHER, HOSPITAL, DEPT, EXPERT, SONOGRAPHER, REQUEST, FINDINGS,
                     SIZE, REPORT):
        r = put(client, f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
        assert r.status_code in (200, 201), r.text


def _documents(client: Any, query: str = "") -> list[dict[str, Any]]:
    r = client.get(f"/fhir/DocumentReference?_count=50{query}")
    assert r.status_code == 200, r.text
    return [e["resource"] for e in body(r).get("entry", [])]


def _binary(client: Any, doc: dict[str, Any]) -> bytes:
    url = doc["content"][0]["attachment"]["url"]
    r = client.get(f"/fhir/{url}", headers={"Accept": "application/fhir+json"})
    assert r.status_code == 200, r.text
    return base64.b64decode(body(r)["data"])


def _final(client: Any, **changes: Any) -> None:
    r = put(client, "/fhir/DiagnosticReport/rep1", {**REPORT, "status": "final", **changes})
    assert r.status_code == 200, r.text


def test_a_final_report_gets_its_document(client: Any) -> None:
    _seed(client)
    assert _documents(client) == []  # preliminary: no document
    r = client.get("/fhir/DiagnosticReport/rep1/$cda")
    assert r.status_code == 409
    assert body(r)["issue"][0]["expression"] == ["DiagnosticReport.status"]
    _final(client)
    [doc] = _documents(client)
    assert doc["status"] == "current" and doc["docStatus"] == "final"
    assert doc["subject"] == {"reference": "Patient/pt1"}
    assert doc["context"]["related"] == [{"reference": "DiagnosticReport/rep1"}]
    assert doc["content"][0]["format"] == {"system": "urn:ietf:rfc:3986",
                                           "code": "urn:oid:2.16.156.10011.2.1.1.26",
                                           "display": "WS/T 500.6 检查报告"}
    assert doc["custodian"] == {"reference": "Organization/hosp"}
    data = _binary(client, doc)
    attachment = doc["content"][0]["attachment"]
    assert attachment["contentType"] == "application/xml"
    assert attachment["size"] == len(data)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()
    assert problems(data) == []
    root = etree.fromstring(data)
    assert root.find("v3:custodian//v3:id", NS).get("extension") == "H-42"
    assert root.xpath("string(.//v3:wholeOrganization[v3:id/@root='2.16.156.10011.1.26']"
                      "/v3:name)", namespaces=NS) == "超声科"
    assert root.xpath("string(v3:author//v3:name)", namespaces=NS) == "赵医生"
    assert root.xpath("string(v3:legalAuthenticator//v3:name)", namespaces=NS) == "王主任"
    assert root.xpath("string(.//v3:observation[v3:code/@code='DE04.50.131.00']/v3:value)",
                      namespaces=NS) == FINDINGS["valueString"]
    assert root.xpath("string(v3:recordTarget/v3:patientRole/v3:id[@root="
                      "'2.16.156.10011.1.24']/@extension)", namespaces=NS) == "SQ-9"
    # $cda answers the stored bytes (the same document every time).
    r = client.get("/fhir/DiagnosticReport/rep1/$cda")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    assert r.content == data
    # Without a stored document (a report final before documents were kept): made now.
    assert client.delete(f"/fhir/DocumentReference/{doc['id']}").status_code in (200, 204)
    r = client.get("/fhir/DiagnosticReport/rep1/$cda")
    assert r.status_code == 200 and problems(r.content) == []
    made = etree.fromstring(r.content)
    assert made.find("v3:versionNumber", NS).get("value") == "1"
    assert made.find("v3:setId", NS).get("extension") == root.find("v3:setId", NS).get(
        "extension")
    # The operation is declared.
    cs = body(client.get("/fhir/metadata"))
    report = next(x for x in cs["rest"][0]["resource"] if x["type"] == "DiagnosticReport")
    assert any(op["name"] == "cda" for op in report.get("operation", []))


def test_an_amendment_is_the_next_version_of_the_same_set(client: Any) -> None:
    _seed(client)
    _final(client)
    [first] = _documents(client)
    _final(client)  # the same content again: no new version
    assert len(_documents(client)) == 1
    _final(client, status="amended", conclusion="胆囊多发结石。")
    docs = {d["id"]: d for d in _documents(client)}
    assert len(docs) == 2
    assert docs[first["id"]]["status"] == "superseded"
    [second] = [d for d in docs.values() if d["id"] != first["id"]]
    assert second["status"] == "current" and second["docStatus"] == "amended"
    assert (first["id"], second["id"]) == (document_id_for("rep1", 1),
                                           document_id_for("rep1", 2))
    assert second["relatesTo"] == [{"code": "replaces",
                                    "target": {"reference": f"DocumentReference/{first['id']}"}}]
    root = etree.fromstring(_binary(client, second))
    first_root = etree.fromstring(_binary(client, docs[first["id"]]))
    set_id = first_root.find("v3:setId", NS).get("extension")
    assert root.find("v3:setId", NS).get("extension") == set_id
    assert root.find("v3:versionNumber", NS).get("value") == "2"
    parent = root.find("v3:relatedDocument[@typeCode='RPLC']/v3:parentDocument", NS)
    assert parent.find("v3:id", NS).get("extension") == \
        first_root.find("v3:id", NS).get("extension")
    assert parent.find("v3:versionNumber", NS).get("value") == "1"
    assert root.xpath("string(.//v3:observation[v3:code/@code='DE04.50.132.00']/v3:value)",
                      namespaces=NS) == "胆囊多发结石。"
    r = client.get("/fhir/DiagnosticReport/rep1/$cda")
    assert r.content == _binary(client, second)


def test_a_withdrawn_report_withdraws_its_document(client: Any) -> None:
    _seed(client)
    _final(client)
    _final(client, status="entered-in-error")
    [doc] = _documents(client)
    assert doc["status"] == "entered-in-error"
    _seed_report = {**REPORT, "id": "rep2", "status": "final"}
    assert put(client, "/fhir/DiagnosticReport/rep2", _seed_report).status_code == 201
    assert client.delete("/fhir/DiagnosticReport/rep2").status_code in (200, 204)
    statuses = {d["context"]["related"][0]["reference"]: d["status"] for d in _documents(client)}
    assert statuses == {"DiagnosticReport/rep1": "entered-in-error",
                        "DiagnosticReport/rep2": "entered-in-error"}


def test_a_report_a_document_cannot_be_made_from_stays_writable(client: Any) -> None:
    _seed(client)
    report = {**REPORT, "status": "final", "performer": [{"reference": "Practitioner/expert"}],
              "basedOn": []}
    report.pop("basedOn")
    r = put(client, "/fhir/DiagnosticReport/rep1", report)
    assert r.status_code == 200, r.text
    assert _documents(client) == []
    r = client.get("/fhir/DiagnosticReport/rep1/$cda")
    assert r.status_code == 422
    assert body(r)["issue"][0]["expression"] == ["DiagnosticReport.performer"]
    assert client.get("/fhir/DiagnosticReport/nope/$cda").status_code == 404


def _foreign_cda(version: DocumentVersion | None = None, *, card: str = "110101199003070011",
                 conclusion: str = "肝囊肿。") -> bytes:
    """A referring hospital's report, made by the mapping with other people's resources."""
    patient = {"resourceType": "Patient", "id": "x", "identifier": [
        {"system": ID_CARD, "value": card}], "name": [{"text": "张伟"}], "gender": "male",
        "birthDate": "1990-03-07"}
    report = {**REPORT, "id": "ext-9", "status": "final" if version is None or
              version.version == 1 else "amended", "conclusion": conclusion}
    sources = ReportSources(report=report, patient=patient, organization={
        "resourceType": "Organization", "id": "o", "name": "县医院",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "COUNTY"}]},
        verifier={"resourceType": "Practitioner", "id": "d", "name": [{"text": "孙医生"}]},
        observations=[{**FINDINGS, "valueString": "肝内见无回声区。"}, SIZE])
    return report_document(sources, version or DocumentVersion("county-77"),
                           datetime(2026, 11, 20, 8, tzinfo=UTC))


def _docref(data: bytes, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "content": [{"attachment": {"contentType": "application/xml",
                                        "data": base64.b64encode(data).decode()}}], **extra}


def _reports(client: Any, patient: str) -> list[dict[str, Any]]:
    r = client.get(f"/fhir/DiagnosticReport?subject=Patient/{patient}")
    return [e["resource"] for e in body(r).get("entry", [])]


def test_a_posted_cda_is_filed_for_the_matched_patient(client: Any) -> None:
    _seed(client)
    r = post(client, "/fhir/DocumentReference", _docref(_foreign_cda()))
    assert r.status_code == 201, r.text
    doc = body(r)
    assert doc["subject"] == {"reference": "Patient/pt1"}
    assert doc["masterIdentifier"]["value"] == "county-77.1"
    assert doc["content"][0]["format"]["code"] == "urn:oid:2.16.156.10011.2.1.1.26"
    report_id = doc["context"]["related"][0]["reference"].split("/")[1]
    report = body(client.get(f"/fhir/DiagnosticReport/{report_id}"))
    assert report["subject"] == {"reference": "Patient/pt1"}
    assert report["conclusion"] == "肝囊肿。" and report["status"] == "final"
    assert report["conclusionCode"][0]["coding"][0]["code"] == "K80.2"
    contained = {o["id"]: o for o in report["contained"]}
    assert contained["findings"]["valueString"] == "肝内见无回声区。"
    assert contained["m1"]["valueQuantity"]["value"] == 12
    assert report_id in {x["id"] for x in _reports(client, "pt1")}
    # An imported report does not make a document of its own.
    assert len(_documents(client)) == 1

    # The same document again is not filed twice.
    r = post(client, "/fhir/DocumentReference", _docref(_foreign_cda()))
    assert r.status_code == 409 and "county-77.1" in r.text
    assert len(_documents(client)) == 1

    # Version 2 of the same set updates the same report and supersedes the first document.
    v2 = _foreign_cda(DocumentVersion("county-77", 2, DocumentVersion("county-77")),
                      conclusion="肝多发囊肿。")
    r = post(client, "/fhir/DocumentReference", _docref(v2))
    assert r.status_code == 201, r.text
    second = body(r)
    assert second["relatesTo"][0]["target"]["reference"] == f"DocumentReference/{doc['id']}"
    assert second["context"]["related"][0]["reference"] == f"DiagnosticReport/{report_id}"
    assert body(client.get(f"/fhir/DocumentReference/{doc['id']}"))["status"] == "superseded"
    updated = body(client.get(f"/fhir/DiagnosticReport/{report_id}"))
    assert (updated["status"], updated["conclusion"]) == ("amended", "肝多发囊肿。")


def test_a_posted_binary_cda_is_filed_too(client: Any) -> None:
    _seed(client)
    data = _foreign_cda()
    r = post(client, "/fhir/Binary", {"resourceType": "Binary", "contentType": "text/xml",
                                      "data": base64.b64encode(data).decode()})
    assert r.status_code == 201, r.text
    binary_id = body(r)["id"]
    [doc] = _documents(client)
    assert doc["content"][0]["attachment"]["url"] == f"Binary/{binary_id}"
    assert doc["content"][0]["attachment"]["size"] == len(data)
    assert doc["subject"] == {"reference": "Patient/pt1"}
    assert len(_reports(client, "pt1")) == 2  # rep1 and the imported one


def _refused(client: Any, resource: dict[str, Any], status: int = 422) -> list[dict[str, Any]]:
    before = (len(_documents(client)), len(_reports(client, "pt1")))
    r = post(client, f"/fhir/{resource['resourceType']}", resource)
    assert r.status_code == status, r.text
    assert (len(_documents(client)), len(_reports(client, "pt1"))) == before  # stored nowhere
    issues: list[dict[str, Any]] = body(r)["issue"]
    return issues


def test_bad_documents_are_refused_and_stored_nowhere(client: Any) -> None:
    _seed(client)
    good = _foreign_cda()
    # Fails the schema: the line is named.
    broken = good.replace(b"<title>", b"<titel/><title>", 1)
    line = next(i for i, t in enumerate(broken.splitlines(), 1) if b"<titel/>" in t)
    issues = _refused(client, _docref(broken))
    assert f"(line {line})" in issues[0]["diagnostics"] and "CDA-XSD" in issues[0]["diagnostics"]
    assert issues[0]["expression"] == ["DocumentReference.content[0].attachment.data"]
    # Fails one of our rules.
    issues = _refused(client, _docref(good.replace(b"DE04.50.132.00", b"DE04.50.130.00")))
    assert any("WST500.6-B04" in i["diagnostics"] for i in issues)
    # Entities: refused, never expanded.
    xxe = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<ClinicalDocument xmlns="urn:hl7-org:v3">&x;</ClinicalDocument>')
    issues = _refused(client, _docref(xxe))
    assert "DOCTYPE" in issues[0]["diagnostics"] and "root:" not in issues[0]["diagnostics"]
    issues = _refused(client, {"resourceType": "Binary", "contentType": "application/xml",
                               "data": base64.b64encode(xxe).decode()})
    assert issues[0]["expression"] == ["Binary.data"]
    # A patient nobody here carries.
    issues = _refused(client, _docref(_foreign_cda(card="999999999999999999")))
    assert "register the patient" in issues[0]["diagnostics"]
    # The same as a Binary: refused at commit, the Binary rolled back with it.
    binaries = body(client.get("/fhir/Binary?_summary=count"))["total"]
    issues = _refused(client, {"resourceType": "Binary", "contentType": "application/xml",
                               "data": base64.b64encode(_foreign_cda(
                                   card="999999999999999999")).decode()})
    assert "register the patient" in issues[0]["diagnostics"]
    assert body(client.get("/fhir/Binary?_summary=count"))["total"] == binaries
    # The DocumentReference names another patient than the document.
    issues = _refused(client, _docref(good, subject={"reference": "Patient/pt2"}))
    assert "Patient/pt1" in issues[0]["diagnostics"]
    # Not base64.
    bad = _docref(good)
    bad["content"][0]["attachment"]["data"] = "@@@"
    r = post(client, "/fhir/DocumentReference", bad)
    assert r.status_code == 400


def test_an_ambiguous_identifier_files_nothing(client: Any) -> None:
    _seed(client)
    twin = {**OTHER, "id": "pt3", "identifier": PATIENT["identifier"][:1]}
    assert put(client, "/fhir/Patient/pt3", twin).status_code == 201
    issues = _refused(client, _docref(_foreign_cda()))
    assert "belongs to 2 patients" in issues[0]["diagnostics"]


def test_other_documents_are_left_alone(client: Any) -> None:
    _seed(client)
    pdf = {"resourceType": "DocumentReference", "status": "current",
           "subject": {"reference": "Patient/pt1"},
           "content": [{"attachment": {"contentType": "application/pdf",
                                       "data": base64.b64encode(b"%PDF-1.4").decode()}}]}
    r = post(client, "/fhir/DocumentReference", pdf)
    assert r.status_code == 201 and "context" not in body(r)


def test_cda_of_a_completed_consultation(client: Any) -> None:
    _seed(client)
    _final(client)
    task = {"resourceType": "Task", "id": "t1", "status": "in-progress", "intent": "order",
            "basedOn": [{"reference": "ServiceRequest/req1"}],
            "for": {"reference": "Patient/pt1"}, "owner": {"reference": "Practitioner/expert"},
            "authoredOn": "2026-12-01T08:00:00+08:00",
            "executionPeriod": {"end": "2026-12-01T10:30:00+08:00"}}
    assert put(client, "/fhir/Task/t1", task).status_code == 201
    r = client.get("/fhir/Task/t1/$cda")
    assert r.status_code == 409 and body(r)["issue"][0]["expression"] == ["Task.status"]
    assert put(client, "/fhir/Task/t1", {**task, "status": "completed"}).status_code == 200
    r = client.get("/fhir/Task/t1/$cda")
    assert r.status_code == 200, r.text
    assert problems(r.content) == []
    root = etree.fromstring(r.content)
    assert root.find("v3:templateId", NS).get("root") == "2.16.156.10011.2.1.1.65"
    assert root.xpath("string(.//v3:observation[v3:code/@code='DE06.00.018.00']/v3:value)",
                      namespaces=NS) == "胆囊结石。"
    assert root.xpath("string(v3:legalAuthenticator//v3:name)", namespaces=NS) == "王主任"
    # Stored once when the consultation completed, served by $cda, and not taken for the
    # report's own document (which names the same report).
    consult = [d for d in _documents(client) if d["content"][0]["format"]["code"]
               == "urn:oid:2.16.156.10011.2.1.1.65"]
    assert len(consult) == 1
    assert {"reference": "Task/t1"} in consult[0]["context"]["related"]
    assert {"reference": "DiagnosticReport/rep1"} in consult[0]["context"]["related"]
    assert consult[0]["type"]["coding"][1]["code"] == "C0045"
    assert client.get("/fhir/Task/t1/$cda").content == _binary(client, consult[0])
    assert put(client, "/fhir/Task/t1", {**task, "status": "completed",
                                         "description": "x"}).status_code == 200
    assert len([d for d in _documents(client) if d["content"][0]["format"]["code"]
                == "urn:oid:2.16.156.10011.2.1.1.65"]) == 1
    _final(client, status="amended", conclusion="胆囊多发结石。")
    reports = [d for d in _documents(client, "&status=current") if d["content"][0]["format"][
        "code"] == "urn:oid:2.16.156.10011.2.1.1.26"]
    assert len(reports) == 1 and reports[0]["docStatus"] == "amended"


def test_a_bundle_of_binary_and_document_reference_files_one_document(client: Any) -> None:
    """MHD-style: the Binary and the DocumentReference pointing at it in one transaction,
    in either order, make one DocumentReference (the client's, completed), not two."""
    _seed(client)
    for order, set_id in ((("b", "d"), "county-a"), (("d", "b"), "county-b")):
        data = _foreign_cda(DocumentVersion(set_id))
        entries = {
            "b": {"fullUrl": "urn:uuid:7f2b0a6e-0000-4000-8000-00000000000b",
                  "resource": {"resourceType": "Binary", "contentType": "application/xml",
                               "data": base64.b64encode(data).decode()},
                  "request": {"method": "POST", "url": "Binary"}},
            "d": {"fullUrl": "urn:uuid:7f2b0a6e-0000-4000-8000-00000000000d",
                  "resource": {"resourceType": "DocumentReference", "status": "current",
                               "description": "外院检查报告",
                               "content": [{"attachment": {
                                   "contentType": "application/xml",
                                   "url": "urn:uuid:7f2b0a6e-0000-4000-8000-00000000000b"}}]},
                  "request": {"method": "POST", "url": "DocumentReference"}}}
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [entries[k] for k in order]}
        r = post(client, "/fhir", bundle)
        assert r.status_code == 200, r.text
        docs = [d for d in _documents(client) if d.get("masterIdentifier", {}).get(
            "value") == f"{set_id}.1"]
        assert len(docs) == 1, docs
        doc = docs[0]
        assert doc["description"] == "外院检查报告"  # the client's own DocumentReference
        assert doc["subject"] == {"reference": "Patient/pt1"}
        assert doc["content"][0]["attachment"]["size"] == len(data)
        assert doc["content"][0]["attachment"]["url"].startswith("Binary/")
        report = doc["context"]["related"][0]["reference"]
        assert body(client.get(f"/fhir/{report}"))["conclusion"] == "肝囊肿。"
    # A bad CDA in a bundle fails the whole transaction.
    bad = _foreign_cda(DocumentVersion("county-c")).replace(b"<title>", b"<titel/><title>", 1)
    r = post(client, "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Binary", "contentType": "application/xml",
                      "data": base64.b64encode(bad).decode()},
         "request": {"method": "POST", "url": "Binary"}}]})
    assert r.status_code == 422, r.text
    assert "CDA-XSD" in r.text


def test_the_sample_data_gets_its_documents(core: Any) -> None:
    """The sample consultation (PractitionerRoles as owner, requester and performer; the
    report in Task.output) yields both documents, valid."""
    from sonobridge.app.sample import load_sample

    load_sample(core, "http://sono.test/fhir")
    with core.store.write() as writer:
        ids = core.resources.find(writer, "DocumentReference", [("status", "current")],
                                  "http://sono.test/fhir", 20)
        docs = [core.resources.current(writer, "DocumentReference", i) for i in ids]
        formats = {}
        for doc in docs:
            url = doc["content"][0]["attachment"]["url"]
            data = base64.b64decode(core.resources.current(writer, "Binary",
                                                           url.split("/")[1])["data"])
            assert problems(data) == []
            formats[doc["content"][0]["format"]["code"]] = etree.fromstring(data)
    assert set(formats) == {"urn:oid:2.16.156.10011.2.1.1.26", "urn:oid:2.16.156.10011.2.1.1.65"}
    record = formats["urn:oid:2.16.156.10011.2.1.1.65"]
    assert record.xpath("string(v3:legalAuthenticator//v3:name)", namespaces=NS)
    assert record.xpath("string(v3:authenticator//v3:name)", namespaces=NS)
