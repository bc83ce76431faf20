"""The CDA suite: does a server make, store and receive WS/T 500.6 检查报告 documents?

Against a FHIR base (``--target``): the kit writes a patient (with a fresh 身份证号), an
organisation, a practitioner and two reports (one final, one preliminary), all tagged, and
then checks that ``$cda`` answers a document that passes the CDA R2 schema with the WS/T 500
overlay and the WS/T 500.6 rules (``sonobridge.mappings.cda``), that it is 409 for a
preliminary report, that the final report's document is stored as a DocumentReference whose
attachment holds the same bytes (size and SHA-1 as declared), that a CDA posted as a
DocumentReference is filed for the patient its 身份证号 names, and that a CDA failing the
schema, or declaring entities, is refused with 422 and stored nowhere. Everything written is
deleted at the end.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx

from sonobridge.conformance.kit.fhir import FHIR_JSON, HEADERS, R4, base, run_tag
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
from sonobridge.mappings.cda import DocumentVersion
from sonobridge.mappings.cda import codes as C
from sonobridge.mappings.cda.report import ReportSources, report_document
from sonobridge.mappings.cda.validate import problems

STANDARD = "WS/T 500.6-2016 电子病历共享文档规范 第6部分：检查报告"  # noqa: RUF001


def _tag(ctx: Context) -> dict[str, str]:
    return run_tag(ctx, "cda")


def _create(check: Check, resource: dict[str, Any]) -> str:
    kind = resource["resourceType"]
    response = check.http.post(f"{base(check.ctx)}/{kind}", content=json.dumps(
        {**resource, "meta": {"tag": [_tag(check.ctx)]}}, ensure_ascii=False),
        headers=HEADERS)
    expect_status(response, 201, what=f"creating the kit's {kind}")
    res_id = str(json_body(response, f"the created {kind}").get("id"))
    check.ctx.state.setdefault("cda_created", []).append(f"{kind}/{res_id}")
    return res_id


def _report(patient: str, org: str, doctor: str, status: str) -> dict[str, Any]:
    return {"resourceType": "DiagnosticReport", "status": status,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "v2-0074", "code": "RUS"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "24558-9",
                                 "display": "US Abdomen"}], "text": "腹部超声"},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2026-12-01T09:10:00+08:00",
            "issued": "2026-12-01T10:05:00+08:00",
            "performer": [{"reference": f"Practitioner/{doctor}"},
                          {"reference": f"Organization/{org}"}],
            "conclusion": "肝胆胰脾未见明显异常。"}


def _world(check: Check) -> dict[str, str]:
    """The kit's patient, organisation, practitioner and reports (made once per run)."""
    state = check.ctx.state
    if "cda_world" in state:
        world: dict[str, str] = state["cda_world"]
        return world
    card = "KIT" + uuid.uuid4().hex[:15].upper()
    patient = _create(check, {"resourceType": "Patient", "identifier": [
        {"system": f"urn:oid:{C.ID_CARD}", "value": card}], "name": [{"text": "测试患者"}],
        "gender": "female", "birthDate": "1985-06-01"})
    org = _create(check, {"resourceType": "Organization", "name": "测试医院", "identifier": [
        {"system": f"urn:oid:{C.ORGANIZATION_ID}", "value": "KIT-ORG"}]})
    doctor = _create(check, {"resourceType": "Practitioner", "name": [{"text": "测试医师"}]})
    final = _create(check, _report(patient, org, doctor, "final"))
    preliminary = _create(check, _report(patient, org, doctor, "preliminary"))
    world = {"card": card, "patient": patient, "org": org, "doctor": doctor, "final": final,
             "preliminary": preliminary}
    state["cda_world"] = world
    return world


def _cda(check: Check, report_id: str) -> httpx.Response:
    return check.http.get(f"{base(check.ctx)}/DiagnosticReport/{report_id}/$cda",
                          headers={"Accept": "application/xml"})


def declared(check: Check) -> None:
    response = check.http.get(f"{base(check.ctx)}/metadata", headers={"Accept": FHIR_JSON})
    expect_status(response, 200)
    rest = json_body(response, "the CapabilityStatement").get("rest", [{}])[0]
    report: dict[str, Any] = next(
        (r for r in rest.get("resource", []) if r.get("type") == "DiagnosticReport"), {})
    check.expect(any(op.get("name") == "cda" for op in report.get("operation", [])),
                 "DiagnosticReport lists the cda operation")


