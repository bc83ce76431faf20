"""Choosing what to send for an Accept header: the stored encoding whenever the client takes
it, a decode or a transcode only when asked, and a 406 naming what could be produced otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from sonobridge.core.imaging.frames import NATIVE, stored_media_type
from sonobridge.dicomweb.accept import MediaRange, parse_accept
from sonobridge.dicomweb.errors import DicomwebError

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
DICOM = "application/dicom"
OCTET = "application/octet-stream"


@dataclass(frozen=True)
class Choice:
    """``mode``: stored (as received), decode (to native pixels), native (stored native pixels,
    decoded when they need it: YBR, unused bits, planes), or a transfer syntax UID to
    transcode to. ``multipart``: answer multipart/related (else a single body)."""

    mode: str
    part_type: str
    transfer_syntax: str
    multipart: bool


def _ranges(accept: str | None, default: str) -> list[MediaRange]:
    ranges = parse_accept(accept)
    return ranges or parse_accept(default)


def choose_frames(accept: str | None, stored_ts: str, count: int) -> Choice:
    """For ``/frames``: ``Accept`` as OHIF, dicomweb-client and others send it."""
    stored_media = stored_media_type(stored_ts)
    for media_range in _ranges(accept, f'multipart/related; type="{OCTET}"'):
        multipart = media_range.media == "multipart/related"
        if not multipart and count > 1 and media_range.media not in ("*/*",):
            continue  # several frames need a multipart answer
        part = (media_range.part_type or OCTET) if multipart else media_range.media
        ts = media_range.transfer_syntax
        choice = _frame_choice(part, ts, stored_ts, stored_media)
        if choice is not None:
            mode, part_type, syntax = choice
            return Choice(mode, part_type, syntax, multipart or count > 1)
    raise DicomwebError(406, f"cannot produce any of Accept: {accept!r} for these frames: "
                        f"they are stored as {stored_media} ({stored_ts}); ask for that, "
                        f"for application/octet-stream (decoded), or transfer-syntax=*")


def _frame_choice(part: str, ts: str | None, stored_ts: str, stored_media: str
                  ) -> tuple[str, str, str] | None:
    if part in ("*/*", "*"):
        return "stored", stored_media, stored_ts
    if part == OCTET:
        if stored_ts in (EXPLICIT_LE, IMPLICIT_LE) and ts in (None, EXPLICIT_LE, IMPLICIT_LE):
            return "native", OCTET, stored_ts  # the stored bytes when decoded already
        if ts == "*" or ts == stored_ts:
            return "stored", stored_media if stored_ts not in NATIVE else OCTET, stored_ts
        if ts in (None, EXPLICIT_LE, IMPLICIT_LE):
            return "decode", OCTET, EXPLICIT_LE
        return None
    if part == stored_media and ts in (None, "*", stored_ts):
        return "stored", stored_media, stored_ts
    if part == "image/jpeg" and ts in (None, JPEG_BASELINE):
        return JPEG_BASELINE, "image/jpeg", JPEG_BASELINE
    return None


def choose_instances(accept: str | None, stored: set[str]) -> Choice:
    """For study, series and instance retrieval: application/dicom in some transfer syntax.

    Without a transfer-syntax parameter the stored encoding is sent (nothing is lost and nothing
    decoded); ``*`` means the same; Explicit VR Little Endian and JPEG baseline are produced on
    request."""
    for media_range in _ranges(accept, f'multipart/related; type="{DICOM}"'):
        multipart = media_range.media == "multipart/related"
        part = (media_range.part_type or DICOM) if multipart else media_range.media
        if part not in (DICOM, "*/*", "*") and not (not multipart and part == "*/*"):
            continue
        ts = media_range.transfer_syntax
        if ts in (None, "*") or (len(stored) == 1 and ts in stored):
            return Choice("stored", DICOM, "*", True)
        if ts in (EXPLICIT_LE, JPEG_BASELINE):
            return Choice(ts, DICOM, ts, True)
    raise DicomwebError(406, f"cannot produce any of Accept: {accept!r}; this server sends "
                        f"{DICOM} as stored (transfer-syntax=*), in Explicit VR Little Endian "
                        f"({EXPLICIT_LE}) or JPEG baseline ({JPEG_BASELINE})")
