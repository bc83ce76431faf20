"""Stored SRs become Observations (core/reports.py): over STOW-RS, searchable by code, subject,
derived-from, date and value-quantity; re-storing replaces; deleting removes; templates not
mapped and ill-formed items. SQLite and PostgreSQL (the ``client`` fixture)."""

from __future__ import annotations

import logging

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from sonobridge.mappings.sr import SR_INSTANCE_SYSTEM
from tests.dicomweb.helpers import stow
from tests.mappings.test_sr_builders import (
    image,
    other_template,
    tid1500,
    tid5000,
    tid5100,
    tid5200,
)


def search(client, **params) -> list[dict]:
    r = client.get("/fhir/Observation", params={"_count": "200", **params})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])
            if e.get("search", {}).get("mode", "match") == "match"]


def of_sr(client, sr) -> list[dict]:
    return search(client, identifier=f"{SR_INSTANCE_SYSTEM}|urn:oid:{sr.SOPInstanceUID}")


def stored(client, *datasets) -> None:
    r = stow(client, list(datasets))
    assert r.status_code == 200, r.text
    assert "00081198" not in r.json()  # no failed SOP


def test_tid1500_over_stow_becomes_searchable_observations(client):
    ev = image(patient_id="SR-P1", patient_name="Zhang^San")
    sr = tid1500(ev, measurements=3, groups=2)
    stored(client, ev, sr)
    observations = of_sr(client, sr)
    assert len(observations) == 8
    study = client.get(f"/fhir/ImagingStudy/{ev.StudyInstanceUID}").json()
    subject = study["subject"]["reference"]
    assert subject.startswith("Patient/")
    for obs in observations:
        assert obs["subject"]["reference"] == subject
        assert obs["derivedFrom"][0]["reference"] == f"ImagingStudy/{ev.StudyInstanceUID}"
        assert obs["meta"]["profile"] == [
            "http://sonobridge.org/fhir/StructureDefinition/sono-ultrasound-observation"]
    groups = [o for o in observations if "hasMember" in o]
    assert len(groups) == 2
    # the searches the issue names
    diam = "http://snomed.info/sct|81827009"
    assert len(search(client, code=diam)) == 6
    assert len(search(client, code=diam, subject=subject)) == 6
    assert len(search(client, code=diam, subject="Patient/nobody")) == 0
    assert len(search(client, **{"derived-from": f"ImagingStudy/{ev.StudyInstanceUID}"})) == 8
    assert len(search(client, code=diam, **{"value-quantity": "gt20.5|http://unitsofmeasure.org|mm"
                                            })) == 3  # group 2: 21.0, 21.1, 21.2 mm
    day = observations[0]["effectiveDateTime"][:10]
    assert len(search(client, code=diam, date=day)) == 6
    assert len(search(client, code=diam, date="lt2000-01-01")) == 0
    # the ImagingStudy lists the SR among its instances
    uids = [i["uid"] for s in study["series"] for i in s["instance"]]
    assert sr.SOPInstanceUID in uids


def test_restoring_replaces_and_deleting_removes(client, core):
    ev = image()
    sop, series = generate_uid(), generate_uid()
    stored(client, ev, tid1500(ev, measurements=4, sop_uid=sop, series_uid=series))
    first = of_sr(client, tid1500(ev, sop_uid=sop))
    assert len(first) == 5
    # the same SR again (new content: 2 measurements): replaced, never duplicated
    sr = tid1500(ev, measurements=2, sop_uid=sop, series_uid=series)
    stored(client, sr)
    second = of_sr(client, sr)
    assert len(second) == 3
    assert {o["id"] for o in second} < {o["id"] for o in first}
    gone = ({o["id"] for o in first} - {o["id"] for o in second}).pop()
    assert client.get(f"/fhir/Observation/{gone}").status_code == 410
    # the identical file a third time: nothing changes
    stored(client, sr)
    assert {o["id"]: o["meta"]["versionId"] for o in of_sr(client, sr)} == {
        o["id"]: o["meta"]["versionId"] for o in second}
    # deleting the SR deletes its Observations; the image stays
    core.archive.delete(core.server, ev.StudyInstanceUID, sr.SeriesInstanceUID,
                        sr.SOPInstanceUID)
    assert of_sr(client, sr) == []
    assert client.get(f"/fhir/ImagingStudy/{ev.StudyInstanceUID}").status_code == 200
    # stored again after the delete (a new instance to the archive, its Observations' ids
    # taken by the deleted ones): they come back, once each
    stored(client, sr)
    again = of_sr(client, sr)
    assert sorted(o["id"] for o in again) == sorted(o["id"] for o in second)
    assert all(o["meta"]["versionId"] != "1" for o in again)