def made(check: Check) -> None:
    world = _world(check)
    response = _cda(check, world["final"])
    expect_status(response, 200, what="$cda of a final report")
    check.expect("xml" in response.headers.get("content-type", ""),
                 f"an XML content type; got {response.headers.get('content-type')}")
    found = problems(response.content)
    check.expect(not found, "the document passes the schema and the WS/T 500.6 rules; got "
                 + "; ".join(map(str, found[:5])))
    check.ctx.state["cda_bytes"] = response.content


def not_final(check: Check) -> None:
    response = _cda(check, _world(check)["preliminary"])
    expect_status(response, 409, what="$cda of a preliminary report")


def stored(check: Check) -> None:
    world = _world(check)
    data = check.ctx.needs("cda_bytes", "needs the document of cda-make-01")
    response = check.http.get(f"{base(check.ctx)}/DocumentReference", params={
        "related": f"DiagnosticReport/{world['final']}", "status": "current"},
        headers={"Accept": FHIR_JSON})
    expect_status(response, 200)
    docs = [e.get("resource", {}) for e in json_body(response, "the search").get("entry", [])]
    docs = [d for d in docs if d.get("content", [{}])[0].get("format", {}).get("code")
            == C.REPORT_FORMAT]
    check.expect(len(docs) == 1, f"one current 检查报告 DocumentReference; found {len(docs)}")
    content = docs[0].get("content", [{}])[0]
    attachment = content.get("attachment", {})
    url = str(attachment.get("url", ""))
    check.expect(url.startswith("Binary/") or "/Binary/" in url, f"a Binary url; got {url!r}")
    binary = check.http.get(f"{base(check.ctx)}/Binary/{url.rsplit('/', 1)[-1]}",
                            headers={"Accept": FHIR_JSON})
    expect_status(binary, 200, what="reading the document's Binary")
    held = base64.b64decode(json_body(binary, "the Binary").get("data", ""))
    check.expect(held == data, "the stored bytes are the bytes $cda answers")
    check.expect(attachment.get("size") == len(held), "attachment.size is the size")
    digest = base64.b64encode(hashlib.sha1(held).digest()).decode()
    check.expect(attachment.get("hash") == digest, "attachment.hash is the SHA-1")


def _foreign(world: dict[str, str]) -> bytes:
    patient = {"resourceType": "Patient", "identifier": [
        {"system": f"urn:oid:{C.ID_CARD}", "value": world["card"]}],
        "name": [{"text": "测试患者"}], "gender": "female", "birthDate": "1985-06-01"}
    report = {**_report("x", "o", "d", "final"), "id": "kit-ext",
              "conclusion": "外院报告：胆囊息肉。"}  # noqa: RUF001
    sources = ReportSources(report=report, patient=patient, organization={
        "resourceType": "Organization", "id": "o", "name": "外院"},
        verifier={"resourceType": "Practitioner", "id": "d", "name": [{"text": "外院医师"}]})
    return report_document(sources, DocumentVersion("kit-" + uuid.uuid4().hex[:12]),
                           datetime.now(UTC))


def _post_document(check: Check, data: bytes) -> httpx.Response:
    doc = {"resourceType": "DocumentReference", "status": "current",
           "meta": {"tag": [_tag(check.ctx)]},
           "content": [{"attachment": {"contentType": "application/xml",
                                       "data": base64.b64encode(data).decode()}}]}
    response = check.http.post(f"{base(check.ctx)}/DocumentReference",
                               content=json.dumps(doc), headers=HEADERS)
    if response.status_code == 201:
        res_id = json_body(response, "the DocumentReference").get("id")
        check.ctx.state.setdefault("cda_created", []).append(f"DocumentReference/{res_id}")
    return response


def received(check: Check) -> None:
    world = _world(check)
    response = _post_document(check, _foreign(world))
    expect_status(response, 201, what="POST of a DocumentReference carrying a WS/T 500.6 CDA")
    doc = json_body(response, "the DocumentReference")
    subject = doc.get("subject", {}).get("reference", "")
    check.expect(subject.endswith(f"Patient/{world['patient']}"),
                 f"filed for the patient its 身份证号 names; subject {subject!r}")
    related = [r.get("reference", "") for r in doc.get("context", {}).get("related", [])]
    reports = [r for r in related if "DiagnosticReport/" in r]
    check.expect(reports, f"context.related names the DiagnosticReport; got {related}")
    filed = "DiagnosticReport/" + reports[0].rsplit("/", 1)[-1]
    check.ctx.state.setdefault("cda_created", []).append(filed)
    report = check.http.get(f"{base(check.ctx)}/{filed}", headers={"Accept": FHIR_JSON})
    expect_status(report, 200, what="reading the filed DiagnosticReport")
    body = json_body(report, "the DiagnosticReport")
    check.expect(body.get("conclusion") == "外院报告：胆囊息肉。",  # noqa: RUF001
                 f"the conclusion is the document's 主观提示; got {body.get('conclusion')!r}")


