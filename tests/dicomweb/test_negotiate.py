"""``sonobridge.dicomweb.negotiate``: what is sent for an Accept header and a stored syntax.

``choose_frames`` (``/frames``: the stored encoding, a decode to native pixels, or a JPEG
baseline transcode; single body or multipart) and ``choose_instances`` (study, series and
instance retrieval: application/dicom as stored, Explicit VR Little Endian or JPEG baseline),
and the 406 ``DicomwebError`` each raises when nothing asked for can be produced.
"""

from __future__ import annotations

import pytest

from sonobridge.dicomweb.errors import DicomwebError
from sonobridge.dicomweb.negotiate import Choice, choose_frames, choose_instances

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
JPEG = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
MP4 = "1.2.840.10008.1.2.4.102"
OCTET = "application/octet-stream"
DICOM = "application/dicom"


def mp(part: str, ts: str | None = None, q: str | None = None) -> str:
    text = f'multipart/related; type="{part}"'
    if ts is not None:
        text += f"; transfer-syntax={ts}"
    if q is not None:
        text += f"; q={q}"
    return text


# ------------------------------------------------------------------------------ frames

@pytest.mark.parametrize("accept,stored,count,expected", [
    # no Accept: multipart octet-stream, i.e. native pixels (a decode when compressed; stored
    # native frames as they are when they need no decoding: see Archive.native_frames)
    (None, EXPLICIT, 1, Choice("native", OCTET, EXPLICIT, True)),
    (None, IMPLICIT, 1, Choice("native", OCTET, IMPLICIT, True)),
    (None, JPEG, 1, Choice("decode", OCTET, EXPLICIT, True)),
    ("", J2K, 3, Choice("decode", OCTET, EXPLICIT, True)),
    # octet-stream without transfer-syntax or with a little endian one
    (mp(OCTET), BIG_ENDIAN, 1, Choice("decode", OCTET, EXPLICIT, True)),
    (mp(OCTET, EXPLICIT), JPEG, 1, Choice("decode", OCTET, EXPLICIT, True)),
    (mp(OCTET, IMPLICIT), RLE, 2, Choice("decode", OCTET, EXPLICIT, True)),
    (mp(OCTET, EXPLICIT), EXPLICIT, 1, Choice("native", OCTET, EXPLICIT, True)),
    # stored implicit LE frames are native pixels (the pixel bytes are the same), and the
    # part's transfer-syntax names the stored syntax, not the one asked for
    (mp(OCTET, EXPLICIT), IMPLICIT, 1, Choice("native", OCTET, IMPLICIT, True)),
    # transfer-syntax=* or the stored one: as stored, under the stored media type
    (mp(OCTET, "*"), JPEG, 1, Choice("stored", "image/jpeg", JPEG, True)),
    (mp(OCTET, "*"), EXPLICIT, 1, Choice("stored", OCTET, EXPLICIT, True)),
    (mp(OCTET, "*"), BIG_ENDIAN, 1, Choice("stored", OCTET, BIG_ENDIAN, True)),
    (mp(OCTET, J2K), J2K, 1, Choice("stored", "image/jp2", J2K, True)),
    # the stored media type itself
    (mp("image/jpeg"), JPEG, 2, Choice("stored", "image/jpeg", JPEG, True)),
    (mp("image/jpeg", "*"), JPEG_LOSSLESS, 1,
     Choice("stored", "image/jpeg", JPEG_LOSSLESS, True)),
    (mp("image/jls", JLS), JLS, 1, Choice("stored", "image/jls", JLS, True)),
    (mp("image/jp2"), J2K, 1, Choice("stored", "image/jp2", J2K, True)),
    (mp("image/x-dicom-rle"), RLE, 1, Choice("stored", "image/x-dicom-rle", RLE, True)),
    (mp("video/mp4"), MP4, 1, Choice("stored", "video/mp4", MP4, True)),
    # JPEG baseline made from something else
    (mp("image/jpeg"), J2K, 1, Choice(JPEG, "image/jpeg", JPEG, True)),
    (mp("image/jpeg", JPEG), EXPLICIT, 1, Choice(JPEG, "image/jpeg", JPEG, True)),
    (mp("image/jpeg", JPEG), JPEG_LOSSLESS, 1, Choice(JPEG, "image/jpeg", JPEG, True)),
    # a single frame may come as a single body
    ("image/jpeg", JPEG, 1, Choice("stored", "image/jpeg", JPEG, False)),
    ("image/jpeg", J2K, 1, Choice(JPEG, "image/jpeg", JPEG, False)),
    (OCTET, EXPLICIT, 1, Choice("native", OCTET, EXPLICIT, False)),
    (f"{OCTET}; transfer-syntax=*", JLS, 1, Choice("stored", "image/jls", JLS, False)),
    ("*/*", JPEG, 1, Choice("stored", "image/jpeg", JPEG, False)),
    ("*/*", EXPLICIT, 1, Choice("stored", OCTET, EXPLICIT, False)),
    # several frames: a single-body range is skipped, */* becomes multipart
    ("*/*", J2K, 4, Choice("stored", "image/jp2", J2K, True)),
    (f"image/jpeg, {mp(OCTET)}", JPEG, 2, Choice("decode", OCTET, EXPLICIT, True)),
    # multipart with type */*: as stored
    (mp("*/*"), J2K, 1, Choice("stored", "image/jp2", J2K, True)),
    # the first range that can be produced wins, in q order
    (f"{mp('image/jls')}, {mp(OCTET, '*', q='0.5')}", J2K, 1,
     Choice("stored", "image/jp2", J2K, True)),
    (f"{mp(OCTET, q='0.2')}, {mp('image/jp2', q='0.9')}", J2K, 1,
     Choice("stored", "image/jp2", J2K, True)),
    (f"{mp(OCTET, q='0.9')}, {mp('image/jp2', q='0.2')}", J2K, 1,
     Choice("decode", OCTET, EXPLICIT, True)),
    # every range refused with q=0 is as no Accept at all: the default (RFC 9110 allows
    # disregarding the header rather than answering 406)
    (f"{mp('image/jpeg')}; q=0", JPEG, 1, Choice("decode", OCTET, EXPLICIT, True)),
])
def test_choose_frames(accept, stored, count, expected):
    assert choose_frames(accept, stored, count) == expected


