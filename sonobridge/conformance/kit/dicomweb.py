"""The DICOMweb suite (PS3.18): STOW-RS of a generated ultrasound cine, QIDO-RS with match keys
at every level, WADO-RS of the instance, its metadata, frames and renderings, and the error
codes a client relies on."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from pydicom import dcmread

from sonobridge.conformance.kit.data import Cine, make_cine, multipart, split_multipart
from sonobridge.conformance.kit.http import expect_status, json_body
from sonobridge.conformance.kit.model import Check, Context, Failed, Group, Requirement, Suite
from sonobridge.conformance.kit.model import TestDef as T

PS318 = "https://dicom.nema.org/medical/dicom/current/output/html/part18.html"
DICOM_JSON = "application/dicom+json"


def req(text: str, section: str) -> Requirement:
    return Requirement(text, f"{PS318}#{section}")


def root(ctx: Context) -> str:
    """The DICOMweb root: as given, else the target's Endpoint for WADO-RS, else its sibling
    ``/dicomweb``."""
    if "dicomweb_root" in ctx.state:
        return str(ctx.state["dicomweb_root"])
    options = ctx.options
    found: str | None = options.dicomweb
    if not found and options.target:
        target = options.target.rstrip("/")
        try:
            response = ctx.client.get(f"{target}/Endpoint",
                                      params={"connection-type": "dicom-wado-rs", "_count": 1},
                                      headers={"Accept": "application/fhir+json"})
            for entry in response.json().get("entry", []) if response.is_success else []:
                address = entry.get("resource", {}).get("address")
                if address:
                    found = address
                    break
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        if not found:
            found = target.rsplit("/", 1)[0] + "/dicomweb"
    if not found:
        raise Failed("no DICOMweb root: give --dicomweb URL (or --target, whose sibling "
                     "/dicomweb is tried)")
    ctx.state["dicomweb_root"] = found.rstrip("/")
    return str(ctx.state["dicomweb_root"])


def _cine(check: Check) -> Cine:
    cine: Cine = check.ctx.needs("dicomweb_cine", "needs the instance stored by "
                                                  "dicomweb-stow-01, which failed")
    return cine


def _attr(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _matches(check: Check, url: str, params: dict[str, Any] | None = None) -> list[Any]:
    response = check.http.get(url, params=params, headers={"Accept": DICOM_JSON})
    if response.status_code == 204:
        return []
    expect_status(response, 200)
    body = json_body(response, "the QIDO-RS response")
    check.expect(isinstance(body, list), "a QIDO-RS response is a JSON array (PS3.18 F.2)")
    return list(body)


def stow(check: Check) -> None:
    ctx = check.ctx
    cine = make_cine(f"SBKIT-{uuid.uuid4().hex[:12]}")
    body, ctype = multipart([cine.data], "application/dicom")
    response = check.http.post(f"{root(ctx)}/studies", content=body,
                               headers={"Content-Type": ctype, "Accept": DICOM_JSON})
    expect_status(response, 200, 202)
    answer = json_body(response, "the STOW-RS response")
    check.expect(isinstance(answer, dict), "the STOW-RS response is one DICOM JSON dataset")
    refs = answer.get("00081199", {}).get("Value", [])
    stored = [_attr(r, "00081155") for r in refs]
    check.expect(cine.sop in stored,
                 f"ReferencedSOPSequence (0008,1199) lists the stored instance {cine.sop}; "
                 f"it lists {stored}")
    ctx.state["dicomweb_cine"] = cine


def stow_not_dicom(check: Check) -> None:
    body, ctype = multipart([b"this is not a DICOM file" * 8], "application/dicom")
    response = check.http.post(f"{root(check.ctx)}/studies", content=body,
                               headers={"Content-Type": ctype, "Accept": DICOM_JSON})
    expect_status(response, 400, 409, 415,
                  what="STOW-RS of a part that is not DICOM must not succeed")


def stow_wrong_media(check: Check) -> None:
    response = check.http.post(f"{root(check.ctx)}/studies", content=b"{}",
                               headers={"Content-Type": "application/x-kit-nonsense",
                                        "Accept": DICOM_JSON})
    expect_status(response, 400, 415, what="STOW-RS with an unsupported Content-Type")


def qido_study_uid(check: Check) -> None:
    cine = _cine(check)
    found = _matches(check, f"{root(check.ctx)}/studies", {"StudyInstanceUID": cine.study})
    check.expect([_attr(m, "0020000D") for m in found] == [cine.study],
                 f"one study matches StudyInstanceUID={cine.study}; got {len(found)}")


def qido_patient_id(check: Check) -> None:
    cine = _cine(check)
    found = _matches(check, f"{root(check.ctx)}/studies", {"PatientID": cine.patient_id})
    check.expect(cine.study in [_attr(m, "0020000D") for m in found],
                 f"PatientID={cine.patient_id} finds the study")
    check.expect(all(_attr(m, "00100020") == cine.patient_id for m in found),
                 "every match has the PatientID asked for")


def qido_date_modality(check: Check) -> None:
    cine = _cine(check)
    found = _matches(check, f"{root(check.ctx)}/studies",
                     {"PatientID": cine.patient_id, "StudyDate": "19000101-",
                      "ModalitiesInStudy": "US"})
    check.expect(cine.study in [_attr(m, "0020000D") for m in found],
                 "a StudyDate range with ModalitiesInStudy=US finds the study")


def qido_wildcard(check: Check) -> None:
    cine = _cine(check)
    # the * goes as is, as in PS3.18's examples (a server need not decode %2A into a wildcard)
    found = _matches(check, f"{root(check.ctx)}/studies?PatientID={cine.patient_id[:10]}*")
    check.expect(cine.study in [_attr(m, "0020000D") for m in found],
                 "a wildcard PatientID (prefix*) finds the study")


def qido_accession(check: Check) -> None:
    cine = _cine(check)
    found = _matches(check, f"{root(check.ctx)}/studies", {"AccessionNumber": cine.accession})
    check.expect([_attr(m, "0020000D") for m in found] == [cine.study],
                 f"AccessionNumber={cine.accession} finds exactly the study")


def qido_series(check: Check) -> None:
    cine = _cine(check)
    found = _matches(check, f"{root(check.ctx)}/studies/{cine.study}/series",
                     {"Modality": "US"})
    check.expect([_attr(m, "0020000E") for m in found] == [cine.series],
                 f"the study's series (Modality=US) is {cine.series}; got "
                 f"{[_attr(m, '0020000E') for m in found]}")


def qido_instances(check: Check) -> None:
    cine = _cine(check)
    found = _matches(check, f"{root(check.ctx)}/studies/{cine.study}/series/{cine.series}"
                            f"/instances", {"SOPInstanceUID": cine.sop})
    check.expect([_attr(m, "00080018") for m in found] == [cine.sop],
                 "the series' instance is found by SOPInstanceUID")
    check.expect(_attr(found[0], "00080016") == "1.2.840.10008.5.1.4.1.1.3.1",
                 "SOPClassUID is returned for an instance (PS3.18 Table 10.6.3-5)")


def qido_instances_all(check: Check) -> None:
    cine = _cine(check)
    found = _matches(check, f"{root(check.ctx)}/instances", {"SOPInstanceUID": cine.sop})
    check.expect([_attr(m, "00080018") for m in found] == [cine.sop],
                 "/instances?SOPInstanceUID= finds the instance across all studies")


def qido_limit(check: Check) -> None:
    found = _matches(check, f"{root(check.ctx)}/studies", {"limit": 1})
    check.expect(len(found) <= 1, f"limit=1 returns at most one study; got {len(found)}")


def qido_no_match(check: Check) -> None:
    found = _matches(check, f"{root(check.ctx)}/studies",
                     {"StudyInstanceUID": "1.2.3.4.5.6.7.8.9.424242"})
    check.expect(found == [], "no study matches an unknown StudyInstanceUID")


def qido_includefield(check: Check) -> None:
    cine = _cine(check)
    found = _matches(check, f"{root(check.ctx)}/studies",
                     {"StudyInstanceUID": cine.study, "includefield": "00081030"})
    check.expect(found and _attr(found[0], "00081030") == "Conformance kit cine",
                 "includefield=00081030 returns StudyDescription")


def _instance_url(check: Check) -> str:
    cine = _cine(check)
    return f"{root(check.ctx)}/studies/{cine.study}/series/{cine.series}/instances/{cine.sop}"


def wado_instance(check: Check) -> None:
    cine = _cine(check)
    response = check.http.get(_instance_url(check),
                              headers={"Accept": 'multipart/related; type="application/dicom"'})
    expect_status(response, 200)
    try:
        parts = split_multipart(response.content, response.headers.get("content-type", ""))
    except ValueError as exc:
        raise Failed(f"the WADO-RS response is not multipart/related: {exc}") from None
    check.expect(len(parts) == 1, f"one part for one instance; got {len(parts)}")
    ds = dcmread(io.BytesIO(parts[0][1]))
    check.expect(ds.SOPInstanceUID == cine.sop, "the part is the stored instance")
    check.expect(ds.NumberOfFrames == len(cine.frames), "with all its frames")


def wado_study(check: Check) -> None:
    cine = _cine(check)
    response = check.http.get(f"{root(check.ctx)}/studies/{cine.study}",
                              headers={"Accept": 'multipart/related; type="application/dicom"'})
    expect_status(response, 200)
    try:
        parts = split_multipart(response.content, response.headers.get("content-type", ""))
    except ValueError as exc:
        raise Failed(f"the WADO-RS response is not multipart/related: {exc}") from None
    check.expect(len(parts) == 1, f"the study holds one instance; got {len(parts)} parts")


def wado_metadata(check: Check) -> None:
    cine = _cine(check)
    response = check.http.get(f"{_instance_url(check)}/metadata",
                              headers={"Accept": DICOM_JSON})
    expect_status(response, 200)
    body = json_body(response, "the metadata")
    check.expect(isinstance(body, list) and len(body) == 1, "metadata is an array of one")
    item = body[0]
    check.expect(_attr(item, "00080018") == cine.sop, "it is the instance's metadata")
    pixel = item.get("7FE00010", {})
    check.expect("InlineBinary" not in pixel,
                 "pixel data is not inlined in metadata (BulkDataURI or absent, PS3.18 F.2.6)")


def wado_series_metadata(check: Check) -> None:
    cine = _cine(check)
    response = check.http.get(f"{root(check.ctx)}/studies/{cine.study}/series/{cine.series}"
                              f"/metadata", headers={"Accept": DICOM_JSON})
    expect_status(response, 200)
    body = json_body(response, "the series metadata")
    check.expect([_attr(i, "00080018") for i in body] == [cine.sop],
                 "series metadata lists its one instance")


def _frames(check: Check, numbers: str) -> list[bytes]:
    response = check.http.get(f"{_instance_url(check)}/frames/{numbers}", headers={
        "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
    expect_status(response, 200)
    try:
        parts = split_multipart(response.content, response.headers.get("content-type", ""))
    except ValueError as exc:
        raise Failed(f"the frames response is not multipart/related: {exc}") from None
    return [content for _headers, content in parts]


def wado_frame(check: Check) -> None:
    cine = _cine(check)
    frames = _frames(check, "1")
    check.expect(len(frames) == 1, f"one part for frame 1; got {len(frames)}")
    check.expect(frames[0] == cine.frames[0],
                 f"frame 1 is the stored pixels ({len(cine.frames[0])} bytes); got "
                 f"{len(frames[0])} bytes")


def wado_frames(check: Check) -> None:
    cine = _cine(check)
    frames = _frames(check, "2,4")
    check.expect(frames == [cine.frames[1], cine.frames[3]],
                 "frames 2,4 come in the order asked, each the stored pixels")


def wado_rendered(check: Check) -> None:
    response = check.http.get(f"{_instance_url(check)}/rendered", headers={"Accept": "image/jpeg"})
    expect_status(response, 200)
    check.expect(response.headers.get("content-type", "").startswith("image/jpeg"),
                 f"Content-Type image/jpeg; got {response.headers.get('content-type')}")
    check.expect(response.content[:2] == b"\xff\xd8", "the body is a JPEG (starts FFD8)")


def wado_frame_rendered(check: Check) -> None:
    response = check.http.get(f"{_instance_url(check)}/frames/2/rendered",
                              headers={"Accept": "image/png"})
    expect_status(response, 200)
    check.expect(response.content[:8] == b"\x89PNG\r\n\x1a\n", "the body is a PNG")


def err_not_found(check: Check) -> None:
    response = check.http.get(f"{root(check.ctx)}/studies/1.2.3.4.5.6.7.8.9.424242/metadata",
                              headers={"Accept": DICOM_JSON})
    expect_status(response, 404, what="metadata of a study that does not exist")


def err_frame_not_found(check: Check) -> None:
    response = check.http.get(f"{_instance_url(check)}/frames/99", headers={
        "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
    expect_status(response, 400, 404, what="a frame number beyond NumberOfFrames")


def err_not_acceptable(check: Check) -> None:
    response = check.http.get(f"{_instance_url(check)}/metadata",
                              headers={"Accept": "application/x-kit-nonsense"})
    expect_status(response, 406, what="metadata in a media type the server cannot give")


def err_bad_query(check: Check) -> None:
    response = check.http.get(f"{root(check.ctx)}/studies", params={"StudyDate": "not-a-date"},
                              headers={"Accept": DICOM_JSON})
    expect_status(response, 400, what="QIDO-RS with an invalid StudyDate")


def _t(id_: str, title: str, text: str, section: str, fn: Callable[[Check], None]) -> T:
    return T(id_, title, req(text, section), fn)


STOW = [
    _t("dicomweb-stow-01", "STOW-RS stores an ultrasound cine", "A Store Instances request "
       "stores the instance and answers with a ReferencedSOPSequence naming it.",
       "sect_10.5", stow),
    _t("dicomweb-stow-02", "STOW-RS refuses a part that is not DICOM", "An instance that "
       "cannot be stored is reported as a failure (400/409), not stored.",
       "sect_10.5.3", stow_not_dicom),
    _t("dicomweb-stow-03", "STOW-RS refuses an unsupported media type", "A request whose "
       "Content-Type the server does not support fails with 415 (or 400).",
       "sect_8.6", stow_wrong_media),
]
QIDO = [
    _t("dicomweb-qido-01", "Studies by StudyInstanceUID", "Search for Studies matches on "
       "StudyInstanceUID (UID list matching).", "sect_10.6", qido_study_uid),
    _t("dicomweb-qido-02", "Studies by PatientID", "Search for Studies matches on PatientID "
       "(single value matching).", "sect_10.6.1.2", qido_patient_id),
    _t("dicomweb-qido-03", "Studies by date range and modality", "Range matching on StudyDate "
       "and matching on ModalitiesInStudy.", "sect_10.6.1.2", qido_date_modality),
    _t("dicomweb-qido-04", "Studies by wildcard", "Wildcard matching (*) on a string "
       "attribute.", "sect_8.3.4.6", qido_wildcard),
    _t("dicomweb-qido-05", "Studies by AccessionNumber", "Search for Studies matches on "
       "AccessionNumber.", "sect_10.6.1.2", qido_accession),
    _t("dicomweb-qido-06", "Series of a study", "Search for Series within a study, matching "
       "Modality.", "sect_10.6", qido_series),
    _t("dicomweb-qido-07", "Instances of a series", "Search for Instances within a series, "
       "matching SOPInstanceUID; SOPClassUID returned.", "sect_10.6", qido_instances),
    _t("dicomweb-qido-08", "Instances across studies", "Search for all Instances "
       "(/instances) matching SOPInstanceUID.", "sect_10.6", qido_instances_all),
    _t("dicomweb-qido-09", "limit", "The limit query parameter bounds the number of results.",
       "sect_8.3.4.4", qido_limit),
    _t("dicomweb-qido-10", "No match", "A search that matches nothing returns an empty result "
       "(200 with [] or 204).", "sect_10.6.3", qido_no_match),
    _t("dicomweb-qido-11", "includefield", "includefield adds the named attribute to each "
       "match.", "sect_8.3.4.3", qido_includefield),
]
WADO = [
    _t("dicomweb-wado-01", "Retrieve an instance", "Retrieve Instance returns the instance in "
       "multipart/related; type=application/dicom.", "sect_10.4", wado_instance),
    _t("dicomweb-wado-02", "Retrieve a study", "Retrieve Study returns its instances.",
       "sect_10.4", wado_study),
    _t("dicomweb-wado-03", "Instance metadata", "Retrieve Metadata returns DICOM JSON, bulk "
       "data by reference.", "sect_10.4.1.1.2", wado_metadata),
    _t("dicomweb-wado-04", "Series metadata", "Retrieve Series Metadata returns one dataset per "
       "instance.", "sect_10.4.1.1.2", wado_series_metadata),
    _t("dicomweb-wado-05", "One frame", "Retrieve Frames returns the frame's pixel data "
       "(native: the stored bytes).", "sect_10.4.1.1.4", wado_frame),
    _t("dicomweb-wado-06", "Several frames", "Retrieve Frames with a frame list returns them "
       "in the order asked.", "sect_10.4.1.1.4", wado_frames),
    _t("dicomweb-wado-07", "Rendered instance", "Retrieve Rendered Instance as image/jpeg.",
       "sect_10.4.1.1.3", wado_rendered),
    _t("dicomweb-wado-08", "Rendered frame", "Retrieve Rendered Frames as image/png.",
       "sect_10.4.1.1.3", wado_frame_rendered),
]
ERRORS = [
    _t("dicomweb-err-01", "404 for an unknown study", "A resource that does not exist is 404 "
       "Not Found.", "sect_8.7.3", err_not_found),
    _t("dicomweb-err-02", "Frame out of range", "A frame number beyond the instance's frames "
       "is an error (400 or 404).", "sect_8.7.3", err_frame_not_found),
    _t("dicomweb-err-03", "406 for an unacceptable media type", "When no acceptable media type "
       "can be returned, the response is 406 Not Acceptable.", "sect_8.7.3",
       err_not_acceptable),
    _t("dicomweb-err-04", "400 for an invalid query", "An invalid query parameter value is 400 "
       "Bad Request.", "sect_8.7.3", err_bad_query),
]


def groups(ctx: Context) -> Iterable[Group]:
    root(ctx)
    return [Group("dicomweb-stow", "STOW-RS", STOW), Group("dicomweb-qido", "QIDO-RS", QIDO),
            Group("dicomweb-wado", "WADO-RS", WADO),
            Group("dicomweb-errors", "Error codes", ERRORS)]


SUITE = Suite("dicomweb", "DICOMweb (PS3.18)", groups)
