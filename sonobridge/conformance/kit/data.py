"""Test data the kit makes: a small ultrasound cine loop (Ultrasound Multi-frame Image Storage,
native RGB, Explicit VR Little Endian) with fresh UIDs, and multipart bodies."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
ROWS, COLS, FRAMES = 32, 48, 4


@dataclass(frozen=True)
class Cine:
    study: str
    series: str
    sop: str
    patient_id: str
    accession: str
    data: bytes
    frames: list[bytes]


def _pixels(seed: int) -> np.ndarray:
    """A fan of speckle with a pulsing dark chamber: enough to tell frames apart."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)
    r = np.hypot(xx - COLS / 2, yy)
    theta = np.arctan2(xx - COLS / 2, yy + 1e-3)
    sector = (np.abs(theta) < 0.66) & (r < ROWS * 0.95)
    out = np.zeros((FRAMES, ROWS, COLS, 3), np.uint8)
    for f in range(FRAMES):
        speckle = rng.rayleigh(0.4, size=(ROWS, COLS))
        chamber = np.hypot(xx - COLS / 2, yy - ROWS / 2) < 5 + 2 * np.sin(f)
        grey = np.clip(speckle * 170, 0, 255) * sector * np.where(chamber, 0.15, 1.0)
        out[f] = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
        out[f, 0:2, 0:f + 1] = (0, 200, 0)  # a frame marker, different in every frame
    return out


def make_cine(run_tag: str, seed: int = 7, study: str | None = None) -> Cine:
    pixels = _pixels(seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(US_MULTIFRAME)
    sop = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    now = datetime.now(UTC)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = US_MULTIFRAME
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ("K" + uuid.uuid4().hex)[:16]
    ds.Modality = "US"
    ds.Manufacturer = "SonoBridge conformance kit"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "KIT^CONFORMANCE"
    ds.PatientID = run_tag[:64]
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "O"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.StudyDescription = "Conformance kit cine"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.NumberOfFrames = FRAMES
    ds.FrameTime = 33.3
    ds.FrameIncrementPointer = (0x0018, 0x1063)
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    frames = [pixels[f].tobytes() for f in range(FRAMES)]
    return Cine(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(sop), ds.PatientID,
                ds.AccessionNumber, out.getvalue(), frames)


def multipart(parts: list[bytes], content_type: str) -> tuple[bytes, str]:
    boundary = "sbkit-" + uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: " + content_type.encode()
                    + b"\r\n\r\n" + p + b"\r\n" for p in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="{content_type}"; boundary={boundary}'


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body: (headers, content). Raises ValueError when the
    body is not one."""
    boundary = None
    for item in content_type.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not content_type.lower().startswith("multipart/") or not boundary:
        raise ValueError(f"not multipart: {content_type!r}")
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise ValueError("no parts between the boundaries")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a part without a blank line after its headers")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        parts.append((headers, content))
    return parts