def test_deleting_the_study_removes_every_srs_observations(client):
    ev = image()
    a, b = tid5100(ev), tid5200(ev)
    stored(client, ev, a, b)
    assert len(of_sr(client, a)) == 3 and len(of_sr(client, b)) == 4
    other_ev = image()
    other = tid5000(other_ev)
    stored(client, other_ev, other)
    assert client.delete(f"/dicomweb/studies/{ev.StudyInstanceUID}").status_code == 200
    assert of_sr(client, a) == [] and of_sr(client, b) == []
    assert len(of_sr(client, other)) == 7  # another study's: untouched


def test_ultrasound_templates(client):
    ev = image()
    ob, vasc, echo = tid5000(ev, fetus="A"), tid5100(ev, psv=120.0), tid5200(ev, lvef=30.0)
    stored(client, ev, ob, vasc, echo)
    bpd = search(client, code="http://loinc.org|11820-8")
    assert len(bpd) == 1 and bpd[0]["valueQuantity"]["value"] == 88
    assert {c["code"]["coding"][0]["code"] for c in bpd[0]["component"]} == {
        "11951-1", "121401", "125012", "125013"}
    psv = search(client, code="http://loinc.org|11726-7")
    assert psv[0]["valueQuantity"] == {"value": 120, "unit": "cm/s",
                                       "system": "http://unitsofmeasure.org", "code": "cm/s"}
    assert psv[0]["bodySite"]["coding"][0]["code"] == "32062004"
    lvef = search(client, code="http://loinc.org|18043-0",
                  **{"value-quantity": "lt35"})
    assert len(lvef) == 1 and lvef[0]["method"]["coding"][0]["code"] == "125209"


def test_other_templates_keep_the_sr_without_observations(client, caplog):
    ev = image()
    sr = other_template(ev)
    with caplog.at_level(logging.DEBUG, logger="sonobridge.reports"):
        stored(client, ev, sr)
    assert of_sr(client, sr) == []
    assert any("not TID 1500/5000/5100/5200" in r.getMessage() for r in caplog.records)
    r = client.get(f"/dicomweb/studies/{ev.StudyInstanceUID}/series/{sr.SeriesInstanceUID}"
                   f"/instances/{sr.SOPInstanceUID}/metadata")
    assert r.status_code == 200


