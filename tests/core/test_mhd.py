"""IHE MHD on the FHIR server: ITI-65 Provide Document Bundle (Document Recipient), ITI-66
Find Document Lists, ITI-67 Find Document References (with the IHE search parameters),
ITI-68 Retrieve Document; each Document Recipient rule refused with a 422 naming the
element, the whole submission stored nowhere."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

H = {"Content-Type": "application/fhir+json"}
MINIMAL = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.ProvideBundle"
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
ID_CARD = "urn:oid:2.16.156.10011.1.3"
PDF = b"%PDF-1.4 an ultrasound report\n%%EOF\n"


def _patient(client: Any, value: str = "110101199003077777") -> str:
    r = client.post("/fhir/Patient", headers=H, json={
        "resourceType": "Patient", "identifier": [{"system": ID_CARD, "value": value}],
        "name": [{"family": "张", "given": ["三"]}]})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def provide_bundle(patient: str, data: bytes = PDF, unique: str = "1.2.156.1.1") -> dict[str, Any]:
    """An ITI-65 request as a Document Source sends it (MHD Minimal)."""
    return {
        "resourceType": "Bundle", "type": "transaction", "meta": {"profile": [MINIMAL]},
        "entry": [
            {"fullUrl": "urn:uuid:5b1b0c9e-0000-4000-8000-000000000001", "resource": {
                "resourceType": "List", "status": "current", "mode": "working",
                "code": {"coding": [{"system": LIST_TYPES, "code": "submissionset"}]},
                "extension": [
                    {"url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
                     "valueIdentifier": {"value": "urn:oid:1.2.156.99"}},
                    {"url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
                            "ihe-designationType",
                     "valueCodeableConcept": {"coding": [{"system": "http://loinc.org",
                                                          "code": "18748-4"}]}}],
                "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986",
                                "value": f"urn:oid:{unique}.0"}],
                "subject": {"reference": f"Patient/{patient}"},
                "date": "2026-12-01T08:00:00+08:00",
                "entry": [{"item": {
                    "reference": "urn:uuid:5b1b0c9e-0000-4000-8000-000000000002"}}]},
             "request": {"method": "POST", "url": "List"}},
            {"fullUrl": "urn:uuid:5b1b0c9e-0000-4000-8000-000000000002", "resource": {
                "resourceType": "DocumentReference", "status": "current",
                "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                                     "value": f"urn:oid:{unique}"},
                "type": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
                "subject": {"reference": f"Patient/{patient}"},
                "content": [{"attachment": {
                    "contentType": "application/pdf",
                    "url": "urn:uuid:5b1b0c9e-0000-4000-8000-000000000003",
                    "size": len(data),
                    "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(),
                    "creation": "2026-12-01T08:00:00+08:00"}}]},
             "request": {"method": "POST", "url": "DocumentReference"}},
            {"fullUrl": "urn:uuid:5b1b0c9e-0000-4000-8000-000000000003", "resource": {
                "resourceType": "Binary", "contentType": "application/pdf",
                "data": base64.b64encode(data).decode()},
             "request": {"method": "POST", "url": "Binary"}},
        ]}


def _count(client: Any, query: str) -> int:
    r = client.get(f"/fhir/{query}", headers={"Prefer": "handling=strict"})
    assert r.status_code == 200, r.text
    return len(r.json().get("entry") or [])


def test_provide_find_and_retrieve(client: Any) -> None:
    patient = _patient(client)
    r = client.post("/fhir", headers=H, json=provide_bundle(patient))
    assert r.status_code == 200, r.text
    assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["201"] * 3
    # ITI-66 Find Document Lists, with the parameters MHD names
    lists = f"List?code=submissionset&patient.identifier={ID_CARD}|110101199003077777"
    assert _count(client, lists) == 1
    assert _count(client, "List?designationType=http://loinc.org|18748-4&status=current") == 1
    assert _count(client, "List?sourceId=urn:oid:1.2.156.99") == 1
    assert _count(client, "List?sourceId=urn:oid:1.2.156.98") == 0
    # ITI-67 Find Document References
    docs = f"DocumentReference?patient.identifier={ID_CARD}|110101199003077777&status=current"
    assert _count(client, docs) == 1
    assert _count(client, f"DocumentReference?patient={patient}&creation=ge2026-12-01") == 1
    assert _count(client, f"DocumentReference?patient={patient}&creation=lt2026-11-30") == 0
    assert _count(client, f"DocumentReference?patient={patient}&type=http://loinc.org|18748-4"
                  ) == 1
    # ITI-68 Retrieve Document: the attachment's URL with the document's own media type
    doc = client.get(f"/fhir/{docs}").json()["entry"][0]["resource"]
    url = doc["content"][0]["attachment"]["url"]
    assert url.startswith("Binary/")
    got = client.get(f"/fhir/{url}", headers={"Accept": "application/pdf"})
    assert got.status_code == 200 and got.content == PDF
    assert got.headers["content-type"] == "application/pdf"
    assert client.get(f"/fhir/{url}", headers={"Accept": "*/*"}).json()["resourceType"] \
        == "Binary"  # a FHIR client asking for anything still gets the resource
    refused = client.get(f"/fhir/{url}", headers={"Accept": "image/jpeg"})
    assert refused.status_code == 406
    assert refused.json()["issue"][0]["expression"] == ["Binary.contentType"]


BAD = [
    ("size", lambda b: b["entry"][1]["resource"]["content"][0]["attachment"].update(size=3),
     "DocumentReference.content[0].attachment.size"),
    ("hash", lambda b: b["entry"][1]["resource"]["content"][0]["attachment"].update(
        hash=base64.b64encode(hashlib.sha1(b"other").digest()).decode()),
     "DocumentReference.content[0].attachment.hash"),
    ("content type", lambda b: b["entry"][1]["resource"]["content"][0]["attachment"].update(
        contentType="text/plain"), "DocumentReference.content[0].attachment.contentType"),
    ("list status", lambda b: b["entry"][0]["resource"].update(status="retired"),
     "List.status"),
    ("list mode", lambda b: b["entry"][0]["resource"].update(mode="snapshot"), "List.mode"),
    ("no uniqueId", lambda b: b["entry"][0]["resource"]["identifier"][0].update(use="usual"),
     "List.identifier"),
    ("doc status", lambda b: b["entry"][1]["resource"].update(status="superseded"),
     "DocumentReference.status"),
    ("no masterIdentifier", lambda b: b["entry"][1]["resource"].pop("masterIdentifier"),
     "DocumentReference.masterIdentifier"),
    ("no contentType", lambda b: b["entry"][1]["resource"]["content"][0]["attachment"].pop(
        "contentType"), "DocumentReference.content[0].attachment.contentType"),
    ("entry not submitted", lambda b: b["entry"][0]["resource"]["entry"][0]["item"].update(
        reference="DocumentReference/elsewhere"), "List.entry[0].item"),
]


@pytest.mark.parametrize("name,spoil,where", BAD, ids=[b[0] for b in BAD])
def test_document_recipient_refuses(client: Any, name: str, spoil: Any, where: str) -> None:
    patient = _patient(client)
    bundle = provide_bundle(patient)
    spoil(bundle)
    r = client.post("/fhir", headers=H, json=bundle)
    assert r.status_code == 422, (name, r.status_code, r.text)
    assert r.json()["issue"][0]["expression"] == [where], r.text
    assert _count(client, f"DocumentReference?patient={patient}") == 0  # stored nowhere
    assert _count(client, f"List?patient={patient}") == 0


def test_documents_of_another_patient_are_refused(client: Any) -> None:
    first, second = _patient(client, "1"), _patient(client, "2")
    bundle = provide_bundle(first)
    bundle["entry"][1]["resource"]["subject"] = {"reference": f"Patient/{second}"}
    r = client.post("/fhir", headers=H, json=bundle)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["DocumentReference.subject"]


def test_an_unknown_patient_is_refused(client: Any) -> None:
    r = client.post("/fhir", headers=H, json=provide_bundle("no-such-patient"))
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == ["List.subject"]
    assert "XDSUnknownPatientId" in r.json()["issue"][0]["diagnostics"]
    assert _count(client, "List?code=submissionset") == 0


def test_a_single_document_reference_is_checked_against_its_binary(client: Any) -> None:
    """Outside MHD too: a DocumentReference that names a Binary must describe its bytes."""
    patient = _patient(client)
    binary = client.post("/fhir/Binary", headers=H, json={
        "resourceType": "Binary", "contentType": "application/pdf",
        "data": base64.b64encode(PDF).decode()}).json()["id"]
    body = {"resourceType": "DocumentReference", "status": "current",
            "subject": {"reference": f"Patient/{patient}"},
            "content": [{"attachment": {"contentType": "application/pdf",
                                        "url": f"Binary/{binary}", "size": 1}}]}
    r = client.post("/fhir/DocumentReference", headers=H, json=body)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["DocumentReference.content[0].attachment.size"]
    body["content"][0]["attachment"]["size"] = len(PDF)
    assert client.post("/fhir/DocumentReference", headers=H, json=body).status_code == 201
    body["content"][0]["attachment"]["url"] = "Binary/not-there"
    r = client.post("/fhir/DocumentReference", headers=H, json=body)
    assert r.status_code == 422
    assert r.json()["issue"][0]["expression"] == ["DocumentReference.content[0].attachment.url"]


def test_a_withdrawn_document_may_change_without_its_binary(client: Any) -> None:
    patient = _patient(client)
    body = {"resourceType": "DocumentReference", "status": "entered-in-error",
            "subject": {"reference": f"Patient/{patient}"},
            "content": [{"attachment": {"contentType": "application/pdf",
                                        "url": "Binary/gone", "size": 1}}]}
    assert client.post("/fhir/DocumentReference", headers=H, json=body).status_code == 201
