"""WADO-RS, WADO-URI and delete: bytes, media types, negotiation, errors."""

from __future__ import annotations

import gzip
import io
import threading

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from tests.dicom_data import cine, to_bytes
from tests.dicomweb.helpers import instance_url, parts, stow, uids

DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def test_instance_retrieval_is_byte_exact(client):
    ds = cine("jpeg")
    sent = to_bytes(ds)
    assert stow(client, [], raw=[sent]).status_code == 200
    study, series, _ = uids(ds)
    for url in (instance_url(ds), f"/dicomweb/studies/{study}/series/{series}",
                f"/dicomweb/studies/{study}"):
        for accept in (DICOM_ANY, 'multipart/related; type="application/dicom"', None):
            r = client.get(url, headers={"Accept": accept} if accept else {})
            assert r.status_code == 200, (url, accept)
            [(headers, body)] = parts(r)
            assert body == sent
            assert headers["content-type"] == \
                "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"
            assert headers["content-location"].endswith(instance_url(ds))


def test_transcode_to_explicit_le_says_rgb(client):
    ds = cine("jpeg", frames=2)
    stow(client, [ds])
    r = client.get(instance_url(ds), headers={
        "Accept": 'multipart/related; type="application/dicom"; '
                  "transfer-syntax=1.2.840.10008.1.2.1"})
    assert r.status_code == 200
    [(_headers, body)] = parts(r)
    out = dcmread(io.BytesIO(body))
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert out.PhotometricInterpretation == "RGB"
    assert out.pixel_array.shape == (2, 48, 64, 3)
    # the same instance, decoded: the one asked for, not a new one
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_transcode_native_to_jpeg_and_refuse_others(client):
    ds = cine("native", frames=2)
    stow(client, [ds])
    r = client.get(instance_url(ds), headers={
        "Accept": 'multipart/related; type="application/dicom"; '
                  "transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert r.status_code == 200
    out = dcmread(io.BytesIO(parts(r)[0][1]))
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    r = client.get(instance_url(ds), headers={
        "Accept": 'multipart/related; type="application/dicom"; '
                  "transfer-syntax=1.2.840.10008.1.2.4.90"})
    assert r.status_code == 406 and "JPEG baseline" in r.json()["message"]


def test_metadata(client):
    ds = cine("jpeg")
    stow(client, [ds])
    study, series, sop = uids(ds)
    r = client.get(f"/dicomweb/studies/{study}/series/{series}/metadata",
                   headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.example.org",
                            "X-Forwarded-Prefix": "/imaging"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    [item] = r.json()
    assert item["00080018"]["Value"] == [sop]
    assert item["7FE00010"]["BulkDataURI"] == \
        f"https://gw.example.org/imaging{instance_url(ds)}/bulkdata/7FE00010"
    etag = r.headers["etag"]
    again = client.get(f"/dicomweb/studies/{study}/series/{series}/metadata",
                       headers={"If-None-Match": etag, "X-Forwarded-Proto": "https",
                                "X-Forwarded-Host": "gw.example.org",
                                "X-Forwarded-Prefix": "/imaging"})
    assert again.status_code == 304
    zipped = client.get(f"/dicomweb/studies/{study}/metadata",
                        headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json()[0]["00080018"]["Value"] == [sop]  # the client unzips
    raw = client.get(f"/dicomweb/studies/{study}/metadata",
                     headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    assert client.get(f"{instance_url(ds)}/metadata",
                      headers={"Accept": "application/xml"}).status_code == 406
    assert gzip.decompress(gzip.compress(b"x")) == b"x"


@pytest.mark.parametrize("kind", ["jpeg", "jpeg-nobot", "fragments", "jpeg-eot"])
def test_frames_in_stored_encoding(client, kind):
    ds = cine(kind, frames=5)
    stow(client, [ds])
    for accept in (OHIF_FRAMES, 'multipart/related; type="image/jpeg"',
                   'multipart/related; type="*/*"', "multipart/related; type=image/jpeg"):
        r = client.get(f"{instance_url(ds)}/frames/5,1", headers={"Accept": accept})
        assert r.status_code == 200, (accept, r.text)
        got = parts(r)
        assert [body.rstrip(b"\0") for _, body in got] == \
            [ds.expected_frames[4].rstrip(b"\0"), ds.expected_frames[0].rstrip(b"\0")]
        assert got[0][0]["content-type"].startswith("image/jpeg; transfer-syntax=1.2.840")
        assert got[0][0]["content-location"].endswith("/frames/5")


def test_decoded_frame(client):
    ds = cine("jpeg", frames=3)
    stow(client, [ds])
    r = client.get(f"{instance_url(ds)}/frames/2",
                   headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert r.status_code == 200
    [(headers, body)] = parts(r)
    assert headers["content-type"] == \
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert len(body) == 48 * 64 * 3
    reference = dcmread(io.BytesIO(to_bytes(ds))).pixel_array[1]
    assert np.abs(np.frombuffer(body, np.uint8).reshape(48, 64, 3).astype(int)
                  - reference.astype(int)).mean() < 3  # both RGB from the same JPEG


def test_native_frames_and_range(client):
    ds = cine("native", frames=4)
    stow(client, [ds])
    r = client.get(f"{instance_url(ds)}/frames/4", headers={"Accept": OHIF_FRAMES})
    [(_headers, body)] = parts(r)
    assert body == ds.PixelData[3 * 48 * 64 * 3:]
    r = client.get(f"{instance_url(ds)}/frames/5")
    assert r.status_code == 404 and "1 to 4" in r.json()["message"]
    assert client.get(f"{instance_url(ds)}/frames/x").status_code == 400
    r = client.get(f"{instance_url(ds)}/frames/1",
                   headers={"Accept": 'multipart/related; type="image/jp2"'})
    assert r.status_code == 406


def test_rendered_and_thumbnail(client):
    ds = cine("jpeg", frames=6)
    stow(client, [ds])
    study, series, _ = uids(ds)
    jpeg = client.get(f"{instance_url(ds)}/frames/3/rendered", headers={"Accept": "image/jpeg"})
    assert jpeg.status_code == 200 and jpeg.content[:2] == b"\xff\xd8"
    png = client.get(f"{instance_url(ds)}/rendered?viewport=32,24",
                     headers={"Accept": "image/png"})
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (32, 24)
    gif = client.get(f"{instance_url(ds)}/rendered", headers={"Accept": "image/gif"})
    image = Image.open(io.BytesIO(gif.content))
    assert image.format == "GIF" and image.n_frames == 6
    mp4 = client.get(f"{instance_url(ds)}/rendered", headers={"Accept": "video/mp4"})
    assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
    part = client.get(f"{instance_url(ds)}/rendered", headers={"Accept": "video/mp4",
                                                             "Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    assert part.headers["content-range"] == f"bytes 0-99/{len(mp4.content)}"
    for url in (f"/dicomweb/studies/{study}/thumbnail",
                f"/dicomweb/studies/{study}/series/{series}/thumbnail",
                f"{instance_url(ds)}/thumbnail"):
        thumb = client.get(url, headers={"Accept": "image/jpeg"})
        assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
        assert max(Image.open(io.BytesIO(thumb.content)).size) <= 128
    assert client.get(f"{instance_url(ds)}/rendered",
                      headers={"Accept": "application/pdf"}).status_code == 406
    assert client.get(f"{instance_url(ds)}/rendered?quality=500").status_code == 400
    assert client.get(f"{instance_url(ds)}/frames/9/rendered").status_code == 404


def test_window_changes_greyscale_rendering(client):
    ds = cine("native", frames=1)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    del ds.NumberOfFrames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = (np.arange(48 * 64, dtype="<u2") % 4096).tobytes()
    ds["PixelData"].VR = "OW"
    stow(client, [ds])
    wide = client.get(f"{instance_url(ds)}/rendered?window=128,256",
                      headers={"Accept": "image/png"})
    narrow = client.get(f"{instance_url(ds)}/rendered?window=128,20",
                        headers={"Accept": "image/png"})
    assert wide.status_code == narrow.status_code == 200
    assert wide.content != narrow.content


@pytest.mark.parametrize("name", ["gdcm-US-ALOKA-16", "OBXXXX1A", "US1_J2KR",
                                  "OBXXXX1A_rle_2frame", "OBXXXX1A_expb_2frame"])
def test_real_ultrasound_renders_in_colour(client, us_files, name):
    data = us_files[name].read_bytes()
    assert stow(client, [], raw=[data]).status_code == 200
    ds = dcmread(io.BytesIO(data))
    r = client.get(f"{instance_url(ds)}/frames/1/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(r.content))
    assert image.mode == "RGB" and image.size == (ds.Columns, ds.Rows)
    assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 10  # not a flat field


def test_bulkdata(client):
    ds = cine("jpeg", frames=2)
    stow(client, [ds])
    r = client.get(f"{instance_url(ds)}/bulkdata/7FE00010")
    bodies = [b.rstrip(b"\0") for _, b in parts(r)]
    assert bodies == [f.rstrip(b"\0") for f in ds.expected_frames]
    assert client.get(f"{instance_url(ds)}/bulkdata/00091234").status_code == 404


def test_wado_uri(client):
    ds = cine("jpeg")
    sent = to_bytes(ds)
    stow(client, [], raw=[sent])
    study, series, sop = uids(ds)
    q = f"requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
    r = client.get(f"/wado?{q}&contentType=application/dicom")
    assert r.status_code == 200 and r.content == sent
    r = client.get(f"/wado?{q}&contentType=image/jpeg&frameNumber=2")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert client.get(f"/wado?{q}&contentType=text/html").status_code == 406
    assert client.get("/wado?requestType=WADO&studyUID=x&seriesUID=1&objectUID=1"
                      ).status_code == 400
    assert client.get(f"/wado?{q.replace('WADO', 'X')}").status_code == 400


def test_delete_keeps_imaging_study_in_step(client, core):
    study_uid = cine("jpeg").StudyInstanceUID
    a, b = cine("jpeg", study=study_uid), cine("jpeg", study=study_uid)
    stow(client, [a, b])
    study = client.get(f"/fhir/ImagingStudy/{study_uid}").json()
    assert study["numberOfInstances"] == 2
    assert client.delete(instance_url(a)).status_code == 200
    assert client.get(instance_url(a)).status_code == 404
    assert client.get(f"/fhir/ImagingStudy/{study_uid}").json()["numberOfInstances"] == 1
    assert client.delete(f"/dicomweb/studies/{study_uid}").status_code == 200
    assert client.get(f"/fhir/ImagingStudy/{study_uid}").status_code == 410
    assert client.get("/dicomweb/studies").status_code == 204
    assert client.delete(f"/dicomweb/studies/{study_uid}").status_code == 404
    assert list(core.blobs.keys("dicom/")) == []


@pytest.mark.parametrize("path", ["/dicomweb/studies/1.2.x", "/dicomweb/studies/01.2/metadata",
                                  "/dicomweb/studies/1.2/series/" + "1" * 70])
def test_invalid_uids(client, path):
    r = client.get(path)
    assert r.status_code == 400 and "not a valid UID" in r.json()["message"]


def test_unknown_objects_are_404(client):
    assert client.get("/dicomweb/studies/1.2.3").status_code == 404
    assert client.get("/dicomweb/studies/1.2.3/metadata").status_code == 404
    assert client.get("/dicomweb/studies/1.2.3/series/1.2/instances/1.2/frames/1"
                      ).status_code == 404


def test_twenty_viewers_one_decode(client):
    ds = cine("jpeg", frames=3)
    stow(client, [ds])
    service = client.app.state.core
    before = service.archive.cache.computed
    statuses = []

    def fetch() -> None:
        r = client.get(f"{instance_url(ds)}/frames/2",
                       headers={"Accept": 'multipart/related; type="application/octet-stream"'})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 20
    assert service.archive.cache.computed - before == 1


def test_imaging_study_resource(client):
    ds = cine("jpeg", patient_id="MRN-77", patient_name="Li^Na", accession="ACC-77")
    client.put("/fhir/ServiceRequest/order-77", json={
        "resourceType": "ServiceRequest", "id": "order-77", "status": "active",
        "intent": "order", "subject": {"display": "x"},
        "identifier": [{"system": "urn:acc", "value": "ACC-77"}]},
        headers={"Content-Type": "application/fhir+json"})
    stow(client, [ds])
    study, series, sop = uids(ds)
    resource = client.get(f"/fhir/ImagingStudy/{study}").json()
    assert resource["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"}
    assert resource["basedOn"] == [{"reference": "ServiceRequest/order-77"}]
    assert resource["series"][0]["uid"] == series
    assert resource["series"][0]["modality"]["code"] == "US"
    assert resource["series"][0]["instance"][0]["uid"] == sop
    assert resource["numberOfSeries"] == 1 and resource["numberOfInstances"] == 1
    patient = client.get(f"/fhir/{resource['subject']['reference']}").json()
    assert patient["identifier"][0]["value"] == "MRN-77" and patient["name"][0]["family"] == "Li"
    endpoint = client.get(f"/fhir/{resource['endpoint'][0]['reference']}").json()
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    found = client.get("/fhir/ImagingStudy?patient.identifier=MRN-77").json()
    assert found["entry"][0]["resource"]["id"] == study


def test_a_frame_level_thumbnail_shows_that_frame(client):
    ds = cine("native", frames=6)
    frames = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(6, ds.Rows, ds.Columns, 3)
    stow(client, [ds])

    def thumb(path: str) -> np.ndarray:
        r = client.get(f"{instance_url(ds)}/{path}?viewport={ds.Columns},{ds.Rows}",
                       headers={"Accept": "image/png"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))

    for n in (1, 2, 6):  # lossless PNG at full size: each is its own frame, exactly
        assert np.array_equal(thumb(f"frames/{n}/thumbnail"), frames[n - 1])
    assert np.array_equal(thumb("thumbnail"), frames[2])  # the instance's: the middle frame
    assert client.get(f"{instance_url(ds)}/frames/7/thumbnail").status_code == 404
    assert client.get(f"{instance_url(ds)}/frames/1,2/thumbnail").status_code == 400