def test_ill_formed_items_store_the_sr_and_map_the_rest(client, caplog):
    ev = image()
    sr = tid5200(ev)
    for item in sr.ContentSequence[0].ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == "29436-3":  # LVIDd: no units
            del item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "18154-5":  # IVSd: no value at all
            item.MeasuredValueSequence = []
    with caplog.at_level(logging.WARNING, logger="sonobridge.reports"):
        r = stow(client, [ev, sr])
    # stored, with warnings the sender hears (PS3.18 10.5.3): 202, Warning Reason 0xB006 on
    # the SR's item, a Warning header per unmapped item
    assert r.status_code == 202, r.text
    assert "00081198" not in r.json()
    items = {i["00081155"]["Value"][0]: i for i in r.json()["00081199"]["Value"]}
    assert items[sr.SOPInstanceUID]["00081196"]["Value"] == [0xB006]
    assert "00081196" not in items[ev.SOPInstanceUID]
    headers = r.headers.get_list("warning")
    assert len(headers) == 2 and all(sr.SOPInstanceUID in h for h in headers)
    assert "no measurement units" in " ".join(headers)
    codes = sorted(o["code"]["coding"][0]["code"] for o in of_sr(client, sr))
    assert codes == ["18043-0", "87878005"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "no measurement units" in messages and "no measured value" in messages


def test_a_value_that_is_not_a_number_still_stores_the_sr(client):
    """Issue 14, bad input: the SR is stored whole, the other measurements become
    Observations, and the client hears of what was left out (PS3.18 10.5.3: 202, Warning
    Reason 0xB006 Elements Discarded, a Warning header naming the attribute)."""
    ev = image()
    sr = tid5200(ev)
    for item in sr.ContentSequence[0].ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == "18154-5":
            value = item.MeasuredValueSequence[0]
            if "FloatingPointValue" in value:
                del value.FloatingPointValue
            value[0x0040A30A] = RawDataElement(Tag(0x0040A30A), "DS", 3, b"abc", 0, True, True)
    r = stow(client, [ev, sr])
    assert r.status_code == 202, r.text
    body = r.json()
    assert "00081198" not in body  # nothing failed
    items = {i["00081155"]["Value"][0]: i for i in body["00081199"]["Value"]}
    assert items[sr.SOPInstanceUID]["00081196"] == {"vr": "US", "Value": [0xB006]}
    assert "00081196" not in items[ev.SOPInstanceUID]
    warning = r.headers["warning"]
    assert warning.startswith('299 SonoBridge "' + sr.SOPInstanceUID)
    assert ".0040A30A" in warning
    assert len(of_sr(client, sr)) == 3
    # the object itself is kept byte for byte, the bad value in it
    whole = client.get(f"/dicomweb/studies/{ev.StudyInstanceUID}/series/{sr.SeriesInstanceUID}"
                       f"/instances/{sr.SOPInstanceUID}", headers={
                           "Accept": 'multipart/related; type="application/dicom"'})
    assert whole.status_code == 200 and b"abc" in whole.content


@pytest.mark.parametrize("final", [True, False])
def test_status_follows_the_sr_flags(client, final):
    ev = image()
    sr = tid1500(ev, final=final)
    stored(client, ev, sr)
    assert {o["status"] for o in of_sr(client, sr)} == {"final" if final else "preliminary"}


def test_rebuild_maps_every_stored_sr_again(client, core):
    ev = image()
    a, b = tid5100(ev), tid5200(ev)
    stored(client, ev, a, b)
    gone = of_sr(client, a)[0]["id"]
    assert client.delete(f"/fhir/Observation/{gone}").status_code == 200
    assert client.get("/fhir/$sr-observations").status_code == 405
    r = client.post("/fhir/$sr-observations")
    assert r.status_code == 200, r.text
    assert r.json()["parameter"] == [{"name": "srs", "valueInteger": 2}]
    assert len(of_sr(client, a)) == 3 and len(of_sr(client, b)) == 4
    assert client.get(f"/fhir/Observation/{gone}").status_code == 200


def test_one_audit_event_names_every_observation_of_an_sr(db_url, tmp_path):
    """With the audit trail on (the default), an SR's Observations are audited as one
    AuditEvent naming each of them, not one event per Observation."""
    from starlette.testclient import TestClient

    from sonobridge.app.server import create_app
    from sonobridge.config import Settings
    from sonobridge.core.services import open_core

    settings = Settings(data_dir=tmp_path, database_url=db_url, auth="disabled", audit=True)
    core = open_core(settings, run_migrations=False)
    try:
        with TestClient(create_app(settings, core), base_url="http://sono.test",
                        client=("127.0.0.1", 50000)) as client:
            ev = image()
            sr = tid1500(ev, measurements=3, groups=2)
            stored(client, ev, sr)
            observations = {f"Observation/{o['id']}" for o in of_sr(client, sr)}
            assert len(observations) == 8
            core.audit.flush()
            found = client.get("/fhir/AuditEvent", params={
                "entity": sorted(observations)[0], "_count": "50"}).json()
            events = [e["resource"] for e in found.get("entry", [])]
            assert len(events) == 1
            named = {e["what"]["reference"] for e in events[0]["entity"] if "what" in e
                     and "reference" in e["what"]}
            assert observations <= named
            assert events[0]["action"] == "C"
            assert "8 Observations made from SR " + sr.SOPInstanceUID in events[0]["outcomeDesc"]
            for one in sorted(observations)[1:]:
                again = client.get("/fhir/AuditEvent", params={"entity": one}).json()
                assert [e["resource"]["id"] for e in again["entry"]] == [events[0]["id"]]
    finally:
        core.close()
