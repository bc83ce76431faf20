"""ORU^R01 measurements (issue 14 item 5): the SR's measurement Observations go out as NM OBX
segments with their coded names (LOINC, SNOMED CT, DCM as HL7 table 0396 names them) and their
units as CE with the UCUM system, read back with the ``hl7`` parser as a HIS would."""

from __future__ import annotations

from typing import Any

import hl7
import pytest

from sonobridge.mappings.oru import oru_r01

DCM = "http://dicom.nema.org/resources/ontology/DCM"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


def measurement(system: str, code: str, display: str, value: Any, unit: str,
                unit_code: str | None = None, unit_system: str | None = UCUM,
                status: str = "final") -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value, "unit": unit}
    if unit_code is not None:
        quantity["code"] = unit_code
    if unit_system is not None:
        quantity["system"] = unit_system
    return {"resourceType": "Observation", "status": status,
            "code": {"coding": [{"system": system, "code": code, "display": display}]},
            "valueQuantity": quantity}


BIOMETRY = [
    measurement(LOINC, "11820-8", "Biparietal diameter", 8.21, "cm", "cm"),
    measurement(LOINC, "11779-6", "Head circumference", 30.4, "cm", "cm"),
    measurement(LOINC, "11979-2", "Abdominal circumference", 29, "cm", "cm"),
    measurement(LOINC, "11963-6", "Femur length", 6.3, "cm", "cm"),
    measurement(SCT, "11726-7", "Peak systolic velocity", 112.5, "cm/s", "cm/s"),
    measurement(DCM, "G-0380", "LVEF", 62, "%", "%"),
]


def parsed(observations: list[dict[str, Any]]) -> hl7.Message:
    text = oru_r01({"status": "final", "conclusion": "双顶径正常"}, {}, {}, observations,
                   control_id="C1", now="20261203100000+0800", sending=("SONO", "TELEUS"),
                   receiving=("HIS", "HOSP"), patient_id_system="urn:x")
    return hl7.parse(text)


def nm_segments(message: hl7.Message) -> list[hl7.Segment]:
    return [seg for seg in message.segments("OBX") if str(seg[2]) == "NM"]


def test_each_measurement_is_an_nm_obx_with_code_value_and_ucum_units() -> None:
    segs = nm_segments(parsed(BIOMETRY))
    assert len(segs) == len(BIOMETRY)
    got = [(str(s(3)(1)(1)), str(s(3)(1)(2)), str(s(3)(1)(3)), str(s(5)), str(s(6)(1)(1)),
            str(s(6)(1)(3)), str(s(11))) for s in segs]
    assert got == [
        ("11820-8", "Biparietal diameter", "LN", "8.21", "cm", "UCUM", "F"),
        ("11779-6", "Head circumference", "LN", "30.4", "cm", "UCUM", "F"),
        ("11979-2", "Abdominal circumference", "LN", "29", "cm", "UCUM", "F"),
        ("11963-6", "Femur length", "LN", "6.3", "cm", "UCUM", "F"),
        ("11726-7", "Peak systolic velocity", "SCT", "112.5", "cm/s", "UCUM", "F"),
        ("G-0380", "LVEF", "DCM", "62", "%", "UCUM", "F"),
    ]
    # set ids run on after the report's text OBX
    assert [str(s(1)) for s in parsed(BIOMETRY).segments("OBX")] == [str(i) for i in range(1, 8)]


def test_units_text_in_ce_2() -> None:
    (seg,) = nm_segments(parsed([measurement(LOINC, "x", "x", 1.5, "mm/s", "mm/s")]))
    assert str(seg(6)) == "mm/s^mm/s^UCUM"
    assert str(seg(6)(1)(2)) == "mm/s"


def test_a_unit_without_ucum_is_its_text_only() -> None:
    (seg,) = nm_segments(parsed([measurement(LOINC, "x", "x", 3, "beats", None, None)]))
    assert str(seg(6)) == "beats"