def _refused(check: Check, data: bytes, what: str) -> None:
    world = _world(check)
    before = check.http.get(f"{base(check.ctx)}/DocumentReference", params={
        "subject": f"Patient/{world['patient']}", "_summary": "count"},
        headers={"Accept": FHIR_JSON})
    response = _post_document(check, data)
    expect_status(response, 422, what=what)
    issues = json_body(response, "the refusal").get("issue", [])
    check.expect(issues, "an OperationOutcome with issues")
    after = check.http.get(f"{base(check.ctx)}/DocumentReference", params={
        "subject": f"Patient/{world['patient']}", "_summary": "count"},
        headers={"Accept": FHIR_JSON})
    check.expect(json_body(before).get("total") == json_body(after).get("total"),
                 "nothing was stored")


def refused_schema(check: Check) -> None:
    data = _foreign(_world(check)).replace(b"<title>", b"<titel/><title>", 1)
    _refused(check, data, "a CDA that fails the CDA R2 schema")


def refused_entities(check: Check) -> None:
    data = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
            b'<ClinicalDocument xmlns="urn:hl7-org:v3">&x;</ClinicalDocument>')
    _refused(check, data, "a CDA declaring an external entity")


def cleanup(ctx: Context) -> None:
    created = list(ctx.state.get("cda_created", []))
    world = ctx.state.get("cda_world")
    if world:  # what the server derived: documents, their Binaries, filed reports
        with contextlib.suppress(httpx.HTTPError):
            found = ctx.client.get(f"{base(ctx)}/DocumentReference", params={
                "subject": f"Patient/{world['patient']}", "_count": 100},
                headers={"Accept": FHIR_JSON}).json()
            for entry in found.get("entry", []):
                doc = entry.get("resource", {})
                created.append(f"DocumentReference/{doc.get('id')}")
                url = str(doc.get("content", [{}])[0].get("attachment", {}).get("url", ""))
                if "Binary/" in url:
                    created.append("Binary/" + url.rsplit("/", 1)[-1])
    order = ["DocumentReference", "Binary", "DiagnosticReport", "Practitioner",
             "Organization", "Patient"]
    for ref in sorted(dict.fromkeys(created), key=lambda r: order.index(r.split("/")[0])
                      if r.split("/")[0] in order else 0):
        with contextlib.suppress(httpx.HTTPError, Skipped, Failed):
            ctx.client.delete(f"{base(ctx)}/{ref}", headers={"Accept": FHIR_JSON})
    ctx.state["cda_created"] = []


def _t(id_: str, title: str, text: str, url: str, fn: Any) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("cda-cap-01", "$cda declared", "The CapabilityStatement lists the operations the server "
       "supports on each resource type.", f"{R4}/capabilitystatement-definitions.html"
       "#CapabilityStatement.rest.resource.operation", declared),
    _t("cda-make-01", "检查报告 of a final report", f"{STANDARD}: header and sections; valid "
       "against the CDA R2 schema with the WS/T 500 extensions.", f"{R4}/operations.html",
       made),
    _t("cda-make-02", "No 检查报告 before the report is final", "A document is made of a final "
       "report only (409 before).", f"{R4}/valueset-diagnostic-report-status.html",
       not_final),
    _t("cda-store-01", "Stored as a DocumentReference", "The final report's document is "
       "indexed by a current DocumentReference whose attachment holds the same bytes, with "
       "its size and SHA-1.", f"{R4}/documentreference.html", stored),
    _t("cda-recv-01", "A referring hospital's CDA is filed", "A posted WS/T 500.6 document is "
       "filed for the patient its 身份证号 names, with its DiagnosticReport.",
       f"{R4}/documentreference.html", received),
    _t("cda-recv-02", "A CDA failing the schema is refused", "422 with an OperationOutcome; "
       "nothing stored.", f"{R4}/http.html#create", refused_schema),
    _t("cda-recv-03", "Entities are refused", "A document declaring entities (XXE) is refused, "
       "never expanded.", "https://owasp.org/www-community/vulnerabilities/"
       "XML_External_Entity_(XXE)_Processing", refused_entities),
]


def groups(ctx: Context) -> Iterable[Group]:
    base(ctx)
    return [Group("cda", "WS/T 500 CDA documents", TESTS, teardown=cleanup)]


SUITE = Suite("cda", "WS/T 500 CDA documents", groups)
