"""An SR stored for the first time has its Observations created in one batch
(core/reports.py ``_create_all`` over ``Writer.create_many`` with ids): the same events per
Observation as one update each (the profile check, audit and subscriptions listen to them),
the same index, and the slow path when ids are taken (stored again, stored after a
delete). Not checked one by one (the mapping builds them valid and conformant): one of each
shape is, the first time this core sees it; the stored ones pass ``$validate`` against the
profile; what a client writes claiming the profile is still checked. SQLite and PostgreSQL
(the ``client`` fixture)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import sonobridge.core.reports as reports
from sonobridge.core.events import ResourceChanged, ResourceWriting
from sonobridge.mappings.sr import OBSERVATION_PROFILE, SR_INSTANCE_SYSTEM, map_sr
from sonobridge.store.resources import Writer
from tests.dicomweb.helpers import stow
from tests.mappings.test_sr_builders import image, tid1500


def observations(client, sr) -> list[dict]:
    r = client.get("/fhir/Observation", params={
        "identifier": f"{SR_INSTANCE_SYSTEM}|urn:oid:{sr.SOPInstanceUID}", "_count": "200"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def test_first_store_tells_each_observation_and_indexes_it(client, core, monkeypatch):
    batches: list[int] = []
    create_many = Writer.create_many

    def spy(self, res_type, resources, ids=None):
        if res_type == "Observation":
            batches.append(len(resources))
        return create_many(self, res_type, resources, ids)

    monkeypatch.setattr(Writer, "create_many", spy)
    seen: list[tuple[str, str, str | None]] = []
    core.events.listen(ResourceWriting, lambda e: seen.append(
        ("writing", e.res_type, e.res_id)) if e.res_type == "Observation" else None)
    core.events.listen(ResourceChanged, lambda e: seen.append(
        ("changed:" + e.action + e.interaction, e.stored.type, e.stored.id))
        if e.stored.type == "Observation" else None)
    ev = image()
    sr = tid1500(ev, measurements=3, groups=2)
    assert stow(client, [ev, sr]).status_code == 200
    found = observations(client, sr)
    assert len(found) == 8
    assert batches == [8]  # one batch
    ids = sorted(o["id"] for o in found)
    assert sorted(i for kind, _, i in seen if kind == "writing") == ids
    assert sorted(i for kind, _, i in seen if kind == "changed:Cupdate") == ids
    for obs in found:
        assert obs["meta"]["versionId"] == "1"
    # indexed like any other write: by code and value
    r = client.get("/fhir/Observation", params={
        "code": "http://snomed.info/sct|81827009", "value-quantity": "gt0",
        "derived-from": f"ImagingStudy/{ev.StudyInstanceUID}"})
    assert r.status_code == 200 and r.json().get("total", len(r.json().get("entry", []))) >= 6


def test_stored_again_and_after_delete_take_the_update_path(client):
    ev = image()
    sr = tid1500(ev, measurements=2, groups=1)
    assert stow(client, [ev, sr]).status_code == 200
    first = {o["id"]: o["meta"]["versionId"] for o in observations(client, sr)}
    assert first
    assert stow(client, [sr]).status_code == 200  # same content: no new version
    assert {o["id"]: o["meta"]["versionId"] for o in observations(client, sr)} == first
    r = client.delete(f"/dicomweb/studies/{ev.StudyInstanceUID}/series/"
                      f"{sr.SeriesInstanceUID}")
    assert r.status_code in (200, 202, 204), r.text
    assert observations(client, sr) == []
    assert stow(client, [sr]).status_code == 200  # ids taken by the deleted rows
    again = {o["id"]: o["meta"]["versionId"] for o in observations(client, sr)}
    assert set(again) == set(first)
    assert all(int(v) > int(first[k]) for k, v in again.items())


def test_create_many_with_ids(core):
    bodies = [{"resourceType": "Basic", "code": {"text": str(n)}} for n in range(3)]
    with core.store.write() as writer:
        assert isinstance(writer, Writer)
        with pytest.raises(ValueError):
            writer.create_many("Basic", bodies, ["only-one"])
        made = writer.create_many("Basic", bodies, ["b-0", "b-1", "b-2"])
    assert [m.id for m in made] == ["b-0", "b-1", "b-2"]
    for n in range(3):
        stored = core.store.read("Basic", f"b-{n}")
        assert stored is not None and stored.version_id == 1


def test_conformant_by_construction_yet_checked_where_it_counts(client, core, monkeypatch):
    seen: list[tuple[str | None, bool]] = []
    core.events.listen(ResourceWriting, lambda e: seen.append((e.res_id, e.conformant))
                       if e.res_type == "Observation" else None)
    ev = image()
    sr = tid1500(ev, measurements=3, groups=2)
    assert stow(client, [ev, sr]).status_code == 200
    found = observations(client, sr)
    assert len(found) == 8
    # one of each shape (a group, a measurement with method and one without) checked in full
    checked = [i for i, conformant in seen if not conformant]
    assert 2 <= len(checked) <= 4 and len(seen) == 8
    # the next SR of the same shapes: none again
    seen.clear()
    assert stow(client, [tid1500(ev, measurements=2, groups=3)]).status_code == 200
    assert len(seen) == 9 and all(conformant for _, conformant in seen)
    for obs in found:  # what was stored conforms (R4 and the profile it claims)
        assert obs["meta"]["profile"] == [OBSERVATION_PROFILE]
        r = client.post(f"/fhir/Observation/{obs['id']}/$validate")
        assert r.status_code == 200, r.text
        errors = [i for i in r.json()["issue"] if i["severity"] in ("error", "fatal")]
        assert errors == [], errors
    # a client's Observation claiming the profile is checked as ever (no derivedFrom)
    mine = {k: v for k, v in found[-1].items() if k not in ("id", "derivedFrom")}
    r = client.post("/fhir/Observation", json=mine)
    assert r.status_code == 422, r.text
    assert "derivedFrom" in r.text

    # a mapping that broke its promise is caught by the sampled checks (the profile's
    # derivedFrom; R4's code): the SR is refused, nothing half-written
    for element in ("derivedFrom", "code"):
        def broken(*args, element=element, **kwargs):
            result = map_sr(*args, **kwargs)
            for obs in result.observations:
                del obs[element]
            return result

        monkeypatch.setattr(reports, "map_sr", broken)
        other = tid1500(ev, measurements=1, groups=1)
        r = stow(client, [other])
        assert r.status_code == 409 and "00081198" in r.json(), r.text
        assert observations(client, other) == []


def test_the_ingests_dicom_json_is_mapped_and_a_rebuild_reads_the_row(client, core,
                                                                      monkeypatch):
    read_back: list[str] = []
    instance = reports.index.instance

    def spy(conn, sop_uid):
        read_back.append(sop_uid)
        return instance(conn, sop_uid)

    monkeypatch.setattr(reports, "index", SimpleNamespace(instance=spy))  # the listener's
    ev = image()
    sr = tid1500(ev, measurements=2, groups=1)
    assert stow(client, [ev, sr]).status_code == 200
    first = sorted((o["id"], o["meta"]["versionId"]) for o in observations(client, sr))
    assert len(first) == 3 and read_back == []  # handed over with InstanceStored
    r = client.post("/fhir/$sr-observations")
    assert r.status_code == 200, r.text
    assert sr.SOPInstanceUID in read_back  # the rebuild reads the index row
    # the same DICOM JSON either way: nothing changed, no new versions
    assert sorted((o["id"], o["meta"]["versionId"]) for o in observations(client, sr)) == first
