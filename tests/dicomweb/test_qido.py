"""QIDO-RS at every level and path, with the PS3.4 matching rules."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from tests.dicom_data import cine
from tests.dicomweb.helpers import parts, stow, uids


def load(client):
    s1, s2, s3 = generate_uid(), generate_uid(), generate_uid()
    a = cine("jpeg", study=s1, patient_name="Wáng^Wěi=王^伟=wang^wei", patient_id="P-1",
             accession="ACC-1")
    a.StudyDate, a.StudyTime, a.Modality = "20261101", "093000", "US"
    a.StudyDescription = "US ABDOMEN"
    a.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, for the ideographic name
    b = cine("native", study=s1, series=None, patient_name="Wáng^Wěi=王^伟=wang^wei",
             patient_id="P-1", accession="ACC-1")
    b.StudyDate, b.Modality, b.SeriesNumber = "20261101", "SR", 2
    b.SpecificCharacterSet = "ISO_IR 192"
    b.StudyDescription = "US ABDOMEN"
    c = cine("jpeg", study=s2, patient_name="Smith^Anna", patient_id="P-2", accession="ACC-2")
    c.StudyDate, c.Modality, c.StudyDescription = "20261115", "US", "FOLLOW-UP"
    d = cine("jpeg", study=s3, patient_name="Müller^Hans", patient_id="P-3", accession="ACC-3")
    d.StudyDate, d.Modality, d.StudyDescription = "20251231", "CT", "CT HEAD"
    assert stow(client, [a, b, c, d]).status_code == 200
    return s1, s2, s3, a, b, c, d


def studies(client, query: str = "", **headers) -> list[dict]:
    r = client.get(f"/dicomweb/studies{query}", headers=headers)
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else []


def study_uids(client, query: str) -> set[str]:
    return {s["0020000D"]["Value"][0] for s in studies(client, query)}


def test_study_level_matching(client):
    s1, s2, s3, *_ = load(client)
    assert study_uids(client, "") == {s1, s2, s3}
    assert study_uids(client, "?PatientID=P-2") == {s2}
    assert study_uids(client, "?00100020=P-2") == {s2}
    assert study_uids(client, "?PatientID=P-*") == {s1, s2, s3}
    assert study_uids(client, "?PatientID=P-?") == {s1, s2, s3}
    assert study_uids(client, f"?StudyInstanceUID={s1},{s3}") == {s1, s3}
    assert study_uids(client, f"?StudyInstanceUID={s1}\\{s2}") == {s1, s2}
    assert study_uids(client, "?StudyDate=20261101-20261130") == {s1, s2}
    assert study_uids(client, "?StudyDate=-20251231") == {s3}
    assert study_uids(client, "?StudyDate=20261115-") == {s2}
    assert study_uids(client, "?StudyDate=20261101") == {s1}
    assert study_uids(client, "?ModalitiesInStudy=US") == {s1, s2}
    assert study_uids(client, "?ModalitiesInStudy=SR") == {s1}
    assert study_uids(client, "?AccessionNumber=ACC-3") == {s3}
    assert study_uids(client, "?PatientName=*smith*") == {s2}
    assert study_uids(client, "?StudyDescription=US*") == {s1}


def test_fuzzy_names(client):
    s1, _s2, s3, *_ = load(client)
    assert study_uids(client, "?PatientName=wang&fuzzymatching=true") == {s1}
    assert study_uids(client, "?PatientName=WEI&fuzzymatching=true") == {s1}
    assert study_uids(client, "?PatientName=王&fuzzymatching=true") == {s1}
    assert study_uids(client, "?PatientName=muller&fuzzymatching=true") == {s3}
    assert study_uids(client, "?PatientName=mu&fuzzymatching=true") == {s3}
    assert study_uids(client, "?PatientName=ller&fuzzymatching=true") == set()


def test_computed_attributes_and_includefield(client):
    s1, *_ = load(client)
    [study] = [s for s in studies(client) if s["0020000D"]["Value"][0] == s1]
    assert study["00201206"]["Value"] == [2]
    assert study["00201208"]["Value"] == [2]
    assert sorted(study["00080061"]["Value"]) == ["SR", "US"]
    assert study["00081190"]["Value"][0] == f"http://sono.test/dicomweb/studies/{s1}"
    assert study["00100030"]["Value"] == ["19800101"]  # default attributes
    assert "00081030" in study
    assert "00200010" in study and "00080090" in study
    assert "00100021" not in study  # IssuerOfPatientID: not by default
    [study] = studies(client, f"?StudyInstanceUID={s1}&includefield=all")
    assert study["00100040"]["Value"] == ["F"]
    [study] = studies(client, f"?StudyInstanceUID={s1}&includefield=IssuerOfPatientID")
    assert study["00100021"] == {"vr": "LO"}  # asked for, not present: empty


def test_series_and_instance_levels(client):
    s1, _s2, s3, a, b, _c, d = load(client)
    series = client.get(f"/dicomweb/studies/{s1}/series").json()
    assert len(series) == 2
    counts = {s["0020000E"]["Value"][0]: s["00201209"]["Value"][0] for s in series}
    assert counts == {uids(a)[1]: 1, uids(b)[1]: 1}
    assert len(client.get(f"/dicomweb/studies/{s1}/series?Modality=SR").json()) == 1
    assert len(client.get("/dicomweb/series?Modality=US").json()) == 2
    assert len(client.get("/dicomweb/series?PatientID=P-1").json()) == 2
    instances = client.get(f"/dicomweb/studies/{s1}/instances").json()
    assert {i["00080018"]["Value"][0] for i in instances} == {uids(a)[2], uids(b)[2]}
    assert instances[0]["00280008"]["Value"] == [6]
    one = client.get(f"/dicomweb/studies/{s1}/series/{uids(a)[1]}/instances").json()
    assert [i["00080018"]["Value"][0] for i in one] == [uids(a)[2]]
    assert client.get(f"/dicomweb/instances?SOPInstanceUID={uids(d)[2]}").json()[0][
        "0020000D"]["Value"] == [s3]
    assert client.get("/dicomweb/instances?InstanceNumber=1&limit=2").status_code == 200


def test_limit_offset_stable_order(client):
    load(client)
    everything = [s["0020000D"]["Value"][0] for s in studies(client)]
    paged = [s["0020000D"]["Value"][0] for s in studies(client, "?limit=2")] + \
        [s["0020000D"]["Value"][0] for s in studies(client, "?limit=2&offset=2")]
    assert paged == everything


def test_xml_and_no_results(client):
    s1, *_ = load(client)
    r = client.get(f"/dicomweb/studies?StudyInstanceUID={s1}",
                   headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert r.status_code == 200
    [(headers, body)] = parts(r)
    assert headers["content-type"] == "application/dicom+xml"
    assert b"NativeDicomModel" in body and s1.encode() in body
    assert b"<Alphabetic><FamilyName>W\xc3\xa1ng</FamilyName>" in body
    assert client.get("/dicomweb/studies?PatientID=nobody").status_code == 204


def test_unsupported_keys_warn(client):
    load(client)
    r = client.get("/dicomweb/studies?InstitutionAddress=x&PatientID=P-1")
    assert r.status_code == 200 and len(r.json()) == 1
    assert r.headers["warning"].startswith("299 ")
    assert "InstitutionAddress" in r.headers["warning"]


@pytest.mark.parametrize("query", ["?StudyDate=2026-11-01", "?StudyDate=20261301x",
                                   "?NoSuchAttribute=1", "?limit=100000", "?limit=-1",
                                   "?fuzzymatching=maybe", "?includefield=Nonsense"])
def test_bad_queries(client, query):
    r = client.get(f"/dicomweb/studies{query}")
    assert r.status_code == 400, r.text
    assert r.json()["status"] == 400


def test_not_acceptable(client):
    r = client.get("/dicomweb/studies", headers={"Accept": "image/png"})
    assert r.status_code == 406
