"""Scope x interaction: what each kind of token may do over FHIR and DICOMweb.

Tokens are minted by the token service directly (the flows that issue them are tested in
test_code_flow and test_backend_services); every request goes over HTTP.
"""

from __future__ import annotations

import pytest

from sonobridge.auth.accounts import Client, User
from tests.auth.smart import FHIR, ROOT, bearer
from tests.dicom_data import cine, to_bytes
from tests.dicomweb.helpers import BOUNDARY, multipart

SYSTEM = "urn:sonobridge:dicom:patient-id"
STUDY_1, STUDY_2 = "2.25.1001", "2.25.1002"


def token(smart, scope: str, *, patient: str | None = None, role: str | None = None) -> str:
    client = Client("c1", "Matrix", "public", None, (), scope, None, None, True, False)
    user = User(7, "matrix", role, None, False, False) if role else None
    context = {"patient": patient} if patient else {}
    body = smart.auth.tokens.issue(client=client, user=user, scope=scope, audience=FHIR,
                                        issuer=ROOT, context=context, grant="test",
                                        refresh=False)
    return body["access_token"]


def ids(response) -> set[str]:
    assert response.status_code == 200, response.text
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in response.json().get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"}


def get(smart, tok: str, path: str, **params):
    return smart.http.get(path, headers=bearer(tok), params=params or None)


# ---------------------------------------------------------------------- FHIR, patient scopes

def test_patient_scope_reads_only_its_compartment(smart):
    t = token(smart, "patient/*.rs", patient="p1")
    assert get(smart, t, "/fhir/Observation/o1").status_code == 200
    assert get(smart, t, "/fhir/Patient/p1").status_code == 200
    for path in ("/fhir/Observation/o2", "/fhir/Patient/p2", "/fhir/Observation/o2/_history",
                 "/fhir/Observation/o2/_history/1", "/fhir/Patient/p2/Observation",
                 "/fhir/Patient/p2/$everything", "/fhir/ImagingStudy/1.2.3.2"):
        r = get(smart, t, path)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    assert ids(get(smart, t, "/fhir/Observation")) == {"Observation/o1", "Observation/o3"}
    assert ids(get(smart, t, "/fhir/Observation", subject="Patient/p2")) == set()
    assert ids(get(smart, t, "/fhir/Patient")) == {"Patient/p1"}
    everything = ids(get(smart, t, "/fhir/Patient/p1/$everything"))
    assert "Observation/o2" not in everything and "Observation/o1" in everything
    history = get(smart, t, "/fhir/Observation/_history")
    seen = {e["resource"]["id"] for e in history.json()["entry"]}
    assert seen == {"o1", "o3"}


def test_include_paths_do_not_leak_other_patients(smart):
    t = token(smart, "patient/*.rs", patient="p1")
    found = ids(get(smart, t, "/fhir/DiagnosticReport",
                    _include="DiagnosticReport:result"))
    assert found == {"DiagnosticReport/dr1", "Observation/o1"}  # o2 belongs to p2
    rev = ids(get(smart, t, "/fhir/Observation", _id="o2",
                  _revinclude="DiagnosticReport:result"))
    assert rev == set()
    unrestricted = token(smart, "system/*.rs")
    assert "Observation/o2" in ids(get(smart, unrestricted, "/fhir/DiagnosticReport",
                                       _include="DiagnosticReport:result"))


def test_patient_scope_writes_stay_in_the_compartment(smart):
    t = token(smart, "patient/Observation.cruds", patient="p1")
    mine = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"}}
    created = smart.http.post("/fhir/Observation", json=mine, headers=bearer(t))
    assert created.status_code == 201, created.text
    theirs = {**mine, "subject": {"reference": "Patient/p2"}}
    r = smart.http.post("/fhir/Observation", json=theirs, headers=bearer(t))
    assert r.status_code == 403
    system = token(smart, "system/*.rs")
    assert len(ids(get(smart, system, "/fhir/Observation", subject="Patient/p2"))) == 1
    moved = {**mine, "id": "o1", "subject": {"reference": "Patient/p2"}}
    assert smart.http.put("/fhir/Observation/o1", json=moved, headers=bearer(t)
                          ).status_code == 403
    assert get(smart, system, "/fhir/Observation/o1").json()["subject"]["reference"] == \
        "Patient/p1"
    assert smart.http.delete("/fhir/Observation/o2", headers=bearer(t)).status_code == 403
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": mine, "request": {"method": "POST", "url": "Observation"}},
        {"resource": theirs, "request": {"method": "POST", "url": "Observation"}}]}
    before = len(ids(get(smart, system, "/fhir/Observation", _count="100")))
    r = smart.http.post("/fhir", json=bundle, headers=bearer(t))
    assert r.status_code == 403
    assert len(ids(get(smart, system, "/fhir/Observation", _count="100"))) == before
    read_only = token(smart, "patient/*.rs", patient="p1")
    assert smart.http.post("/fhir/Observation", json=mine, headers=bearer(read_only)
                           ).status_code == 403


