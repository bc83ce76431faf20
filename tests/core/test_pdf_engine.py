"""WeasyPrint loaded in the process must not make a damaged JPEG frame decode."""

from __future__ import annotations

import pytest
from PIL import ImageFile

from sonobridge.core.errors import CoreError
from sonobridge.core.imaging.frames import decode
from sonobridge.core.pdf.engine import weasyprint
from tests.dicomweb.test_bad_frames import broken_second_frame


def test_loading_weasyprint_leaves_pillow_strict():
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        module = weasyprint()
    except OSError as exc:  # the Pango libraries are missing (make peers)
        pytest.skip(f"WeasyPrint cannot load: {exc}")
    assert module.HTML is not None
    assert ImageFile.LOAD_TRUNCATED_IMAGES is before is False


def test_a_damaged_frame_still_does_not_decode_once_weasyprint_is_loaded():
    try:
        weasyprint()
    except OSError as exc:
        pytest.skip(f"WeasyPrint cannot load: {exc}")
    ds, bad = broken_second_frame()
    metadata = {"00280010": {"Value": [ds.Rows]}, "00280011": {"Value": [ds.Columns]},
                "00280002": {"Value": [ds.SamplesPerPixel]},
                "00280004": {"Value": [ds.PhotometricInterpretation]}}
    with pytest.raises(CoreError) as refused:
        decode(ds.file_meta.TransferSyntaxUID, bad, metadata)
    assert refused.value.status == 406