@pytest.mark.parametrize("accept,stored,count", [
    (mp("image/jls"), JPEG, 1),  # no JPEG-LS encoder
    (mp("image/jp2"), EXPLICIT, 1),
    (mp(OCTET, J2K), JPEG, 1),  # a transfer syntax that is neither stored nor native
    (mp(OCTET, BIG_ENDIAN), EXPLICIT, 1),
    (mp("image/jpeg", JPEG_LOSSLESS), JPEG, 1),  # only baseline is made
    (mp("image/jpeg", J2K), J2K, 1),
    ("image/jpeg", JPEG, 2),  # several frames need multipart
    (OCTET, EXPLICIT, 3),
    ("text/html", EXPLICIT, 1),
    (mp("application/dicom"), EXPLICIT, 1),
])
def test_choose_frames_not_acceptable(accept, stored, count):
    with pytest.raises(DicomwebError) as err:
        choose_frames(accept, stored, count)
    assert err.value.status == 406
    assert err.value.code == "not-supported"
    assert stored in err.value.message
    assert repr(accept) in err.value.message


# ------------------------------------------------------------------------------ instances

STORED_AS = Choice("stored", DICOM, "*", True)


@pytest.mark.parametrize("accept,stored,expected", [
    (None, {JPEG}, STORED_AS),
    ("", {EXPLICIT, JPEG}, STORED_AS),
    (mp(DICOM), {J2K}, STORED_AS),
    (mp(DICOM, "*"), {J2K, EXPLICIT}, STORED_AS),
    (DICOM, {JPEG}, STORED_AS),  # a single-part range: still answered multipart
    ("*/*", {JPEG}, STORED_AS),
    (mp("*/*"), {JPEG}, STORED_AS),
    ("multipart/related", {JPEG}, STORED_AS),
    # the one stored syntax asked for by name
    (mp(DICOM, J2K), {J2K}, STORED_AS),
    (mp(DICOM, IMPLICIT), {IMPLICIT}, STORED_AS),
    (mp(DICOM, EXPLICIT), {EXPLICIT}, STORED_AS),
    # transcodes on request
    (mp(DICOM, EXPLICIT), {JPEG}, Choice(EXPLICIT, DICOM, EXPLICIT, True)),
    (mp(DICOM, EXPLICIT), {EXPLICIT, JPEG}, Choice(EXPLICIT, DICOM, EXPLICIT, True)),
    (mp(DICOM, JPEG), {EXPLICIT}, Choice(JPEG, DICOM, JPEG, True)),
    (mp(DICOM, JPEG), {JPEG, J2K}, Choice(JPEG, DICOM, JPEG, True)),
    (f"{DICOM}; transfer-syntax={EXPLICIT}", {J2K}, Choice(EXPLICIT, DICOM, EXPLICIT, True)),
    # ranges for other part types are skipped; the first usable one wins
    (f"{mp('image/jpeg')}, {mp(DICOM, EXPLICIT, q='0.5')}", {JPEG},
     Choice(EXPLICIT, DICOM, EXPLICIT, True)),
    (f"{mp(DICOM, JLS)}, {mp(DICOM, q='0.1')}", {EXPLICIT}, STORED_AS),
    (f"{mp(DICOM, JPEG, q='0.5')}, {mp(DICOM, EXPLICIT, q='0.8')}", {J2K},
     Choice(EXPLICIT, DICOM, EXPLICIT, True)),
    (f"{mp('image/jpeg')}; q=0", {JPEG}, STORED_AS),  # as no Accept at all
])
def test_choose_instances(accept, stored, expected):
    assert choose_instances(accept, stored) == expected


@pytest.mark.parametrize("accept,stored", [
    (mp(DICOM, J2K), {JPEG}),  # neither stored nor one this server makes
    (mp(DICOM, JLS), {JLS, EXPLICIT}),  # stored, but not the only syntax of the set
    (mp(DICOM, IMPLICIT), {EXPLICIT}),
    (mp(DICOM, BIG_ENDIAN), {EXPLICIT, JPEG}),
    (mp(OCTET), {EXPLICIT}),
    (mp("image/jpeg"), {JPEG}),
    ("image/jpeg", {JPEG}),
    ("application/dicom+json", {EXPLICIT}),
])
def test_choose_instances_not_acceptable(accept, stored):
    with pytest.raises(DicomwebError) as err:
        choose_instances(accept, stored)
    assert err.value.status == 406
    assert err.value.body() == {"status": 406, "error": "not_acceptable",
                                "message": err.value.message}
    assert err.value.message.startswith(f"cannot produce any of Accept: {accept!r}")
