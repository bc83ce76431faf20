"""STOW-RS: multipart uploads, responses per PS3.18, and bad input that stores nothing."""

from __future__ import annotations

import io

import orjson
import pytest
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import generate_uid

from tests.dicom_data import cine, to_bytes
from tests.dicomweb.helpers import BOUNDARY, instance_url, multipart, stow, uids


def stored_count(client) -> int:
    r = client.get("/dicomweb/instances")
    return 0 if r.status_code == 204 else len(r.json())


@pytest.mark.parametrize("quoted", [True, False])
def test_store_many_parts(client, quoted):
    study = generate_uid()
    datasets = [cine("jpeg", study=study), cine("native", study=study), cine("jpeg-nobot")]
    r = stow(client, datasets, quoted=quoted)
    assert r.status_code == 200, r.text
    body = r.json()
    refs = body["00081199"]["Value"]
    assert len(refs) == 3 and "00081198" not in body
    assert {ref["00081155"]["Value"][0] for ref in refs} == {uids(d)[2] for d in datasets}
    assert refs[0]["00081190"]["Value"][0].startswith("http://sono.test/dicomweb/studies/")
    assert stored_count(client) == 3


def test_partial_failure_and_total_failure(client):
    good = cine("jpeg")
    not_dicom = b"this is not a DICOM file" * 10
    r = stow(client, [], raw=[to_bytes(good), not_dicom])
    assert r.status_code == 202
    body = r.json()
    assert len(body["00081199"]["Value"]) == 1
    assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    r = stow(client, [], raw=[not_dicom])
    assert r.status_code == 409
    assert stored_count(client) == 1


def test_study_in_url_must_match(client):
    ds = cine("jpeg")
    r = stow(client, [ds], study=generate_uid())
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC409]
    assert stored_count(client) == 0
    assert stow(client, [ds], study=uids(ds)[0]).status_code == 200


def test_missing_uids_and_unsupported_sop_class(client):
    no_sop = cine("jpeg")
    del no_sop.SOPInstanceUID
    no_study = cine("jpeg")
    del no_study.StudyInstanceUID
    odd_class = cine("jpeg")
    odd_class.SOPClassUID = "1.2.840.10008.3.1.2.3.3"  # MPPS: not a storage SOP class
    odd_class.file_meta.MediaStorageSOPClassUID = odd_class.SOPClassUID
    r = stow(client, [], raw=[to_bytes(no_sop), to_bytes(no_study), to_bytes(odd_class)])
    assert r.status_code == 409
    reasons = [f["00081197"]["Value"][0] for f in r.json()["00081198"]["Value"]]
    assert reasons == [0xC000, 0xC000, 0x0122]
    assert stored_count(client) == 0


def test_truncated_file_is_refused(client):
    data = to_bytes(cine("jpeg"))
    r = stow(client, [], raw=[data[: len(data) - 300]])
    assert r.status_code == 409
    assert stored_count(client) == 0


def test_dataset_without_preamble_is_stored_as_part10(client):
    ds = cine("native")
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    raw = buffer.getvalue()
    without = raw[132:] if raw[128:132] == b"DICM" else raw
    r = stow(client, [], raw=[without])
    assert r.status_code == 200, r.text
    got = client.get(instance_url(ds), headers={"Accept": 'multipart/related; '
                                                          'type="application/dicom"'})
    from tests.dicomweb.helpers import parts

    body = parts(got)[0][1]
    assert body[128:132] == b"DICM"
    assert dcmread(io.BytesIO(body)).SOPInstanceUID == ds.SOPInstanceUID


def test_resend_same_bytes_is_a_noop_and_new_bytes_replace(client):
    ds = cine("jpeg")
    assert stow(client, [ds]).status_code == 200
    assert stow(client, [ds]).status_code == 200
    assert stored_count(client) == 1
    ds.SeriesDescription = "changed"
    assert stow(client, [ds]).status_code == 200
    metadata = client.get(instance_url(ds) + "/metadata").json()[0]
    assert metadata["0008103E"]["Value"] == ["changed"]
    assert stored_count(client) == 1


@pytest.mark.parametrize(("content_type", "body", "status"), [
    ("application/dicom", b"x", 415),
    ("multipart/related; type=\"application/dicom\"", b"--x\r\n", 400),
    ("multipart/related; type=\"image/png\"; boundary=b", b"--b--\r\n", 415),
    (f"multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}", b"", 400),
    (f"multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}",
     f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nabc".encode(), 400),
    (f"multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}",
     b"--wrong-boundary\r\n\r\nabc\r\n--wrong-boundary--\r\n", 400),
])
def test_bad_requests(client, content_type, body, status):
    r = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert stored_count(client) == 0


def test_part_over_the_size_limit(client, core):
    import sonobridge.core.imaging.archive  # noqa: F401

    app_service = client.app.state.core
    app_service.ingest.receiver.max_size = 1000
    r = stow(client, [cine("jpeg")])
    assert r.status_code == 413
    assert stored_count(client) == 0
    assert list(core.blobs.scratch.iterdir()) == []


def test_metadata_and_bulk_data_form(client):
    ds = cine("jpeg", frames=1)
    frame = ds.expected_frames[0]
    meta = ds.to_json_dict()
    meta.pop("7FE00010", None)
    meta["7FE00010"] = {"vr": "OB", "BulkDataURI": "frame-1"}
    body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom+json\r\n\r\n".encode()
            + orjson.dumps([meta]) + b"\r\n"
            + f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Location: frame-1\r\n\r\n"
            .encode() + frame + f"\r\n--{BOUNDARY}--\r\n".encode())
    r = client.post("/dicomweb/studies", content=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}'})
    assert r.status_code == 200, r.text
    got = client.get(instance_url(ds) + "/frames/1",
                     headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert got.status_code == 200
    assert frame.rstrip(b"\0") in got.content


def test_multipart_writer_round_trip():
    body = multipart([b"a", b"bb"], boundary="q")
    assert body == b"--q\r\nContent-Type: application/dicom\r\n\r\na\r\n--q\r\nContent-Type: " \
                   b"application/dicom\r\n\r\nbb\r\n--q--\r\n"


def test_a_series_in_one_request_rebuilds_the_imaging_study_once(client):
    study, series = generate_uid(), generate_uid()
    datasets = [cine(frames=1, study=study, series=series) for _ in range(6)]
    for number, ds in enumerate(datasets, 1):
        ds.InstanceNumber = number
    assert stow(client, datasets).status_code == 200
    resource = client.get(f"/fhir/ImagingStudy/{study}").json()
    assert resource["numberOfInstances"] == 6
    assert resource["meta"]["versionId"] == "1"  # not one version per instance
    history = client.get(f"/fhir/ImagingStudy/{study}/_history").json()
    assert len(history["entry"]) == 1
    # a second request adds to the same study: one more version
    more = cine(frames=1, study=study, series=series)
    assert stow(client, [more]).status_code == 200
    assert client.get(f"/fhir/ImagingStudy/{study}").json()["numberOfInstances"] == 7