def test_query_restricted_scope_filters(smart):
    t = token(smart, "patient/Observation.rs?category=laboratory", patient="p1")
    assert ids(get(smart, t, "/fhir/Observation")) == {"Observation/o1"}
    assert get(smart, t, "/fhir/Observation/o1").status_code == 200
    assert get(smart, t, "/fhir/Observation/o3").status_code == 403  # vital-signs
    both = token(smart, "patient/Observation.rs?category=laboratory "
                        "patient/Observation.rs?category=vital-signs", patient="p1")
    assert ids(get(smart, both, "/fhir/Observation")) == {"Observation/o1", "Observation/o3"}


def test_patient_scope_without_patient_allows_nothing(smart):
    t = token(smart, "patient/*.rs")
    assert get(smart, t, "/fhir/Observation/o1").status_code == 403


# ---------------------------------------------------------------------- user scopes and roles

def test_user_scopes_are_bounded_by_role(smart):
    trainee = token(smart, "user/*.cruds", role="trainee")
    report = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "US"}}
    assert smart.http.post("/fhir/DiagnosticReport", json=report, headers=bearer(trainee)
                           ).status_code == 403
    answer = {"resourceType": "QuestionnaireResponse", "status": "completed"}
    assert smart.http.post("/fhir/QuestionnaireResponse", json=answer,
                           headers=bearer(trainee)).status_code == 201
    # identified data: a trainee reads teaching material only (issue 16)
    assert get(smart, trainee, "/fhir/Observation/o2").status_code == 403
    expert = token(smart, "user/*.cruds", role="remote-expert")
    assert smart.http.post("/fhir/DiagnosticReport", json=report, headers=bearer(expert)
                           ).status_code == 201
    sysadmin = token(smart, "user/*.cruds", role="system-admin")
    assert get(smart, sysadmin, "/fhir/Observation/o1").status_code == 403
    no_write = token(smart, "user/*.rs", role="remote-expert")
    assert smart.http.post("/fhir/DiagnosticReport", json=report, headers=bearer(no_write)
                           ).status_code == 403


def test_audit_events_are_for_the_audit_administrator_only(smart):
    smart.core.audit.flush()
    for t in (token(smart, "user/*.rs", role="remote-expert"), token(smart, "system/*.rs"),
              token(smart, "user/*.cruds", role="security-admin"),
              token(smart, "patient/*.rs", patient="p1")):
        assert get(smart, t, "/fhir/AuditEvent").status_code == 403
    auditor = token(smart, "user/AuditEvent.rs", role="audit-admin")
    r = get(smart, auditor, "/fhir/AuditEvent")
    assert r.status_code == 200 and r.json().get("entry")
    assert get(smart, auditor, "/fhir/Observation/o1").status_code == 403


def test_system_wide_search_covers_only_allowed_types(smart):
    t = token(smart, "system/Observation.rs")
    found = ids(get(smart, t, "/fhir", _type="Observation"))
    assert found and all(f.startswith("Observation/") for f in found)
    assert get(smart, t, "/fhir", _type="Patient").status_code == 403
    everything = ids(get(smart, t, "/fhir"))
    assert everything and all(f.startswith("Observation/") for f in everything)


# ---------------------------------------------------------------------- DICOMweb

@pytest.fixture
def studies(smart):
    smart.seed({**smart_patient("p1"), "identifier": [{"system": SYSTEM, "value": "PID-1"}]},
               {**smart_patient("p2"), "identifier": [{"system": SYSTEM, "value": "PID-2"}]})
    writer = token(smart, "system/ImagingStudy.c system/*.rs")
    for study, pid in ((STUDY_1, "PID-1"), (STUDY_2, "PID-2")):
        ds = cine(study=study, patient_id=pid, frames=2)
        r = stow(smart, writer, [to_bytes(ds)])
        assert r.status_code == 200, r.text
    sops = {}
    for study in (STUDY_1, STUDY_2):
        found = get(smart, writer, f"/dicomweb/studies/{study}/instances").json()
        series = found[0]["0020000E"]["Value"][0]
        sop = found[0]["00080018"]["Value"][0]
        sops[study] = (series, sop)
    return sops