def test_a_unit_with_a_code_of_another_system_is_not_called_ucum() -> None:
    (seg,) = nm_segments(parsed([measurement(LOINC, "x", "x", 3, "bpm", "bpm", "urn:local")]))
    assert str(seg(6)) == "bpm"


def test_unit_with_hl7_delimiters_is_escaped() -> None:
    obs = measurement(LOINC, "x", "x", 3, "10^9/L", "10*9/L")
    (seg,) = nm_segments(parsed([obs]))
    assert str(seg(6)(1)(1)) == "10*9/L"
    raw = oru_r01({"status": "final"}, {}, {}, [obs], control_id="C", now="1",
                  sending=("a", "b"), receiving=("c", "d"), patient_id_system="s")
    assert "10*9/L^10\\S\\9/L^UCUM" in raw


@pytest.mark.parametrize(("value", "nm"), [
    (1e-05, "0.00001"), (2.5e20, "250000000000000000000"), (0, "0"), (-3.25, "-3.25"),
    ("7.10", "7.10"),
])
def test_nm_is_plain_decimal(value: Any, nm: str) -> None:
    (seg,) = nm_segments(parsed([measurement(LOINC, "x", "x", value, "cm", "cm")]))
    assert str(seg(5)) == nm


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, None, "abc", [1]])
def test_what_is_not_a_number_sends_no_nm_obx(value: Any) -> None:
    message = parsed([measurement(LOINC, "x", "x", value, "cm", "cm")])
    assert nm_segments(message) == []
    assert len(message.segments("OBX")) == 1  # the report's text only


def test_a_group_observation_without_a_value_sends_no_obx() -> None:
    group = {"resourceType": "Observation", "status": "final",
             "code": {"coding": [{"system": DCM, "code": "125007",
                                  "display": "Measurement Group"}]},
             "hasMember": [{"reference": "Observation/a"}]}
    message = parsed([group, BIOMETRY[0]])
    assert [str(s(1)) for s in message.segments("OBX")] == ["1", "2"]
    assert str(nm_segments(message)[0](3)(1)(1)) == "11820-8"


def test_unknown_code_system_is_local() -> None:
    (seg,) = nm_segments(parsed([measurement("urn:dicom:cs:99ACME", "A1", "Acme", 1, "cm",
                                             "cm")]))
    assert str(seg(3)) == "A1^Acme^L"


def test_observation_status_in_obx_11() -> None:
    segs = nm_segments(parsed([measurement(LOINC, "x", "x", 1, "cm", "cm", status="amended"),
                               measurement(LOINC, "y", "y", 1, "cm", "cm",
                                           status="preliminary")]))
    assert [str(s(11)) for s in segs] == ["C", "P"]


def test_a_coded_finding_is_a_cwe_obx_and_a_text_only_one_st() -> None:
    """An SR's qualitative items (CODE content items) reach the HIS: CWE with the value's
    code, text and table 0396 system; a concept with a text only goes as ST."""
    present = {"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": DCM, "code": "G-0339",
                                    "display": "Fetal heart activity"}]},
               "valueCodeableConcept": {"coding": [{"system": SCT, "code": "52101004",
                                                    "display": "Present"}]}}
    free = {**present, "valueCodeableConcept": {"text": "见胎心搏动 ^ 规则"}}
    empty = {**present, "valueCodeableConcept": {}}
    message = parsed([*BIOMETRY[:1], present, free, empty])
    obx = list(message.segments("OBX"))
    cwe = [(str(s(3)(1)(1)), str(s(5)(1)(1)), str(s(5)(1)(2)), str(s(5)(1)(3)), str(s(11)))
           for s in obx if str(s(2)) == "CWE"]
    assert cwe == [("G-0339", "52101004", "Present", "SCT", "F")]
    st = [(str(s(3)(1)(1)), message.unescape(str(s(5))), str(s(11)))
          for s in obx if str(s(2)) == "ST"]
    assert st == [("G-0339", "见胎心搏动 ^ 规则", "F")]
    assert [str(s(1)) for s in obx] == [str(n) for n in range(1, len(obx) + 1)]
