"""``$cda`` and the CDA import under real SMART tokens: reading a document is reading its
report (same answer as the read for a token confined to another patient), importing one writes
a DiagnosticReport with the caller's own rights."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from sonobridge.core.policy import Caller, Policy
from sonobridge.core.resources import SearchSpec
from tests.auth.conftest import P1
from tests.auth.smart import FHIR, bearer
from tests.core.test_documents import _foreign_cda
from tests.security.test_compartments import token

CARD = {"system": "urn:oid:2.16.156.10011.1.3", "value": "110101199003070011"}
HOSPITAL = {"resourceType": "Organization", "id": "hosp", "name": "市人民医院",
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "H-42"}]}
EXPERT = {"resourceType": "Practitioner", "id": "expert", "name": [{"text": "王主任"}]}
REPORT = {"resourceType": "DiagnosticReport", "id": "drx", "status": "final",
          "code": {"text": "腹部超声"}, "subject": {"reference": "Patient/p1"},
          "effectiveDateTime": "2026-12-01T09:10:00+08:00",
          "issued": "2026-12-01T10:05:00+08:00",
          "performer": [{"reference": "Practitioner/expert"},
                        {"reference": "Organization/hosp"}],
          "conclusion": "未见异常。"}


def _seed(smart: Any) -> None:
    smart.seed({**P1, "identifier": [CARD]}, HOSPITAL, EXPERT, REPORT)


def _post(smart: Any, tok: str, resource: dict[str, Any]) -> Any:
    return smart.http.post(f"/fhir/{resource['resourceType']}", json=resource,
                           headers={**bearer(tok), "Content-Type": "application/fhir+json"})


def _doc(data: bytes) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "content": [{"attachment": {"contentType": "application/xml",
                                        "data": base64.b64encode(data).decode()}}]}


def test_cda_is_read_with_the_reports_rights(smart: Any) -> None:
    _seed(smart)
    own = token(smart, "patient/*.rs", patient="p1")
    r = smart.http.get("/fhir/DiagnosticReport/drx/$cda", headers=bearer(own))
    assert r.status_code == 200, r.text
    assert b"<title>\xe6\xa3\x80\xe6\x9f\xa5\xe6\x8a\xa5\xe5\x91\x8a</title>" in r.content
    other = token(smart, "patient/*.rs", patient="p2")
    read = smart.http.get("/fhir/DiagnosticReport/drx", headers=bearer(other))
    r = smart.http.get("/fhir/DiagnosticReport/drx/$cda", headers=bearer(other))
    assert read.status_code in (403, 404)
    assert r.status_code == read.status_code and b"ClinicalDocument" not in r.content
    no_reports = token(smart, "patient/Patient.rs", patient="p1")
    r = smart.http.get("/fhir/DiagnosticReport/drx/$cda", headers=bearer(no_reports))
    assert r.status_code == 403
    nobody = smart.http.get("/fhir/DiagnosticReport/drx/$cda")
    assert nobody.status_code == 401


def test_importing_needs_the_right_to_write_the_report(smart: Any) -> None:
    _seed(smart)
    data = _foreign_cda()
    docs_only = token(smart, "system/DocumentReference.cruds system/Patient.rs")
    r = _post(smart, docs_only, _doc(data))
    assert r.status_code == 403, r.text
    other = token(smart, "patient/*.cruds", patient="p2")
    r = _post(smart, other, _doc(data))  # the document is p1's
    assert r.status_code in (403, 422), r.text
    system = token(smart, "system/*.cruds")
    r = _post(smart, system, _doc(data))
    assert r.status_code == 201, r.text
    assert r.json()["subject"] == {"reference": "Patient/p1"}
    reports = smart.http.get("/fhir/DiagnosticReport?subject=Patient/p1",
                             headers=bearer(system)).json()
    assert sum(1 for e in reports["entry"] if e["resource"]["id"] not in ("drx", "dr1")) == 1


def test_a_binary_filed_at_commit_is_audited(smart: Any) -> None:
    _seed(smart)
    system = token(smart, "system/*.cruds")
    data = _foreign_cda()
    r = _post(smart, system, {"resourceType": "Binary", "contentType": "application/xml",
                              "data": base64.b64encode(data).decode()})
    assert r.status_code == 201, r.text
    found = smart.http.get("/fhir/DocumentReference?subject=Patient/p1",
                           headers=bearer(system)).json()
    [doc] = [e["resource"] for e in found["entry"]
             if e["resource"].get("masterIdentifier", {}).get("value") == "county-77.1"]
    smart.core.audit.flush()
    found = smart.core.resources.search(Caller(Policy.open(), FHIR), SearchSpec(
        "AuditEvent", [("entity", f"DocumentReference/{doc['id']}")])).bundle
    actions = [orjson.loads(orjson.dumps(e["resource"]))["action"]
               for e in found.get("entry", [])]
    assert "C" in actions, found  # its creation, written at commit, is in the trail
