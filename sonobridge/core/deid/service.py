"""De-identifying one stored DICOM object into a new file: the attribute actions
(``mappings/deid``), Clean Pixel Data (``pixels.py``), a new file meta, and a last check
that no identifying string of the patient is left in any text value.

Fail-closed: an object that cannot be cleaned safely is refused with a 422 ``CoreError``
naming why (a SOP class not known here, pixels without regions or mask, a frame that does
not decode, a syntax that cannot be re-encoded, a leak found by the last check).
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from sonobridge.core.deid import pixels
from sonobridge.core.errors import CoreError
from sonobridge.core.limits import Limits
from sonobridge.mappings.deid import Context, Options, context_for, deidentify, identifying_in
from sonobridge.mappings.deid.attributes import text_to_check
from sonobridge.mappings.deid.text import contains

log = logging.getLogger("sonobridge.deid")

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1455.1"
# SOP classes whose every attribute and pixel this module knows how to clean. Anything else
# (encapsulated PDF, waveforms, raw data, private classes with free text) is refused.
IMAGES = {
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image (retired)",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image (retired)",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture",
}
DOCUMENTS = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State",
    "1.2.840.10008.5.1.4.1.1.11.2": "Color Softcopy Presentation State",
    "1.2.840.10008.5.1.4.1.1.11.3": "Pseudo-Color Softcopy Presentation State",
}
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFER = 1024 * 1024  # pixel data stays on disk while attributes are cleaned


@dataclass
class Cleaned:
    """One de-identified object, written to ``path``."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    original_sop_instance_uid: str
    frames: int
    transfer_syntax: str


def load_key(setting: str, keys_dir: Path) -> bytes:
    """The HMAC key: the setting's text, else a random key kept in ``keys_dir/deid.key``
    (made on first use, readable by the owner only). Losing it changes every pseudonym and
    UID the next case gets; keeping it secret keeps them unlinkable to the originals."""
    if setting:
        if len(setting) < 16:
            raise ValueError("SONOBRIDGE_DEID_KEY must be at least 16 characters")
        return setting.encode("utf-8")
    path = keys_dir / "deid.key"
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text("utf-8").strip().encode("utf-8")


class Deidentifier:
    """Cleans objects with one key and one set of per-model masks."""

    def __init__(self, key: bytes, masks: dict[str, pixels.ModelMask] | None = None,
                 limits: Limits | None = None) -> None:
        self.key = key
        self.masks = masks or {}
        self.limits = limits or Limits()  # frame size, decoded bytes, time per object

    def context(self, headers: list[Dataset], options: Options,
                extra_identifying: tuple[str, ...] = ()) -> Context:
        """One context for all objects of one patient: the pseudonyms and date shift come from
        the patient's ID and its issuer, the strings to clean from every object's header."""
        if not headers:
            raise CoreError(422, "processing", "nothing to de-identify")
        first = headers[0]
        patient = f"{first.get('IssuerOfPatientID', '') or ''}|{first.get('PatientID', '') or ''}"
        identifying: set[str] = set(extra_identifying)
        for ds in headers:
            identifying.update(identifying_in(ds))
        return context_for(self.key, options, patient, tuple(sorted(identifying)))

    def clean_file(self, source: Path, ctx: Context, out: Path) -> Cleaned:
        """De-identify the Part 10 file ``source`` into ``out`` (or raise a 422)."""
        try:
            ds = dcmread(source, defer_size=DEFER)
        except Exception as exc:  # pydicom raises many kinds on garbage
            raise CoreError(422, "processing", f"not a readable DICOM object: {exc}") from None
        sop_class = str(ds.get("SOPClassUID", "") or "")
        original = str(ds.get("SOPInstanceUID", "") or "")
        if sop_class not in IMAGES and sop_class not in DOCUMENTS:
            raise CoreError(422, "processing", f"SOP class {sop_class} ({UID(sop_class).name}) "
                            "is not one this server can de-identify safely; it is not "
                            "published", expression=["(0008,0016)"])
        has_pixels = "PixelData" in ds
        keep = None
        if has_pixels:
            if not ctx.options.clean_pixel_data:
                raise CoreError(422, "processing", "an image is de-identified with the Clean "
                                "Pixel Data option only: text may be burned into its pixels")
            self.limits.frame(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0),
                              int(ds.get("SamplesPerPixel", 1) or 1),
                              int(ds.get("BitsAllocated", 8) or 8), "a frame to clean")
            keep = pixels.keep_mask(ds, self.masks)
        stored = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE))
        outcome = deidentify(ds, ctx)
        syntax = EXPLICIT_LE
        native = None
        if keep is not None:
            syntax, native = pixels.clean_pixels(ds, source, keep, self.limits.budget().check)
            if outcome.overlay_groups:
                pixels.clean_overlays(ds, outcome.overlay_groups, keep)
        elif outcome.overlay_groups:
            # No image here to take regions from (a presentation state's own overlays): the
            # bitmaps cannot be cleaned, so they go.
            pixels.remove_groups(ds, outcome.overlay_groups)
        elif stored not in (EXPLICIT_LE, "1.2.840.10008.1.2"):
            syntax = EXPLICIT_LE  # no pixels: any syntax's attributes are written the same
        self._check(ds, ctx)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = UID(syntax)
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = "SONOBRIDGE"
        ds.file_meta = meta
        if native is None:
            ds.save_as(out, enforce_file_format=True)
        else:  # the elements, then the cleaned frames streamed after them
            for elem in [e for e in ds if e.tag > 0x7FE00010]:
                del ds[elem.tag]  # trailing padding and signatures: nothing to keep
            ds.save_as(out, enforce_file_format=True)
            with out.open("ab") as f:
                native.write(f)
        return Cleaned(out, sop_class, str(ds.SOPInstanceUID), str(ds.StudyInstanceUID),
                       str(ds.SeriesInstanceUID), original,
                       int(ds.get("NumberOfFrames", 1) or 1) if has_pixels else 0, syntax)

    @staticmethod
    def _check(ds: Dataset, ctx: Context) -> None:
        """Fail-closed: no text value may still hold the patient's name or IDs."""
        for tag, text in text_to_check(ds):
            if contains(text, ctx.identifying):
                where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
                raise CoreError(422, "processing", f"{where} still holds one of the patient's "
                                "names or identifiers after de-identification; the object is "
                                "not published", expression=[where])
