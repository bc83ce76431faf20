"""Teaching cases end to end: $teaching-case on a stored study (cines with burned-in identity,
an SR naming the patient, a report) makes a de-identified copy through the ingest path, a KOS
"For Teaching", a de-identified report and a DocumentReference; nothing identifying leaks;
repeated publication is refused; withdrawal deletes the copy."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import generate_uid

from sonobridge.core.teaching import Teaching, attach, teaching_of
from sonobridge.mappings.deid import hmac_uid
from tests.core.test_deid_pixels import ACC, BAND, BIRTH, DATE, NAME, PID, burned_cine, sr_with_name

FHIR = {"Content-Type": "application/fhir+json"}


def service(core) -> Teaching:
    if not any(op.name == "teaching-case" for op in core.operations.all()):
        attach(core)
    return teaching_of(core)


def store(core, path: Path) -> None:
    outcome = core.ingest.ingest(core.ingest.receiver.from_file(path), core.server)
    assert outcome.ok, outcome.message


@pytest.fixture
def study(core, tmp_path: Path) -> dict:
    service(core)
    study_uid, series_uid = generate_uid(), generate_uid()
    jpeg, jpeg_frames = burned_cine(tmp_path / "a.dcm", "jpeg", frames=5, study_uid=study_uid,
                                    series_uid=series_uid, number=1)
    native, native_frames = burned_cine(tmp_path / "b.dcm", "native", frames=3,
                                        study_uid=study_uid, series_uid=series_uid, number=2)
    sr = sr_with_name(tmp_path / "c.dcm", study_uid, jpeg)
    for name in ("a", "b", "c"):
        store(core, tmp_path / f"{name}.dcm")
    imaging = core.resources.read(core.server, "ImagingStudy", study_uid)
    patient = json.loads(imaging.content)["subject"]["reference"]
    report = core.resources.create(core.server, "DiagnosticReport", {
        "resourceType": "DiagnosticReport", "status": "final",
        "identifier": [{"system": "urn:hospital:report", "value": "RPT-991"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "24558-9"}]},
        "subject": {"reference": patient},
        "imagingStudy": [{"reference": f"ImagingStudy/{study_uid}"}],
        "effectiveDateTime": "2023-04-15T10:15:00+08:00",
        "issued": "2023-04-16T09:00:00+08:00",
        "performer": [{"display": "Dr. Li Wei"}],
        "conclusion": f"Jane Doe ({PID}): simple hepatic cyst.",
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
                 f"<p>Patient Jane Doe, ID {PID}, born 1980-01-01</p>"
                 "<p>Liver: 2 cm anechoic cyst.</p></div>"},
    })
    return {"uid": study_uid, "uids": [str(x.SOPInstanceUID) for x in (jpeg, native, sr)],
            "series": series_uid, "frames": {str(jpeg.SOPInstanceUID): jpeg_frames,
                                             str(native.SOPInstanceUID): native_frames},
            "patient": patient, "report": report.stored.id, "jpeg": str(jpeg.SOPInstanceUID)}


def publish(client, study_uid: str, **params) -> object:
    parameters = [{"name": "keyword", "valueString": "liver"},
                  {"name": "keyword", "valueString": "cyst"},
                  {"name": "diagnosis", "valueCoding": {"system": "http://hl7.org/fhir/sid/icd-10",
                                                        "code": "K76.8"}},
                  {"name": "bodySite", "valueCoding": {"system": "http://snomed.info/sct",
                                                       "code": "10200004", "display": "Liver"}},
                  {"name": "difficulty", "valueCode": "basic"},
                  {"name": "title", "valueString": "Simple hepatic cyst"}]
    parameters += [{"name": k, "valueString" if k != "force" else "valueBoolean": v}
                   for k, v in params.items()]
    return client.post(f"/fhir/ImagingStudy/{study_uid}/$teaching-case", headers=FHIR,
                       json={"resourceType": "Parameters", "parameter": parameters})


def stored_bytes(core, study_uid: str) -> list[bytes]:
    out = []
    for row in core.archive.instances(study_uid):
        with core.blobs.local_copy(row.blob_key) as path:
            out.append(Path(path).read_bytes())
    return out


def test_publish_a_case_that_leaks_nothing(core, client, study, tmp_path: Path):
    r = publish(client, study["uid"])
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["resourceType"] == "DocumentReference"
    assert case["type"]["coding"][0]["code"] == "113004"
    new_uid = hmac_uid(service(core).deidentifier.key, study["uid"])
    assert {"reference": f"ImagingStudy/{new_uid}"} in case["context"]["related"]
    assert case["content"][0]["attachment"]["url"].endswith(f"/dicomweb/studies/{new_uid}")
    rows = core.archive.instances(new_uid)
    assert len(rows) == 4  # 2 cines, the SR, the KOS
    files = {}
    for row in rows:
        with core.blobs.local_copy(row.blob_key) as path:
            target = tmp_path / f"{row.sop_uid}.dcm"
            target.write_bytes(Path(path).read_bytes())
            files[row.sop_uid] = dcmread(target)
            files[row.sop_uid].filename = str(target)
    kos = next(ds for ds in files.values() if ds.Modality == "KO")
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113004"
    referenced = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                  for item in kos.ContentSequence if item.ValueType == "IMAGE"}
    images = {uid for uid, ds in files.items() if "PixelData" in ds}
    assert referenced == images and len(images) == 2  # references resolve to the copies
    sr = next(ds for ds in files.values() if ds.Modality == "SR")
    assert sr.ContentSequence[1].ReferencedSOPSequence[0].ReferencedSOPInstanceUID in images
    # One pseudo patient, its own study; dates shifted alike
    assert len({str(ds.PatientID) for ds in files.values()}) == 1
    shift = None
    for ds in files.values():
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.StudyInstanceUID == new_uid
        if ds.Modality == "US":
            days = (dt.date.fromisoformat(ds.StudyDate) - dt.date.fromisoformat(DATE)).days
            assert shift in (None, days) and days < 0
            shift = days
    # Pixels: the band is blank on every frame of every cine
    for ds in files.values():
        if "PixelData" not in ds:
            continue
        for number, frame in enumerate(iter_pixels(ds.filename)):
            assert frame[:BAND - 8].max() <= 3, (ds.SOPInstanceUID, number)
    # Leak test: no name, ID, accession, date or original UID in any stored byte but pixels
    forbidden = ["Doe", "Jane", PID, ACC, BIRTH, DATE, "2023-04-15", study["uid"],
                 study["series"], *study["uids"]]
    for raw in stored_bytes(core, new_uid):
        header = raw[:raw.rfind(b"\xe0\x7f\x10\x00")] if b"\xe0\x7f\x10\x00" in raw else raw
        for text in forbidden:
            assert text.encode() not in header, text
    # The FHIR side: the copy's ImagingStudy, pseudo Patient, report and the case itself
    copy = json.loads(core.resources.read(core.server, "ImagingStudy", new_uid).content)
    assert copy["subject"]["reference"] != study["patient"]
    report_ref = next(r["reference"] for r in case["context"]["related"]
                      if r["reference"].startswith("DiagnosticReport/"))
    report = json.loads(core.resources.read(core.server, *report_ref.split("/")).content)
    assert report["subject"] == copy["subject"]
    assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{new_uid}"}]
    assert "simple hepatic cyst" in report["conclusion"]
    assert "Liver: 2 cm anechoic cyst." in report["text"]["div"]
    assert "identifier" not in report and "performer" not in report
    shifted = dt.date(2023, 4, 15) + dt.timedelta(days=shift)
    assert report["effectiveDateTime"] == f"{shifted.isoformat()}T10:15:00+08:00"
    patient = core.resources.read(core.server, *copy["subject"]["reference"].split("/"))
    # the copy's ImagingStudy and pseudo Patient are labelled pseudonymized, the original not
    for resource in (copy, json.loads(patient.content)):
        assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "PSEUDED", "display": "pseudonymized"} in resource["meta"]["security"]
    original = json.loads(core.resources.read(core.server, "ImagingStudy", study["uid"]).content)
    assert "security" not in original.get("meta", {})
    texts = [json.dumps(x) for x in (copy, report, case, json.loads(patient.content))]
    for text in texts:
        for word in ("Doe", "Jane", PID, ACC, "1980-01-01", "2023-04-15", "Li Wei",
                     "RPT-991", study["uid"], *study["uids"]):
            assert word not in text, word
    # Searchable by keyword and by code
    found = client.get("/fhir/DocumentReference",
                       params={"category": "urn:sonobridge:teaching-keyword|liver"}).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [case["id"]]
    found = client.get("/fhir/DocumentReference",
                       params={"category": "http://hl7.org/fhir/sid/icd-10|K76.8"}).json()
    assert len(found.get("entry", [])) == 1


def test_second_case_of_a_study_409_unless_forced(core, client, study):
    assert publish(client, study["uid"]).status_code == 201
    r = publish(client, study["uid"])
    assert r.status_code == 409 and "teaching case already" in r.text
    before = {row.sop_uid for row in core.archive.instances(
        hmac_uid(service(core).deidentifier.key, study["uid"]))}
    r = publish(client, study["uid"], force=True)
    assert r.status_code == 201
    after = {row.sop_uid for row in core.archive.instances(
        hmac_uid(service(core).deidentifier.key, study["uid"]))}
    assert before == after  # re-running gives the same UIDs


def test_case_of_a_deidentified_study_409(core, client, study):
    r = publish(client, study["uid"])
    new_uid = hmac_uid(service(core).deidentifier.key, study["uid"])
    r = publish(client, new_uid)
    assert r.status_code == 409 and "de-identified already" in r.text


def test_key_images_chosen(core, client, study):
    r = publish(client, study["uid"], keyImage=study["jpeg"])
    assert r.status_code == 201
    new_uid = hmac_uid(service(core).deidentifier.key, study["uid"])
    kos_row = next(row for row in core.archive.instances(new_uid)
                   if row.sop_class_uid.endswith(".88.59"))
    with core.blobs.local_copy(kos_row.blob_key) as path:
        kos = dcmread(path)
    images = [i for i in kos.ContentSequence if i.ValueType == "IMAGE"]
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images] == [
        hmac_uid(service(core).deidentifier.key, study["jpeg"])]
    r = publish(client, study["uid"], keyImage="1.2.3.999", force=True)
    assert r.status_code == 400 and "keyImage" in r.text


def test_unsafe_object_fails_the_whole_case(core, client, tmp_path: Path):
    service(core)
    study_uid = generate_uid()
    burned_cine(tmp_path / "ok.dcm", "native", frames=2, study_uid=study_uid, number=1)
    burned_cine(tmp_path / "bad.dcm", "native", frames=2, study_uid=study_uid, number=2,
                regions=False)
    store(core, tmp_path / "ok.dcm")
    store(core, tmp_path / "bad.dcm")
    r = publish(client, study_uid)
    assert r.status_code == 422
    outcome = r.json()
    assert "no ultrasound regions" in outcome["issue"][0]["diagnostics"]
    assert outcome["issue"][0]["expression"] == ["(0018,6011)"]
    new_uid = hmac_uid(service(core).deidentifier.key, study_uid)
    assert not core.archive.has(new_uid)
    assert client.get("/fhir/DocumentReference").json().get("total", 0) == 0


def test_bad_parameters(core, client, study):
    r = publish(client, study["uid"], difficulty="impossible")
    assert r.status_code in (400, 422)
    r = client.post("/fhir/ImagingStudy/nope/$teaching-case", headers=FHIR,
                    json={"resourceType": "Parameters"})
    assert r.status_code == 404
    assert client.get(f"/fhir/ImagingStudy/{study['uid']}/$teaching-case").status_code == 405


def test_withdraw_deletes_the_copy(core, client, study):
    case = publish(client, study["uid"]).json()
    new_uid = hmac_uid(service(core).deidentifier.key, study["uid"])
    assert core.archive.has(new_uid)
    r = client.post(f"/fhir/DocumentReference/{case['id']}/$teaching-case-withdraw",
                    headers=FHIR, json={"resourceType": "Parameters"})
    assert r.status_code == 200, r.text
    assert not core.archive.has(new_uid)
    assert client.get(f"/fhir/DocumentReference/{case['id']}").status_code == 410
    report = next(x["reference"] for x in case["context"]["related"]
                  if x["reference"].startswith("DiagnosticReport/"))
    assert client.get(f"/fhir/{report}").status_code == 410
    assert core.archive.has(study["uid"])  # the original is untouched
    # a DocumentReference that is not a case cannot be withdrawn this way
    other = client.post("/fhir/DocumentReference", headers=FHIR, json={
        "resourceType": "DocumentReference", "status": "current",
        "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}]}).json()
    r = client.post(f"/fhir/DocumentReference/{other['id']}/$teaching-case-withdraw",
                    headers=FHIR, json={"resourceType": "Parameters"})
    assert r.status_code == 400


def test_original_pixels_unchanged(core, client, study):
    """Publishing never touches the original (byte-exact as received)."""
    before = stored_bytes(core, study["uid"])
    assert publish(client, study["uid"]).status_code == 201
    assert stored_bytes(core, study["uid"]) == before
    assert np.asarray(study["frames"][study["jpeg"]])[0, 10:30, 6:200].max() > 200
    assert NAME  # the corpus names the patient; the copies do not (above)


def test_publication_is_audited(settings, study, tmp_path: Path):
    """An Export AuditEvent names the original study and its instances; the case does not."""
    import dataclasses

    import orjson
    from sqlalchemy import select

    from sonobridge.core.policy import Policy
    from sonobridge.core.services import open_core
    from sonobridge.core.teaching import CaseRequest
    from sonobridge.store.tables import resource_versions as V

    audited = open_core(dataclasses.replace(settings, audit=True), run_migrations=False)
    try:
        caller = audited.caller(Policy.system("teacher-1", "test"), "10.0.0.9")
        case = teaching_of(audited).add(caller, study["uid"], CaseRequest())
        audited.audit.flush()
        with audited.store.reader.connect() as conn:
            events = [orjson.loads(r.content) for r in conn.execute(
                select(V.c.content).where(V.c.res_type == "AuditEvent")).all()]
    finally:
        audited.close()
    [event] = [e for e in events if e["subtype"][0]["code"] == "teaching-case"
               and e["outcome"] == "0"]
    assert event["type"]["code"] == "110106" and event["action"] == "E"
    whats = [x.get("what", {}) for x in event["entity"]]
    assert {"reference": f"DocumentReference/{case.document_reference['id']}"} in whats
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{study['uid']}"} in \
        [w.get("identifier") for w in whats]
    assert event["agent"][0]["who"]["identifier"]["value"] == "teacher-1"
    assert "frame(s)" in event["outcomeDesc"]


def test_trainer_publishes_trainee_may_not(core, study):
    """The trainer role publishes (and is the case's author); a trainee's token is refused."""
    from sonobridge.core.errors import CoreError
    from sonobridge.core.policy import Caller, Policy
    from sonobridge.core.scopes import resource_scopes
    from sonobridge.core.teaching import CaseRequest

    def as_role(role: str) -> Caller:
        return Caller(Policy(subject=f"user-{role}", client_id="app",
                             scopes=tuple(resource_scopes("user/*.cruds")), role=role,
                             fhir_user="Practitioner/t1"), "http://sono.test/fhir")

    with pytest.raises(CoreError) as info:
        teaching_of(core).add(as_role("trainee"), study["uid"], CaseRequest())
    assert info.value.status == 403
    case = teaching_of(core).add(as_role("trainer"), study["uid"], CaseRequest())
    assert case.document_reference["author"] == [{"reference": "Practitioner/t1"}]
    with pytest.raises(CoreError) as info:
        teaching_of(core).withdraw(as_role("trainee"), case.document_reference["id"])
    assert info.value.status == 403
    assert teaching_of(core).withdraw(as_role("trainer"), case.document_reference["id"]) == 4


def test_a_failed_fhir_write_leaves_no_copy(core, study, monkeypatch):
    """If the case cannot be written, the copy just stored goes too (else a retry is 409)."""
    from sonobridge.core.errors import CoreError
    from sonobridge.core.teaching import CaseRequest

    service_ = teaching_of(core)
    new_uid = hmac_uid(service_.deidentifier.key, study["uid"])

    def broken(*args, **kwargs):
        raise CoreError(422, "processing", "simulated")

    monkeypatch.setattr(service_, "_document", broken)
    with pytest.raises(CoreError, match="simulated"):
        service_.add(core.server, study["uid"], CaseRequest())
    assert not core.archive.has(new_uid)
    monkeypatch.undo()
    assert service_.add(core.server, study["uid"], CaseRequest()).study_uid == new_uid


def test_operations_listed_in_the_capability_statement(core, client):
    service(core)
    rest = client.get("/fhir/metadata").json()["rest"][0]
    by_type = {r["type"]: {op["name"] for op in r.get("operation", [])}
               for r in rest["resource"]}
    assert "teaching-case" in by_type["ImagingStudy"]
    assert "teaching-case-withdraw" in by_type["DocumentReference"]


def test_refused_deidentification_is_audited(settings, tmp_path: Path):
    import dataclasses

    import orjson
    from sqlalchemy import select

    from sonobridge.core.errors import CoreError
    from sonobridge.core.policy import Policy
    from sonobridge.core.services import open_core
    from sonobridge.core.teaching import CaseRequest
    from sonobridge.store.tables import resource_versions as V

    audited = open_core(dataclasses.replace(settings, audit=True), run_migrations=False)
    try:
        study_uid = generate_uid()
        burned_cine(tmp_path / "bad.dcm", "native", frames=1, study_uid=study_uid,
                    regions=False)
        store(audited, tmp_path / "bad.dcm")
        with pytest.raises(CoreError):
            teaching_of(audited).add(audited.caller(Policy.system("t", "t")), study_uid,
                                     CaseRequest())
        audited.audit.flush()
        with audited.store.reader.connect() as conn:
            events = [orjson.loads(r.content) for r in conn.execute(
                select(V.c.content).where(V.c.res_type == "AuditEvent")).all()]
    finally:
        audited.close()
    [event] = [e for e in events if e["subtype"][0]["code"] == "teaching-case"]
    assert event["outcome"] == "4" and "no ultrasound regions" in event["outcomeDesc"]
