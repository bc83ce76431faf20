"""The trainee's view (issue 16): with a real SMART token, a trainee reads teaching material
(resources labelled PSEUDED by the teaching domain) and its own training records, never
identified patient data, whether by read, search, _include/_revinclude, history or DICOMweb
(which follows the ImagingStudy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from sonobridge.auth.accounts import Client, User
from sonobridge.core.roles import TEACHING_LABEL
from sonobridge.core.teaching import PSEUDED, CaseRequest, teaching_of
from tests.auth.smart import FHIR, ROOT, bearer
from tests.core.test_deid_pixels import burned_cine

ME = "Practitioner/tr1"
LABEL = {"system": TEACHING_LABEL[0], "code": TEACHING_LABEL[1]}


def token(smart, scope: str, *, fhir_user: str | None = ME, patient: str | None = None
          ) -> str:
    client = Client("c1", "Matrix", "public", None, (), scope, None, None, True, False)
    user = User(8, "trainee1", "trainee", fhir_user, False, False)
    context = {"patient": patient} if patient else {}
    return smart.auth.tokens.issue(client=client, user=user, scope=scope, audience=FHIR,
                                   issuer=ROOT, context=context, grant="test",
                                   refresh=False)["access_token"]


def get(smart, tok: str, path: str, **params):
    return smart.http.get(path, headers={**bearer(tok), "Accept": "application/fhir+json"},
                          params=params or None)


def ids(response) -> set[str]:
    assert response.status_code == 200, response.text
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in response.json().get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"}


@pytest.fixture
def world(smart, tmp_path: Path) -> dict:
    """An identified study (burned-in identity) made into a teaching case by the server, plus
    training records of the trainee and of someone else."""
    core = smart.core
    study_uid = generate_uid()
    burned_cine(tmp_path / "a.dcm", "jpeg", frames=2, study_uid=study_uid)
    outcome = core.ingest.ingest(core.ingest.receiver.from_file(tmp_path / "a.dcm"),
                                 core.server)
    assert outcome.ok, outcome.message
    original = json.loads(core.resources.read(core.server, "ImagingStudy", study_uid).content)
    case = teaching_of(core).add(core.server, study_uid, CaseRequest(title="Liver cyst"))
    smart.seed(
        {"resourceType": "Task", "id": "mine", "status": "requested", "intent": "order",
         "owner": {"reference": ME}, "focus": {"reference": "PlanDefinition/c1"}},
        {"resourceType": "Task", "id": "theirs", "status": "requested", "intent": "order",
         "owner": {"reference": "Practitioner/other"}, "for": {"reference": "Patient/p1"}},
        {"resourceType": "QuestionnaireResponse", "id": "qr1", "status": "completed",
         "author": {"reference": ME}},
        # labelled teaching material whose subject is (wrongly) an identified patient: the
        # _include must not bring Patient/p1 along
        {"resourceType": "Observation", "id": "t1", "status": "final", "code": {"text": "x"},
         "meta": {"security": [LABEL]}, "subject": {"reference": "Patient/p1"}},
        # identified first, labelled later: version 1 stays unreadable
        {"resourceType": "Observation", "id": "t2", "status": "final", "code": {"text": "y"}},
    )
    smart.seed({"resourceType": "Observation", "id": "t2", "status": "final",
                "code": {"text": "y"}, "meta": {"security": [LABEL]}})
    return {"original": study_uid, "original_patient": original["subject"]["reference"],
            "copy": case.study_uid, "patient": case.patient,
            "case": case.document_reference["id"]}


def test_the_label_is_the_one_the_teaching_domain_sets():
    assert (PSEUDED["system"], PSEUDED["code"]) == TEACHING_LABEL


def test_reads_teaching_material_only(smart, world):
    t = token(smart, "user/*.rs")
    assert get(smart, t, f"/fhir/ImagingStudy/{world['copy']}").status_code == 200
    assert get(smart, t, f"/fhir/{world['patient']}").status_code == 200
    assert get(smart, t, f"/fhir/DocumentReference/{world['case']}").status_code == 200
    for path in (f"/fhir/ImagingStudy/{world['original']}", f"/fhir/{world['original_patient']}",
                 "/fhir/Patient/p1", "/fhir/Observation/o1", "/fhir/DiagnosticReport/dr1",
                 "/fhir/Task/theirs", "/fhir/Observation/o1/_history",
                 "/fhir/Observation/t2/_history/1"):
        r = get(smart, t, path)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    assert get(smart, t, "/fhir/Observation/t2/_history/2").status_code == 200
    # definitions and people are not patient data: readable as the role allows
    assert get(smart, t, "/fhir/PlanDefinition").status_code == 200


def test_searches_includes_and_history_see_teaching_material_only(smart, world):
    t = token(smart, "user/*.rs")
    assert ids(get(smart, t, "/fhir/ImagingStudy")) == {f"ImagingStudy/{world['copy']}"}
    assert ids(get(smart, t, "/fhir/Patient")) == {world["patient"]}
    assert ids(get(smart, t, "/fhir/Observation")) == {"Observation/t1", "Observation/t2"}
    assert ids(get(smart, t, "/fhir/Observation", _include="Observation:subject")) == {
        "Observation/t1", "Observation/t2"}
    assert ids(get(smart, t, "/fhir/Patient", _id="p1",
                   _revinclude="Observation:subject")) == set()
    assert ids(get(smart, t, "/fhir/ImagingStudy", _include="ImagingStudy:subject")) == {
        f"ImagingStudy/{world['copy']}", world["patient"]}
    # chains and _has evaluate only what the trainee may read: t1's subject p1 is identified
    assert ids(get(smart, t, "/fhir/Observation", **{"subject:Patient.family": "Li"})) == set()
    assert ids(get(smart, t, "/fhir/Observation", **{"subject:Patient.family": "Li",
                                                     "_id": "o1"})) == set()
    assert ids(get(smart, t, "/fhir/Patient", **{"_has:Observation:subject:_id": "o1"})) == set()
    everything = ids(get(smart, t, "/fhir/Observation/_history"))
    assert everything == {"Observation/t1", "Observation/t2"}
    versions = get(smart, t, "/fhir/Observation/t2/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in versions["entry"]] == ["2"]
    case = ids(get(smart, t, "/fhir/DocumentReference", _id=world["case"], _include="*"))
    assert f"DocumentReference/{world['case']}" in case
    assert f"ImagingStudy/{world['original']}" not in case
    assert world["original_patient"] not in case
    assert f"ImagingStudy/{world['copy']}" in ids(get(
        smart, t, f"/fhir/{world['patient']}/$everything"))
    assert ids(get(smart, t, f"/fhir/{world['original_patient']}/$everything")) == set()
    across = ids(get(smart, t, "/fhir", _type="Patient,Observation,DiagnosticReport,Task"))
    assert "Patient/p1" not in across and "DiagnosticReport/dr1" not in across
    assert world["original_patient"] not in across


def test_own_training_records_are_readable_and_writable(smart, world):
    t = token(smart, "user/*.cruds")
    assert ids(get(smart, t, "/fhir/Task")) == {"Task/mine"}
    assert get(smart, t, "/fhir/QuestionnaireResponse/qr1").status_code == 200
    task = get(smart, t, "/fhir/Task/mine").json()
    r = smart.http.put("/fhir/Task/mine", json={**task, "status": "in-progress"},
                       headers=bearer(t))
    assert r.status_code == 200, r.text
    theirs = {"resourceType": "Task", "id": "theirs", "status": "completed", "intent": "order",
              "owner": {"reference": ME}}
    assert smart.http.put("/fhir/Task/theirs", json=theirs,
                          headers=bearer(t)).status_code == 403
    # without a Practitioner in the token, its records are not its own
    anonymous = token(smart, "user/*.rs", fhir_user=None)
    assert get(smart, anonymous, "/fhir/Task/mine").status_code == 403
    assert ids(get(smart, anonymous, "/fhir/ImagingStudy")) == {
        f"ImagingStudy/{world['copy']}"}


def test_a_patient_context_grants_no_identified_data(smart, world):
    t = token(smart, "patient/*.rs", patient="p1")
    assert get(smart, t, "/fhir/Patient/p1").status_code == 403
    assert ids(get(smart, t, "/fhir/Observation")) == {"Observation/t1"}  # labelled, p1's


def test_dicomweb_follows_the_imaging_study(smart, world):
    t = token(smart, "user/*.rs")
    dicom = {**bearer(t), "Accept": "application/dicom+json"}
    r = smart.http.get(f"/dicomweb/studies/{world['copy']}/metadata", headers=dicom)
    assert r.status_code == 200, r.text
    for path in (f"/dicomweb/studies/{world['original']}/metadata",
                 f"/dicomweb/studies/{world['original']}/series"):
        assert smart.http.get(path, headers=dicom).status_code in (403, 404), path
    found = smart.http.get("/dicomweb/studies", headers=dicom)
    assert found.status_code == 200, found.text
    assert {s["0020000D"]["Value"][0] for s in found.json()} == {world["copy"]}
    assert smart.http.get("/wado", params={"requestType": "WADO", "studyUID": world["original"],
                                           "seriesUID": "1", "objectUID": "1"},
                          headers=bearer(t)).status_code in (403, 404)


def test_a_trainee_logged_in_through_the_code_flow(smart, world):
    """The whole SMART flow (login, consent, code exchange): the token carries the trainee's
    role and fhirUser, and the rule holds on it."""
    smart.user("trainee2", "trainee", fhir_user=ME)
    client, _ = smart.app("openid fhirUser user/*.rs")
    body = smart.user_token(client.client_id, "trainee2", "openid fhirUser user/*.rs")
    t = body["access_token"]
    assert ids(get(smart, t, "/fhir/ImagingStudy")) == {f"ImagingStudy/{world['copy']}"}
    assert ids(get(smart, t, "/fhir/Task")) == {"Task/mine"}
    assert get(smart, t, f"/fhir/ImagingStudy/{world['original']}").status_code == 403
