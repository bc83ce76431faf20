"""``core/imaging/frames.decode`` on JPEG baseline: the direct Pillow path (grey and YCbCr
frames) gives exactly what pydicom's Pillow plugin gives with ``as_rgb`` (its
``convert_color_space`` after a YCbCr decode), every other kind of JPEG frame goes through
pydicom, and a frame that does not fit its attributes or does not decode is refused (406).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

from sonobridge.core.errors import CoreError
from sonobridge.core.imaging import frames as F
from tests.dicom_data import DATA, cine

PYDICOM = Path(pydicom.data.__file__).parent / "test_files"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _jpeg_files() -> list[Path]:
    found = []
    for folder in (DATA, PYDICOM):
        for path in folder.glob("*.dcm"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = dcmread(path, stop_before_pixels=True)
            except Exception:  # damaged test files are not in the table
                continue
            meta = getattr(ds, "file_meta", {})
            if meta.get("TransferSyntaxUID") == JPEG_BASELINE and "Rows" in ds and \
                    path.name != "SC_rgb_jpeg.dcm":  # its pixel data is damaged
                found.append(path)
    return sorted(found, key=lambda p: (p.parent.name, p.name))


def metadata_of(ds) -> dict:
    return {tag: value for tag, value in ds.to_json_dict().items() if tag.startswith("0028")}


def first_frame(path: Path) -> tuple[bytes, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    return next(generate_frames(ds.PixelData, number_of_frames=count)), metadata_of(ds)


@pytest.mark.parametrize("path", _jpeg_files(), ids=lambda p: p.stem)
def test_jpeg_baseline_equals_pydicoms_pillow_plugin(path):
    raw, metadata = first_frame(path)
    reference = pixel_array(path, index=0, decoding_plugin="pillow")
    ours = F.decode(JPEG_BASELINE, raw, metadata)
    assert ours.shape == reference.shape and ours.dtype == reference.dtype
    assert int(np.abs(ours.astype(int) - reference.astype(int)).max()) == 0


def test_the_direct_path_is_taken_for_ycbcr_and_grey_only(monkeypatch):
    """Seen from the outside: pydicom's decoder is asked only for an RGB JPEG (no colour
    transform), never for the YCbCr cine frame or a grey frame."""
    asked = []
    decoder = F.get_decoder(JPEG_BASELINE)  # one decoder per syntax, shared
    original = decoder.as_array

    def as_array(*args, **kwargs):
        asked.append(kwargs.get("photometric_interpretation"))
        return original(*args, **kwargs)

    monkeypatch.setattr(decoder, "as_array", as_array)
    ds = cine("jpeg", frames=1)
    F.decode(JPEG_BASELINE, ds.expected_frames[0], metadata_of(ds))
    raw, metadata = first_frame(PYDICOM / "SC_jpeg_no_color_transform.dcm")
    rgb = F.decode(JPEG_BASELINE, raw, metadata)
    assert asked == ["RGB"]
    reference = pixel_array(PYDICOM / "SC_jpeg_no_color_transform.dcm",
                            decoding_plugin="pillow")
    assert int(np.abs(rgb.astype(int) - reference.astype(int)).max()) == 0


def test_decoded_bytes_are_the_decoders_own():
    ds = cine("jpeg", frames=1)
    array = F.decode(JPEG_BASELINE, ds.expected_frames[0], metadata_of(ds))
    data = F.decoded_bytes(array)
    assert data is array.base and len(data) == 48 * 64 * 3
    assert F.decoded_bytes(array[:, ::2]) == np.ascontiguousarray(array[:, ::2]).tobytes()


@pytest.mark.parametrize("change", ["rows", "truncated", "grey-as-colour"])
def test_a_frame_that_does_not_fit_is_refused(change):
    ds = cine("jpeg", frames=1)
    raw, metadata = ds.expected_frames[0], metadata_of(ds)
    if change == "rows":
        metadata["00280010"] = {"vr": "US", "Value": [50]}
    elif change == "truncated":
        raw = raw[:len(raw) // 2]
    else:  # a colour frame said to be grey: pydicom's path, which refuses it
        metadata["00280004"] = {"vr": "CS", "Value": ["MONOCHROME2"]}
        metadata["00280002"] = {"vr": "US", "Value": [1]}
    with pytest.raises(CoreError) as caught:
        F.decode(JPEG_BASELINE, raw, metadata)
    assert caught.value.status == 406
