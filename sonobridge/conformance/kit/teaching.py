"""The teaching suite: does a published teaching case leak nothing (issue 16; STANDARDS.md §11)?

Against a FHIR base (``--target``) and its DICOMweb root: the kit stores a native ultrasound
cine whose header band carries the patient's name, ID and date drawn into every frame (an
ultrasound region declared below the band), asks for ``$teaching-case`` on its ImagingStudy,
and checks the copy through DICOMweb as any viewer would: its own study and pseudo patient,
Patient Identity Removed YES with the PS3.15 method codes, none of the original's identifiers
or UIDs in its metadata, the band blank on every frame and the region unchanged. A second case
of the same study must be refused (409), an image without regions must not be published (422).
The case is withdrawn at the end (``$teaching-case-withdraw``); a server that does not list the
operation in its CapabilityStatement makes the suite skip with that reason.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from sonobridge.conformance.kit.data import multipart, split_multipart
from sonobridge.conformance.kit.dicomweb import root
from sonobridge.conformance.kit.fhir import FHIR_JSON, HEADERS, base
from sonobridge.conformance.kit.http import expect_status, json_body
from sonobridge.conformance.kit.model import (
    Check,
    Context,
    Failed,
    Group,
    Requirement,
    Skipped,
    Suite,
)
from sonobridge.conformance.kit.model import TestDef as T

DICOM_JSON = "application/dicom+json"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
PS315 = "https://dicom.nema.org/medical/dicom/current/output/html/part15.html"
ROWS, COLS, FRAMES, BAND = 96, 128, 3, 32


def make_burned(tag: str, regions: bool = True) -> tuple[Dataset, bytes, np.ndarray]:
    """A native RGB cine: the identity drawn into rows 0..BAND-1 of every frame, a pattern
    below; one ultrasound region covering the rows below the band (unless ``regions`` is
    false). Returns the data set, its Part 10 bytes and the frames."""
    rng = np.random.default_rng(16)
    frames = rng.integers(20, 200, size=(FRAMES, ROWS, COLS, 3), dtype=np.uint8)
    patient_id = f"SBKIT-{tag}"
    for number in range(FRAMES):
        frames[number, :BAND] = 0
        image = Image.fromarray(frames[number])
        ImageDraw.Draw(image).text((4, 8), f"KIT^PATIENT {patient_id}", fill=(255, 255, 255))
        frames[number] = np.asarray(image)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(US_MULTIFRAME)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    today = datetime.now(UTC).strftime("%Y%m%d")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = US_MULTIFRAME, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.StudyID = "US", 1, 1, "1"
    ds.PatientName, ds.PatientID = "Kit^Patient", patient_id
    ds.PatientBirthDate, ds.PatientSex = "19700101", "F"
    ds.AccessionNumber = f"ACC{tag}"[:16]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
    ds.StudyTime = ds.ContentTime = "101500"
    ds.ReferringPhysicianName, ds.Manufacturer = "", "SonoBridgeKit"
    ds.InstitutionName = "Kit Township Clinic"
    ds.StudyDescription = f"US abdomen {patient_id}"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ""
    ds.NumberOfFrames, ds.FrameIncrementPointer, ds.FrameTime = FRAMES, 0x00181063, 33.3
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.BurnedInAnnotation = "YES"
    ds.LossyImageCompression = "00"
    if regions:
        region = Dataset()
        region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, BAND
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = COLS - 1, ROWS - 1
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX = region.PhysicalDeltaY = 0.02
        ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.PixelData = frames.tobytes()
    ds["PixelData"].VR = "OB"
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return ds, out.getvalue(), frames


def _stow(check: Check, data: bytes) -> None:
    body, ctype = multipart([data], "application/dicom")
    response = check.http.post(f"{root(check.ctx)}/studies", content=body,
                               headers={"Content-Type": ctype, "Accept": DICOM_JSON})
    expect_status(response, 200, what="STOW-RS of the burned-in cine")


def _publish(check: Check, study: str) -> httpx.Response:
    return check.http.post(f"{base(check.ctx)}/ImagingStudy/{study}/$teaching-case",
                           headers=HEADERS, content=json.dumps({
                               "resourceType": "Parameters", "parameter": [
                                   {"name": "keyword", "valueString": "conformance-kit"},
                                   {"name": "title", "valueString": "Kit teaching case"}]}))


def offered(check: Check) -> None:
    response = check.http.get(f"{base(check.ctx)}/metadata", headers={"Accept": FHIR_JSON})
    expect_status(response, 200)
    rest = (json_body(response).get("rest") or [{}])[0]
    imaging: dict[str, Any] = next(
        (r for r in rest.get("resource", []) if r.get("type") == "ImagingStudy"), {})
    names = {op.get("name") for op in imaging.get("operation", [])}
    if "teaching-case" not in names:
        check.ctx.state["teaching_missing"] = True
        raise Skipped("the CapabilityStatement lists no $teaching-case on ImagingStudy")
    check.ctx.state["teaching_offered"] = True


def stored(check: Check) -> None:
    check.ctx.needs("teaching_offered", "the server offers no $teaching-case")
    ds, data, frames = make_burned(uuid.uuid4().hex[:8])
    _stow(check, data)
    check.ctx.state["teaching_original"] = {"ds": ds, "frames": frames}


def published(check: Check) -> None:
    original = check.ctx.needs("teaching_original", "needs the cine of teaching-02")
    ds = original["ds"]
    response = _publish(check, str(ds.StudyInstanceUID))
    expect_status(response, 201, what="$teaching-case")
    case = json_body(response)
    check.expect(case.get("resourceType") == "DocumentReference",
                 f"a DocumentReference comes back, not {case.get('resourceType')}")
    codes = [c.get("code") for c in (case.get("type") or {}).get("coding", [])]
    check.expect("113004" in codes, f"its type is DCM 113004 For Teaching; found {codes}")
    related = [r.get("reference", "") for r in (case.get("context") or {}).get("related", [])]
    copies = [r.split("/", 1)[1] for r in related if r.startswith("ImagingStudy/")]
    check.expect(len(copies) == 1, f"it names one ImagingStudy (the copy); found {related}")
    check.expect(copies[0] != str(ds.StudyInstanceUID), "the copy has its own study UID")
    check.ctx.state["teaching_case"] = {"id": case.get("id"), "copy": copies[0]}


def no_identity(check: Check) -> None:
    case = check.ctx.needs("teaching_case", "needs the case of teaching-03")
    ds = check.ctx.state["teaching_original"]["ds"]
    response = check.http.get(f"{root(check.ctx)}/studies/{case['copy']}/metadata",
                              headers={"Accept": DICOM_JSON})
    expect_status(response, 200, what="metadata of the copy")
    instances = json_body(response)
    images = [i for i in instances if (i.get("00080016") or {}).get("Value") == [US_MULTIFRAME]]
    check.expect(len(images) == 1, f"the copy holds the cine; found {len(images)} image(s)")
    kos = [i for i in instances if (i.get("00080060") or {}).get("Value") == ["KO"]]
    check.expect(len(kos) == 1, "and a Key Object Selection document")
    text = json.dumps(instances)
    for value in (str(ds.PatientID), "Kit^Patient", str(ds.AccessionNumber),
                  str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID),
                  "19700101", "Kit Township Clinic"):
        check.expect(value not in text, f"{value!r} is not in the copy's metadata")
    image = images[0]
    check.expect((image.get("00120062") or {}).get("Value") == ["YES"],
                 "Patient Identity Removed (0012,0062) is YES")
    methods = [item.get("00080100", {}).get("Value", [""])[0] for item in
               (image.get("00120064") or {}).get("Value", [])]
    check.expect("113100" in methods and "113101" in methods,
                 f"the method codes name the Basic Profile and Clean Pixel Data; {methods}")
    check.expect((image.get("00280301") or {}).get("Value") == ["NO"],
                 "Burned In Annotation (0028,0301) is NO")
    check.ctx.state["teaching_image"] = image


def band_blank(check: Check) -> None:
    case = check.ctx.needs("teaching_case", "needs the case of teaching-03")
    image = check.ctx.needs("teaching_image", "needs the metadata of teaching-04")
    original = check.ctx.state["teaching_original"]["frames"]
    series = image["0020000E"]["Value"][0]
    sop = image["00080018"]["Value"][0]
    url = (f"{root(check.ctx)}/studies/{case['copy']}/series/{series}/instances/{sop}/frames/"
           + ",".join(str(n + 1) for n in range(FRAMES)))
    response = check.http.get(url, headers={
        "Accept": 'multipart/related; type="application/octet-stream"'})
    expect_status(response, 200, what="the copy's frames")
    parts = split_multipart(response.content, response.headers.get("content-type", ""))
    check.expect(len(parts) == FRAMES, f"{FRAMES} frames; got {len(parts)}")
    for number, (_, content) in enumerate(parts):
        check.expect(len(content) == ROWS * COLS * 3, f"frame {number + 1} is native RGB")
        frame = np.frombuffer(content, np.uint8).reshape(ROWS, COLS, 3)
        check.expect(int(frame[:BAND].max()) == 0,
                     f"frame {number + 1}: the header band is blank")
        check.expect(np.array_equal(frame[BAND:], original[number][BAND:]),
                     f"frame {number + 1}: the ultrasound region is unchanged")


def twice(check: Check) -> None:
    check.ctx.needs("teaching_case", "needs the case of teaching-03")
    ds = check.ctx.state["teaching_original"]["ds"]
    response = _publish(check, str(ds.StudyInstanceUID))
    expect_status(response, 409, what="a second case of the same study")


def unsafe(check: Check) -> None:
    check.ctx.needs("teaching_offered", "the server offers no $teaching-case")
    ds, data, _ = make_burned(uuid.uuid4().hex[:8], regions=False)
    _stow(check, data)
    response = _publish(check, str(ds.StudyInstanceUID))
    expect_status(response, 422, what="a case of an image without ultrasound regions")
    outcome = json_body(response)
    check.expect(outcome.get("resourceType") == "OperationOutcome",
                 "the refusal is an OperationOutcome")


def cleanup(ctx: Context) -> None:
    case = ctx.state.get("teaching_case")
    if not case:
        return
    with contextlib.suppress(httpx.HTTPError, Skipped, Failed):
        ctx.client.post(f"{base(ctx)}/DocumentReference/{case['id']}/$teaching-case-withdraw",
                        headers=HEADERS, content=json.dumps({"resourceType": "Parameters"}))
    ctx.state["teaching_case"] = None


def _t(id_: str, title: str, text: str, url: str, fn: Any) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("teaching-01", "The server offers $teaching-case", "The CapabilityStatement lists the "
       "operation on ImagingStudy.", "https://hl7.org/fhir/R4/capabilitystatement.html",
       offered),
    _t("teaching-02", "A cine with burned-in identity is stored", "STOW-RS stores an "
       "ultrasound cine (PS3.18 10.5).", "https://dicom.nema.org/medical/dicom/current/output/"
       "html/part18.html#sect_10.5", stored),
    _t("teaching-03", "$teaching-case publishes a copy", "A DocumentReference of type DCM "
       "113004 For Teaching names the de-identified copy (its own Study Instance UID).",
       f"{PS315}#chapter_E", published),
    _t("teaching-04", "The copy carries no identity", "Basic Profile: no identifying "
       "attribute or original UID remains; Patient Identity Removed YES; CID 7050 method codes; "
       "Burned In Annotation NO.", f"{PS315}#table_E.1-1", no_identity),
    _t("teaching-05", "The header band is blank on every frame", "Clean Pixel Data: only the "
       "ultrasound regions are kept, on every frame.", f"{PS315}#sect_E.3.1", band_blank),
    _t("teaching-06", "A second case of a study is refused", "A study is not de-identified "
       "twice into a new case by accident (409).", f"{PS315}#chapter_E", twice),
    _t("teaching-07", "An image that cannot be cleaned is not published", "Fail-closed: an "
       "image without ultrasound regions (and no mask) is refused with 422.",
       f"{PS315}#sect_E.3.1", unsafe),
]


def groups(ctx: Context) -> Iterable[Group]:
    base(ctx)
    return [Group("teaching", "Teaching cases: de-identification that leaks nothing", TESTS,
                  teardown=cleanup)]


SUITE = Suite("teaching", "Teaching cases (PS3.15 de-identification, Clean Pixel Data)", groups)
