"""dicomweb-client (the Python package) and an OHIF v3 call sequence against a live server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from tests.dicom_data import cine, to_bytes
from tests.live import serve


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[str]:
    with serve(db_url, tmp_path, "--no-sample") as (base, _):
        yield base


def test_dicomweb_client_round_trip(live, us_files):
    client = DICOMwebClient(f"{live}/dicomweb")
    datasets = [dcmread(us_files[n]) for n in ("color3d_jpeg_baseline", "US1_UNCR",
                                                 "OBXXXX1A_rle_2frame")]
    built = cine("jpeg-nobot", frames=8)  # a dataset built in memory, stored without preamble
    datasets.append(built)
    response = client.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == 4
    assert "FailedSOPSequence" not in response
    studies = client.search_for_studies()
    assert {s["0020000D"]["Value"][0] for s in studies} == \
        {str(d.StudyInstanceUID) for d in datasets}
    jpeg = datasets[0]
    study, series, sop = (str(jpeg.StudyInstanceUID), str(jpeg.SeriesInstanceUID),
                          str(jpeg.SOPInstanceUID))
    assert len(client.search_for_series(study)) == 1
    assert len(client.search_for_instances(study, series)) == 1
    assert len(client.search_for_instances(study)) == 1
    assert client.search_for_studies(search_filters={"PatientID": jpeg.PatientID})
    retrieved = client.retrieve_instance(study, series, sop)
    assert retrieved.SOPInstanceUID == sop and retrieved.NumberOfFrames == 120
    metadata = client.retrieve_series_metadata(study, series)
    assert metadata[0]["00080018"]["Value"] == [sop]
    frames = client.retrieve_instance_frames(study, series, sop, [1, 60, 120])
    assert [f[:2] for f in frames] == [b"\xff\xd8"] * 3
    bulk = client.retrieve_bulkdata(metadata[0]["7FE00010"]["BulkDataURI"])
    assert len(bulk) == 120
    rendered = client.retrieve_instance_rendered(study, series, sop,
                                                 media_types=("image/jpeg",))
    assert rendered[:2] == b"\xff\xd8"
    native = datasets[1]
    pixels = client.retrieve_instance_frames(
        str(native.StudyInstanceUID), str(native.SeriesInstanceUID),
        str(native.SOPInstanceUID), [1], media_types=("application/octet-stream",))
    assert pixels[0] == native.PixelData[:480 * 640 * 3]
    again = client.retrieve_instance(str(built.StudyInstanceUID), str(built.SeriesInstanceUID),
                                     str(built.SOPInstanceUID))
    assert again.PixelData == built.PixelData


def test_byte_exact_through_http(live):
    ds = cine("jpeg", frames=4)
    sent = to_bytes(ds)
    body = (b"--b\r\nContent-Type: application/dicom\r\n\r\n" + sent + b"\r\n--b--\r\n")
    r = httpx.post(f"{live}/dicomweb/studies", content=body,
                   headers={"Content-Type": 'multipart/related; type="application/dicom"; '
                                            "boundary=b"})
    assert r.status_code == 200
    url = f"{live}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}" \
          f"/instances/{ds.SOPInstanceUID}"
    got = httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                            "transfer-syntax=*"})
    assert sent in got.content


def test_ohif_v3_call_sequence(live):
    """The requests OHIF v3 makes to open a study and play a cine, with its Accept headers."""
    ds = cine("jpeg", frames=10, patient_name="Zhao^Lei", patient_id="OHIF-1")
    sent = to_bytes(ds)
    httpx.post(f"{live}/dicomweb/studies", content=(
        b"--b\r\nContent-Type: application/dicom\r\n\r\n" + sent + b"\r\n--b--\r\n"),
        headers={"Content-Type": "multipart/related; type=application/dicom; boundary=b"})
    study, series, sop = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                          str(ds.SOPInstanceUID))
    root = f"{live}/dicomweb"
    with httpx.Client(timeout=30) as http:
        listing = http.get(f"{root}/studies", params={
            "PatientName": "*zhao*", "limit": "101", "offset": "0", "fuzzymatching": "false",
            "includefield": "00081030,00080060,00080090,00100030"},
            headers={"Accept": "application/dicom+json"})
        assert listing.status_code == 200
        [entry] = listing.json()
        assert entry["0020000D"]["Value"] == [study]
        assert entry["00100010"]["Value"][0]["Alphabetic"] == "Zhao^Lei"
        assert http.get(f"{root}/studies", params={"StudyDate": "19000101-29991231",
                                                    "ModalitiesInStudy": "US",
                                                    "00100020": "OHIF-1"}).json()
        series_list = http.get(f"{root}/studies/{study}/series",
                               params={"includefield": "0008103E,00080021"}).json()
        assert series_list[0]["0020000E"]["Value"] == [series]
        metadata = http.get(f"{root}/studies/{study}/series/{series}/metadata").json()
        assert metadata[0]["00280008"]["Value"] == [10]
        for n in range(1, 11):
            for accept in ("multipart/related; type=application/octet-stream; "
                           "transfer-syntax=*",
                           'multipart/related; type="application/octet-stream"; '
                           "transfer-syntax=*"):
                frame = http.get(f"{root}/studies/{study}/series/{series}/instances/{sop}"
                                 f"/frames/{n}", headers={"Accept": accept})
                assert frame.status_code == 200
                assert ds.expected_frames[n - 1].rstrip(b"\0") in frame.content
        thumbnail = http.get(f"{root}/studies/{study}/series/{series}/instances/{sop}"
                             "/thumbnail", headers={"Accept": "image/jpeg"})
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"
        cors = http.options(f"{root}/studies", headers={
            "Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in cors.headers  # closed unless configured
