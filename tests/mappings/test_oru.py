"""``sonobridge.mappings.oru``: a DiagnosticReport -> ORU^R01 (HL7 v2.5.1).

Every segment of a report with text, a plain-text attachment and observations, exactly; the
result status (F, and C for a correction, per report status); the report text (conclusion,
text/plain forms, none); HL7 escaping; OBX-3 for the text; PID-3 and its authority; OBR and
ORC order numbers; timestamps.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from sonobridge.mappings.hl7v2 import V2_0203
from sonobridge.mappings.oru import NARRATIVE, STATUS, oru_r01, report_lines

LOINC = "http://loinc.org"

REPORT = {
    "resourceType": "DiagnosticReport", "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "24558-9", "display": "US Abdomen"}]},
    "effectiveDateTime": "2024-12-01T09:30:00+08:00",
    "issued": "2024-12-01T10:00:00+08:00",
    "conclusion": "Liver normal.\n\nGallbladder | stone ^ 5mm",
    "presentedForm": [
        {"contentType": "text/plain; charset=utf-8",
         "data": base64.b64encode("附件 line".encode()).decode()},
        {"contentType": "application/pdf", "data": "JVBERi0="},
    ],
}
ORDER = {"identifier": [{"type": {"coding": [{"code": "PLAC"}]}, "value": "P-1"},
                        {"type": {"coding": [{"code": "FILL"}]}, "value": "F-1"}],
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "45036003",
                              "display": "US abdomen"}]}}
PATIENT = {"identifier": [{"system": "urn:sonobridge:hl7:id:HOSP",
                           "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                           "value": "MRN1"}],
           "name": [{"family": "Wang", "given": ["Wei", "X"]}], "gender": "male",
           "birthDate": "1980-05-17"}
OBSERVATIONS = [
    {"status": "final", "valueQuantity": {"value": 14.5, "unit": "cm", "code": "cm"},
     "code": {"coding": [{"system": LOINC, "code": "11111-1", "display": "Liver length"}]}},
    {"status": "preliminary", "code": {"text": "Impression"}, "valueString": "a&b"},
    {"code": {"text": "no value"}},  # neither a quantity nor a string: no OBX
    {"status": "amended", "code": {"coding": [{"code": "L1"}]},
     "valueQuantity": {"value": 3, "unit": "mm"}},
]


def message(report: dict[str, Any] = REPORT, order: dict[str, Any] = ORDER,
            patient: dict[str, Any] = PATIENT, observations: list[dict[str, Any]] | None = None,
            **kwargs: Any) -> list[str]:
    text = oru_r01(report, order, patient, observations or [], control_id="C1",
                   now="20241201100500+0800", sending=("SONO", "TELEUS"),
                   receiving=("HIS", "HOSP"),
                   patient_id_system="urn:sonobridge:dicom:patient-id", **kwargs)
    assert text.endswith("\r")
    assert "\n" not in text
    return text.split("\r")[:-1]


def segment(lines: list[str], name: str) -> list[str]:
    (found,) = [line for line in lines if line.startswith(name + "|")]
    return found.split("|")


def test_exact_message():
    assert message(observations=OBSERVATIONS) == [
        "MSH|^~\\&|SONO|TELEUS|HIS|HOSP|20241201100500+0800||ORU^R01^ORU_R01|C1|P|2.5.1|||AL|NE"
        "||UNICODE UTF-8",
        "PID|1||MRN1^^^HOSP^MR||Wang^Wei X||19800517|M",
        "ORC|RE|P-1|F-1||CM",
        "OBR|1|P-1|F-1|45036003^US abdomen^SCT|||20241201093000+0800|||||||||||||||"
        "20241201100000+0800|||F",
        "OBX|1|TX|24558-9^US Abdomen^LN|1|Liver normal.||||||F",
        "OBX|2|TX|24558-9^US Abdomen^LN|1|Gallbladder \\F\\ stone \\S\\ 5mm||||||F",
        "OBX|3|TX|24558-9^US Abdomen^LN|1|附件 line||||||F",
        "OBX|4|NM|11111-1^Liver length^LN||14.5|cm|||||F",
        "OBX|5|ST|^Impression||a\\T\\b||||||P",
        "OBX|6|NM|L1^^L||3|mm|||||C",
    ]


def test_field_positions():
    lines = message(observations=OBSERVATIONS[:1])
    msh = segment(lines, "MSH")
    # MSH-1 is the separator itself, so field n of MSH is msh[n - 1]
    assert (msh[8], msh[9], msh[11], msh[14], msh[15], msh[17]) == \
        ("ORU^R01^ORU_R01", "C1", "2.5.1", "AL", "NE", "UNICODE UTF-8")
    obr = segment(lines, "OBR")
    assert (obr[2], obr[3], obr[7], obr[22], obr[25]) == \
        ("P-1", "F-1", "20241201093000+0800", "20241201100000+0800", "F")
    assert len(obr) == 26
    for line in lines:
        if line.startswith("OBX|"):
            assert len(line.split("|")) == 12  # OBX-11, the result status, is the last


@pytest.mark.parametrize("status,correction,expected", [
    ("final", False, "F"),
    ("final", True, "C"),
    ("amended", False, "C"),
    ("corrected", False, "C"),
    ("appended", True, "C"),
    ("preliminary", False, "P"),
    ("preliminary", True, "P"),  # only a final result becomes a correction
    ("cancelled", True, "X"),
    ("entered-in-error", False, "W"),
    ("registered", False, "F"),  # not in HL7 table 0085: F
    (None, False, "F"),
    (None, True, "C"),
])
def test_result_status(status, correction, expected):
    report = {k: v for k, v in REPORT.items() if k != "status"}
    if status is not None:
        report["status"] = status
    lines = message(report, correction=correction)
    assert segment(lines, "OBR")[25] == expected
    text_obx = [line.split("|") for line in lines if line.startswith("OBX|")]
    assert text_obx and all(obx[2] == "TX" and obx[11] == expected for obx in text_obx)


def test_a_correction_does_not_change_the_observations_status():
    lines = message(observations=OBSERVATIONS[:1], correction=True)
    assert segment(lines, "OBR")[25] == "C"
    assert lines[-1] == "OBX|4|NM|11111-1^Liver length^LN||14.5|cm|||||F"


def test_status_table():
    assert STATUS == {"final": "F", "amended": "C", "corrected": "C", "appended": "C",
                      "cancelled": "X", "entered-in-error": "W", "preliminary": "P"}


@pytest.mark.parametrize("report,lines", [
    ({"conclusion": "one\r\ntwo\n  \nthree"}, ["one", "two", "three"]),
    ({}, ["(no report text)"]),
    ({"conclusion": "   \n"}, ["(no report text)"]),
    ({"presentedForm": [{"contentType": "text/plain",
                         "data": base64.b64encode(b"a\nb").decode()}]}, ["a", "b"]),
    ({"presentedForm": [{"contentType": "text/plain", "data": "!!not base64"}]},
     ["(no report text)"]),
    ({"presentedForm": [{"contentType": "text/plain",
                         "data": base64.b64encode(b"\xff\xfe").decode()}]},
     ["(no report text)"]),  # not UTF-8: skipped
    ({"presentedForm": [{"contentType": "text/html",
                         "data": base64.b64encode(b"<p>x</p>").decode()}]},
     ["(no report text)"]),
    ({"conclusion": "first", "presentedForm": [
        {"contentType": "text/plain", "data": base64.b64encode(b"second").decode()}]},
     ["first", "second"]),
])
def test_report_lines(report, lines):
    assert report_lines(report) == lines


@pytest.mark.parametrize("code,obx3", [
    ({"coding": [{"system": LOINC, "code": "24558-9", "display": "US Abdomen"}]},
     "24558-9^US Abdomen^LN"),
    ({"coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "x"}]},
     "1^x^SCT"),
    ({"coding": [{"system": "urn:local", "code": "R^1"}], "text": "Report"}, "R\\S\\1^Report^L"),
    ({"text": "Report only"}, NARRATIVE),  # no code: LOINC's narrative report
    (None, NARRATIVE),
])
def test_text_obx_identifier(code, obx3):
    report = {"status": "final", "conclusion": "x"}
    if code is not None:
        report["code"] = code
    assert segment(message(report), "OBX")[3] == obx3


def test_obr4_from_the_order_else_the_report():
    report = {"status": "final", "conclusion": "x",
              "code": {"coding": [{"system": LOINC, "code": "9-9", "display": "R"}]}}
    assert segment(message(report, order={}), "OBR")[4] == "9-9^R^LN"
    assert segment(message(report), "OBR")[4] == "45036003^US abdomen^SCT"


@pytest.mark.parametrize("text,escaped", [
    ("a|b", "a\\F\\b"), ("a^b", "a\\S\\b"), ("a~b", "a\\R\\b"), ("a&b", "a\\T\\b"),
    ("a\\b", "a\\E\\b"), ("\\F\\", "\\E\\F\\E\\"), ("plain", "plain"),
])
def test_escaping(text, escaped):
    assert segment(message({"status": "final", "conclusion": text}), "OBX")[5] == escaped


@pytest.mark.parametrize("patient,pid3", [
    (PATIENT, "MRN1^^^HOSP^MR"),
    ({"identifier": [{"system": "urn:sonobridge:dicom:patient-id", "value": "D1"}]},
     "D1^^^^MR"),  # the configured patient id system, no authority
    ({"identifier": [{"system": "urn:oid:1.2.3",
                      "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                      "value": "M^2"}]}, "M\\S\\2^^^^MR"),
    ({"identifier": [{"system": "urn:x", "type": {"coding": [{"code": "MR"}]},
                      "value": "NOSYS"}]}, ""),  # MR only from the v2-0203 system
    ({"identifier": [{"system": "urn:x", "value": "other"}]}, ""),
    ({}, ""),
])
def test_pid3(patient, pid3):
    assert segment(message(patient=patient), "PID")[3] == pid3


@pytest.mark.parametrize("patient,pid5,pid7,pid8", [
    ({"name": [{"family": "A|B", "given": ["C"]}], "gender": "female",
      "birthDate": "2001-02-03"}, "A\\F\\B^C", "20010203", "F"),
    ({"name": [{"given": ["Only"]}], "gender": "unknown"}, "^Only", "", "U"),
    ({"name": [{"family": "Solo"}], "gender": "other"}, "Solo", "", "O"),
    ({"gender": "nonsense"}, "", "", ""),
])
def test_pid_name_birth_sex(patient, pid5, pid7, pid8):
    pid = segment(message(patient=patient), "PID")
    assert (pid[5], pid[7], pid[8]) == (pid5, pid7, pid8)


@pytest.mark.parametrize("identifiers,placer,filler", [
    ([("PLAC", "P"), ("FILL", "F")], "P", "F"),
    ([("PLAC", "P"), ("ACSN", "A")], "P", "A"),  # the accession when there is no filler
    ([("FILL", "F"), ("ACSN", "A")], "", "F"),
    ([], "", ""),
])
def test_order_numbers(identifiers, placer, filler):
    order = {"identifier": [{"type": {"coding": [{"code": code}]}, "value": value}
                            for code, value in identifiers]}
    lines = message(order=order)
    assert segment(lines, "ORC")[2:4] == [placer, filler]
    assert segment(lines, "OBR")[2:4] == [placer, filler]


@pytest.mark.parametrize("value,dtm", [
    ("2024-12-01T09:30:00+08:00", "20241201093000+0800"),
    ("2024-12-01T01:30:00Z", "20241201013000+0000"),
    ("2024-12-01T09:30:00.123-05:00", "20241201093000-0500"),
    ("2024-12-01T09:30:00", "20241201093000"),
    ("2024-12-01", "20241201"),
    ("2024-12", "202412"),
    ("2024", "2024"),
    ("2024-12-01Tnoon", ""),
    (None, ""),
])
def test_timestamps(value, dtm):
    report = {"status": "final", "conclusion": "x"}
    if value is not None:
        report["effectiveDateTime"] = value
        report["issued"] = value
    obr = segment(message(report), "OBR")
    assert (obr[7], obr[22]) == (dtm, dtm)


def test_charset_and_observation_numbering():
    obs = [{"code": {"text": "skip"}},
           {"code": {"text": "s"}, "valueString": "v"},
           {"code": {"text": "q"}, "valueQuantity": {"unit": "cm"}},  # no value: skipped
           {"code": {"text": "n"}, "valueQuantity": {"value": 0, "unit": "cm"}}]
    lines = message({"status": "final", "conclusion": "x"}, observations=obs,
                    charset="GB 18030")
    assert segment(lines, "MSH")[17] == "GB 18030"
    assert [line.split("|")[:3] for line in lines if line.startswith("OBX|")] == [
        ["OBX", "1", "TX"], ["OBX", "2", "ST"], ["OBX", "3", "NM"]]
    assert lines[-1] == "OBX|3|NM|^n||0|cm|||||F"