def smart_patient(pid: str) -> dict:
    return {"resourceType": "Patient", "id": pid}


def stow(smart, tok: str, parts: list[bytes]):
    return smart.http.post("/dicomweb/studies", content=multipart(parts), headers={
        **bearer(tok), "Accept": "application/dicom+json",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'})


def test_dicomweb_follows_imaging_study_access(smart, studies):
    t = token(smart, "patient/ImagingStudy.rs", patient="p1")
    found = get(smart, t, "/dicomweb/studies").json()
    assert [s["0020000D"]["Value"][0] for s in found] == [STUDY_1]
    series_2, sop_2 = studies[STUDY_2]
    series_1, sop_1 = studies[STUDY_1]
    mine = f"/dicomweb/studies/{STUDY_1}/series/{series_1}/instances/{sop_1}"
    theirs = f"/dicomweb/studies/{STUDY_2}/series/{series_2}/instances/{sop_2}"
    assert get(smart, t, f"/dicomweb/studies/{STUDY_1}/metadata").status_code == 200
    ok = smart.http.get(f"{mine}/frames/1", headers={
        **bearer(t), "Accept": 'multipart/related; type="application/octet-stream"'})
    assert ok.status_code == 200
    for path in (f"/dicomweb/studies/{STUDY_2}", f"/dicomweb/studies/{STUDY_2}/metadata",
                 f"/dicomweb/studies/{STUDY_2}/series", f"{theirs}/frames/1",
                 f"{theirs}/rendered", f"{theirs}/thumbnail", f"{theirs}/metadata"):
        r = get(smart, t, path)
        assert r.status_code == 403, (path, r.status_code)
        assert "error" in r.json() or "errors" in str(r.json()) or r.json()
    wado = get(smart, t, "/wado", requestType="WADO", studyUID=STUDY_2, seriesUID=series_2,
               objectUID=sop_2, contentType="application/dicom")
    assert wado.status_code == 403
    assert get(smart, t, "/wado", requestType="WADO", studyUID=STUDY_1, seriesUID=series_1,
               objectUID=sop_1, contentType="application/dicom").status_code == 200
    observations_only = token(smart, "patient/Observation.rs", patient="p1")
    assert get(smart, observations_only, "/dicomweb/studies").status_code == 403
    assert get(smart, observations_only, f"/dicomweb/studies/{STUDY_1}/metadata"
               ).status_code == 403


def test_dicomweb_writes_need_imaging_study_rights(smart, studies):
    ds = cine(study="2.25.1003", patient_id="PID-1", frames=1)
    confined = token(smart, "patient/ImagingStudy.cruds", patient="p1")
    assert stow(smart, confined, [to_bytes(ds)]).status_code == 403
    reader = token(smart, "system/*.rs")
    assert stow(smart, reader, [to_bytes(ds)]).status_code == 403
    assert smart.http.delete(f"/dicomweb/studies/{STUDY_1}", headers=bearer(reader)
                             ).status_code == 403
    writer = token(smart, "user/ImagingStudy.cruds", role="sonographer")
    assert stow(smart, writer, [to_bytes(ds)]).status_code == 200
    deleter = token(smart, "system/ImagingStudy.d system/ImagingStudy.r")
    assert smart.http.delete("/dicomweb/studies/2.25.1003", headers=bearer(deleter)
                             ).status_code == 200


def test_v1_scopes_map_to_v2(smart):
    read = token(smart, "patient/Observation.read", patient="p1")
    assert get(smart, read, "/fhir/Observation/o1").status_code == 200
    assert ids(get(smart, read, "/fhir/Observation")) == {"Observation/o1", "Observation/o3"}
    mine = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"}}
    assert smart.http.post("/fhir/Observation", json=mine, headers=bearer(read)
                           ).status_code == 403
    write = token(smart, "user/*.write", role="remote-expert")
    assert smart.http.post("/fhir/Observation", json=mine, headers=bearer(write)
                           ).status_code == 201
    assert get(smart, write, "/fhir/Observation/o1").status_code == 403  # .write has no read
    everything = token(smart, "user/*.*", role="remote-expert")
    assert get(smart, everything, "/fhir/Observation/o1").status_code == 200
