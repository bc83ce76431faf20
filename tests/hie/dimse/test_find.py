"""C-FIND response identifiers: pre-encoded text values must write exactly what pydicom
would write for the same DICOM JSON, in both little-endian transfer syntaxes."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from sonobridge.hie.dimse.find import to_dataset

DATA = {
    "00080020": {"vr": "DA", "Value": ["20261201"]},
    "00080030": {"vr": "TM", "Value": ["101500"]},  # odd length: padded with a space
    "00080050": {"vr": "SH", "Value": ["ACC-1"]},
    "00080061": {"vr": "CS", "Value": ["US", "SR"]},  # multi-valued
    "00081030": {"vr": "LO"},  # present, empty
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Zhang^Wei", "Ideographic": "张^伟"}]},
    "00100020": {"vr": "LO", "Value": ["PID-1"]},
    "00101030": {"vr": "DS", "Value": [61.5]},  # left to pydicom
    "0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},  # odd length: padded with NUL
    "00201206": {"vr": "IS", "Value": [3]},
    "00280010": {"vr": "US", "Value": [600]},  # binary: left to pydicom
}
WANTED = [*DATA, "00081032", "00100030", "00400275"]  # + a sequence and absent keys


def _reference(level: str) -> Dataset:
    """What the identifier was before pre-encoding: pydicom's own JSON reader."""
    kept = {tag: DATA[tag] for tag in WANTED if tag in DATA}
    ds = Dataset.from_json(kept)
    ds.add_new(0x00081032, "SQ", [])
    ds.add_new(0x00100030, "DA", None)
    ds.add_new(0x00400275, "SQ", [])
    ds.QueryRetrieveLevel = level
    ds.RetrieveAETitle = "SONOBRIDGE"
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_identifier_bytes_match_pydicom(implicit):
    ours = encode(to_dataset(DATA, WANTED, "STUDY", "SONOBRIDGE", implicit), implicit, True,
                  False)
    assert ours == encode(_reference("STUDY"), implicit, True, False)
    back = decode(__import__("io").BytesIO(ours), implicit, True)
    assert str(back.PatientName) == "Zhang^Wei=张^伟"
    assert back.StudyInstanceUID == "1.2.3.4"
    assert back.ModalitiesInStudy == ["US", "SR"]
    assert back.PatientBirthDate == ""
    assert back.ProcedureCodeSequence == [] and back.RequestAttributesSequence == []
    assert back.PatientWeight == 61.5 and back.Rows == 600


def test_binary_json_values_are_not_taken_for_text():
    data = {"00091010": {"vr": "UN", "InlineBinary": "AAEC"}}
    ds = to_dataset(data, ["00091010"], "IMAGE", "SONOBRIDGE")
    assert ds[0x00091010].value == b"\x00\x01\x02"
