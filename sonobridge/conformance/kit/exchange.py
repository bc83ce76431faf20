"""The exchange suite: does a FHIR server act as an IHE MHD Document Recipient/Responder, a
PIXm Patient Identifier Cross-reference Manager and a PDQm Patient Demographics Supplier
(issue 17; STANDARDS.md §12)?

Against a FHIR base (``--target``): the kit registers a patient with a resident ID (身份证号)
and a hospital MRN, provides a document bundle for it (ITI-65: SubmissionSet List,
DocumentReference, Binary), finds the list and the document by the patient's identifier
(ITI-66, ITI-67), retrieves the document's bytes at the attachment's URL (ITI-68), checks a
bundle whose hash does not match its document is refused and stored nowhere, cross-references
the MRN to the resident ID (ITI-83, with the profile's 400/404/403 answers) and finds the
patient by demographics (ITI-78). What it wrote is deleted at the end. A server whose
CapabilityStatement lists no ``$ihe-pix`` on Patient skips the PIXm tests with that reason.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from sonobridge.conformance.kit.fhir import FHIR_JSON, HEADERS, base
from sonobridge.conformance.kit.http import expect_status, json_body
from sonobridge.conformance.kit.model import (
    Check,
    Context,
    Failed,
    Group,
    Requirement,
    Skipped,
    Suite,
)
from sonobridge.conformance.kit.model import TestDef as T

ID_CARD = "urn:oid:2.16.156.10011.1.3"
MRN = "urn:sonobridge:hl7:id:SBKIT"
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
MHD = "https://profiles.ihe.net/ITI/MHD"
PIXM = "https://profiles.ihe.net/ITI/PIXm/ITI-83.html"
PDQM = "https://profiles.ihe.net/ITI/PDQm/ITI-78.html"
DOCUMENT = b"%PDF-1.4 conformance kit ultrasound report\n%%EOF\n"


def _sha1(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def bundle(patient: str, unique: str, data: bytes, declared_hash: str) -> dict[str, Any]:
    """An ITI-65 Provide Document Bundle (MHD Minimal) for ``patient``."""
    ids = [f"urn:uuid:{uuid.uuid4()}" for _ in range(3)]
    return {"resourceType": "Bundle", "type": "transaction",
            "meta": {"profile": [f"{MHD}/StructureDefinition/IHE.MHD.Minimal.ProvideBundle"]},
            "entry": [
                {"fullUrl": ids[0], "request": {"method": "POST", "url": "List"}, "resource": {
                    "resourceType": "List", "status": "current", "mode": "working",
                    "code": {"coding": [{"system": LIST_TYPES, "code": "submissionset"}]},
                    "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986",
                                    "value": f"urn:oid:{unique}.1"}],
                    "subject": {"reference": f"Patient/{patient}"},
                    "entry": [{"item": {"reference": ids[1]}}]}},
                {"fullUrl": ids[1], "request": {"method": "POST", "url": "DocumentReference"},
                 "resource": {
                    "resourceType": "DocumentReference", "status": "current",
                    "masterIdentifier": {"system": "urn:ietf:rfc:3986",
                                         "value": f"urn:oid:{unique}"},
                    "subject": {"reference": f"Patient/{patient}"},
                    "content": [{"attachment": {
                        "contentType": "application/pdf", "url": ids[2], "size": len(data),
                        "hash": declared_hash}}]}},
                {"fullUrl": ids[2], "request": {"method": "POST", "url": "Binary"},
                 "resource": {"resourceType": "Binary", "contentType": "application/pdf",
                              "data": base64.b64encode(data).decode()}}]}


def _search(check: Check, query: str) -> list[dict[str, Any]]:
    response = check.http.get(f"{base(check.ctx)}/{query}", headers={"Accept": FHIR_JSON})
    expect_status(response, 200, what=query)
    return [e["resource"] for e in json_body(response).get("entry") or []
            if (e.get("search") or {}).get("mode", "match") == "match"]


def registered(check: Check) -> None:
    card = "9" + uuid.uuid4().hex[:17]
    mrn = "K" + uuid.uuid4().hex[:9]
    response = check.http.post(f"{base(check.ctx)}/Patient", headers=HEADERS, content=json.dumps({
        "resourceType": "Patient", "name": [{"family": "测试", "given": ["一"]}],
        "gender": "female", "birthDate": "1980-02-29",
        "identifier": [{"system": ID_CARD, "value": card}, {"system": MRN, "value": mrn}]}))
    expect_status(response, 201, what="the patient")
    patient = json_body(response)["id"]
    check.ctx.state["x_patient"] = {"id": patient, "card": card, "mrn": mrn}
    check.ctx.state.setdefault("x_written", []).append(f"Patient/{patient}")


def provided(check: Check) -> None:
    who = check.ctx.needs("x_patient", "needs the patient of exchange-01")
    unique = f"2.25.{uuid.uuid4().int}"
    response = check.http.post(base(check.ctx), headers=HEADERS, content=json.dumps(
        bundle(who["id"], unique, DOCUMENT, _sha1(DOCUMENT))))
    expect_status(response, 200, what="ITI-65")
    answer = json_body(response)
    statuses = [str((e.get("response") or {}).get("status", ""))[:3]
                for e in answer.get("entry") or []]
    check.expect(statuses == ["201"] * 3, f"three entries created; got {statuses}")
    for entry in answer.get("entry") or []:
        location = str((entry.get("response") or {}).get("location") or "")
        if location:
            check.ctx.state["x_written"].append("/".join(
                location.split("/_history")[0].split("/")[-2:]))
    check.ctx.state["x_unique"] = unique


def lists_found(check: Check) -> None:
    who = check.ctx.needs("x_unique", "needs the submission of exchange-02") and \
        check.ctx.state["x_patient"]
    found = _search(check, f"List?code=submissionset&patient.identifier={ID_CARD}|"
                           f"{who['card']}")
    check.expect(len(found) == 1, f"one SubmissionSet for the patient; found {len(found)}")


def documents_found(check: Check) -> None:
    check.ctx.needs("x_unique", "needs the submission of exchange-02")
    who = check.ctx.state["x_patient"]
    found = _search(check, f"DocumentReference?patient.identifier={ID_CARD}|{who['card']}"
                           "&status=current")
    check.expect(len(found) == 1, f"one current document for the patient; found {len(found)}")
    doc = found[0]
    check.expect((doc.get("masterIdentifier") or {}).get("value")
                 == f"urn:oid:{check.ctx.state['x_unique']}", "its uniqueId is the one sent")
    check.ctx.state["x_url"] = doc["content"][0]["attachment"]["url"]


def retrieved(check: Check) -> None:
    url = check.ctx.needs("x_url", "needs the document found by exchange-04")
    if not url.startswith("http"):
        url = f"{base(check.ctx)}/{url}"
    response = check.http.get(url, headers={"Accept": "application/pdf"})
    expect_status(response, 200, what="ITI-68")
    check.expect(response.content == DOCUMENT, "the bytes are the document provided")
    check.expect(response.headers.get("content-type", "").startswith("application/pdf"),
                 f"its own media type; got {response.headers.get('content-type')}")


def bad_hash(check: Check) -> None:
    who = check.ctx.needs("x_patient", "needs the patient of exchange-01")
    unique = f"2.25.{uuid.uuid4().int}"
    response = check.http.post(base(check.ctx), headers=HEADERS, content=json.dumps(
        bundle(who["id"], unique, DOCUMENT, _sha1(b"another document"))))
    check.expect(400 <= response.status_code < 500,
                 f"a hash that is not the document's is refused (4xx); got "
                 f"{response.status_code}")
    found = _search(check, f"DocumentReference?patient={who['id']}")
    check.expect(all((d.get("masterIdentifier") or {}).get("value") != f"urn:oid:{unique}"
                     for d in found), "the refused document is stored nowhere")


def pix_offered(check: Check) -> None:
    response = check.http.get(f"{base(check.ctx)}/metadata", headers={"Accept": FHIR_JSON})
    expect_status(response, 200)
    rest = (json_body(response).get("rest") or [{}])[0]
    patient: dict[str, Any] = next(
        (r for r in rest.get("resource", []) if r.get("type") == "Patient"), {})
    if "ihe-pix" not in {op.get("name") for op in patient.get("operation", [])}:
        raise Skipped("the CapabilityStatement lists no $ihe-pix on Patient")
    check.ctx.state["x_pix"] = True


def pix_found(check: Check) -> None:
    check.ctx.needs("x_pix", "the server offers no $ihe-pix")
    who = check.ctx.needs("x_patient", "needs the patient of exchange-01")
    response = check.http.get(f"{base(check.ctx)}/Patient/$ihe-pix", headers=HEADERS,
                              params={"sourceIdentifier": f"{MRN}|{who['mrn']}",
                                      "targetSystem": ID_CARD})
    expect_status(response, 200, what="ITI-83")
    parameters = json_body(response).get("parameter") or []
    targets = [(p.get("valueIdentifier") or {}).get("value") for p in parameters
               if p.get("name") == "targetIdentifier"]
    check.expect(targets == [who["card"]], f"the resident ID only; got {targets}")
    ids = [(p.get("valueReference") or {}).get("reference", "") for p in parameters
           if p.get("name") == "targetId"]
    check.expect(any(i.endswith(f"Patient/{who['id']}") for i in ids),
                 f"targetId names the patient; got {ids}")


def pix_refusals(check: Check) -> None:
    check.ctx.needs("x_pix", "the server offers no $ihe-pix")
    who = check.ctx.needs("x_patient", "needs the patient of exchange-01")
    for params, status in (
            ({"sourceIdentifier": f"urn:oid:2.25.{uuid.uuid4().int}|1"}, 400),
            ({"sourceIdentifier": f"{ID_CARD}|no-such-{uuid.uuid4().hex}"}, 404),
            ({"sourceIdentifier": f"{ID_CARD}|{who['card']}",
              "targetSystem": f"urn:oid:2.25.{uuid.uuid4().int}"}, 403)):
        response = check.http.get(f"{base(check.ctx)}/Patient/$ihe-pix", headers=HEADERS,
                                  params=params)
        expect_status(response, status, what=f"ITI-83 {params}")
        check.expect(json_body(response).get("resourceType") == "OperationOutcome",
                     "the refusal is an OperationOutcome")


def pdq_found(check: Check) -> None:
    who = check.ctx.needs("x_patient", "needs the patient of exchange-01")
    found = _search(check, "Patient?family=测试&given=一&birthdate=1980-02-29&gender=female"
                           f"&identifier={ID_CARD}|{who['card']}")
    check.expect([p.get("id") for p in found] == [who["id"]],
                 f"exactly the patient; got {[p.get('id') for p in found]}")


def cleanup(ctx: Context) -> None:
    for ref in reversed(ctx.state.get("x_written") or []):
        with contextlib.suppress(httpx.HTTPError):
            ctx.client.delete(f"{base(ctx)}/{ref}", headers=HEADERS)
    ctx.state["x_written"] = []


def _t(id_: str, title: str, text: str, url: str, fn: Any) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("exchange-01", "A patient is registered", "A Patient with a resident ID and an MRN "
       "is created.", "https://hl7.org/fhir/R4/http.html#create", registered),
    _t("exchange-02", "ITI-65 Provide Document Bundle", "A transaction Bundle with a "
       "SubmissionSet List, a DocumentReference and its Binary is accepted whole.",
       f"{MHD}/ITI-65.html", provided),
    _t("exchange-03", "ITI-66 Find Document Lists", "The SubmissionSet is found by code and "
       "patient.identifier.", f"{MHD}/ITI-66.html", lists_found),
    _t("exchange-04", "ITI-67 Find Document References", "The document is found by "
       "patient.identifier and status, with its uniqueId.", f"{MHD}/ITI-67.html",
       documents_found),
    _t("exchange-05", "ITI-68 Retrieve Document", "The attachment's URL gives the document's "
       "bytes with its own media type.", f"{MHD}/ITI-68.html", retrieved),
    _t("exchange-06", "A document whose hash is wrong is refused", "The Document Recipient "
       "checks the metadata against the document; nothing of the bundle is stored.",
       f"{MHD}/ITI-65.html#2365412-expected-actions", bad_hash),
    _t("exchange-07", "The server offers $ihe-pix", "The CapabilityStatement lists the "
       "PIXm operation on Patient.", PIXM, pix_offered),
    _t("exchange-08", "ITI-83 cross-references the patient", "From the MRN to the resident "
       "ID, only the target domain asked for, with targetId.", PIXM, pix_found),
    _t("exchange-09", "ITI-83 refusals", "Unknown domain 400, unknown identifier 404, unknown "
       "target system 403, each an OperationOutcome.", PIXM, pix_refusals),
    _t("exchange-10", "ITI-78 finds the patient by demographics", "family, given, birthdate, "
       "gender and identifier together find exactly the patient.", PDQM, pdq_found),
]


def groups(ctx: Context) -> Iterable[Group]:
    base(ctx)
    return [Group("exchange", "MHD, PIXm and PDQm", TESTS, teardown=cleanup)]


SUITE = Suite("exchange", "IHE MHD, PIXm and PDQm (regional exchange over FHIR)", groups)

__all__ = ["SUITE", "Failed"]
