"""``sonobridge.mappings.imaging_study``: DICOM study, series and instance -> FHIR R4.

The whole ImagingStudy for a two-series study (identifiers, modalities, subject, started,
basedOn, endpoint, counts, series and instances), the minimal one, DA+TM to dateTime, and
``patient_from_dicom`` (identifier, names by component group, sex, birth date).
"""

from __future__ import annotations

from typing import Any

import pytest

from sonobridge.mappings.imaging_study import (
    DCM,
    SOP_CLASS_SYSTEM,
    InstanceSummary,
    SeriesSummary,
    imaging_study,
    patient_from_dicom,
)

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
SR = "1.2.840.10008.5.1.4.1.1.88.11"


def attr(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


STUDY = {
    "00080050": attr("SH", "ACC-1"),
    "00080020": attr("DA", "20240105"),
    "00080030": attr("TM", "093015.250"),
    "00081030": attr("LO", "Abdomen"),
}
SERIES = [
    SeriesSummary("1.2.3.1", {"00080060": attr("CS", "US"), "00200011": attr("IS", 2),
                              "0008103E": attr("LO", "Liver"), "00180015": attr("CS", "ABDOMEN"),
                              "00080021": attr("DA", "20240105"),
                              "00080031": attr("TM", "0931")},
                  [InstanceSummary("1.2.3.1.1", US_MULTIFRAME, 1, 40),
                   InstanceSummary("1.2.3.1.2", US_MULTIFRAME, None, None)]),
    SeriesSummary("1.2.3.2", {"00080060": attr("CS", "SR")},
                  [InstanceSummary("1.2.3.2.1", SR, 7, None)]),
]


def test_full_imaging_study():
    resource = imaging_study("1.2.3", STUDY, SERIES, patient_ref="Patient/p1",
                             endpoint_ref="Endpoint/wado", based_on=["ServiceRequest/o1"])
    assert resource == {
        "resourceType": "ImagingStudy",
        "id": "1.2.3",
        "identifier": [
            {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                  "code": "ACSN"}]},
             "value": "ACC-1"},
        ],
        "status": "available",
        "modality": [{"system": DCM, "code": "SR"}, {"system": DCM, "code": "US"}],
        "subject": {"reference": "Patient/p1"},
        "started": "2024-01-05T09:30:15Z",
        "basedOn": [{"reference": "ServiceRequest/o1"}],
        "endpoint": [{"reference": "Endpoint/wado"}],
        "numberOfSeries": 2,
        "numberOfInstances": 3,
        "description": "Abdomen",
        "series": [
            {"uid": "1.2.3.1", "number": 2, "modality": {"system": DCM, "code": "US"},
             "description": "Liver", "numberOfInstances": 2, "bodySite": {"display": "ABDOMEN"},
             "started": "2024-01-05T09:31:00Z",
             "instance": [
                 {"uid": "1.2.3.1.1",
                  "sopClass": {"system": SOP_CLASS_SYSTEM, "code": f"urn:oid:{US_MULTIFRAME}"},
                  "number": 1},
                 {"uid": "1.2.3.1.2",
                  "sopClass": {"system": SOP_CLASS_SYSTEM, "code": f"urn:oid:{US_MULTIFRAME}"}},
             ]},
            {"uid": "1.2.3.2", "modality": {"system": DCM, "code": "SR"},
             "numberOfInstances": 1,
             "instance": [{"uid": "1.2.3.2.1",
                           "sopClass": {"system": SOP_CLASS_SYSTEM, "code": f"urn:oid:{SR}"},
                           "number": 7}]},
        ],
    }


def test_minimal_imaging_study():
    resource = imaging_study("9.9", {}, [], patient_ref=None, endpoint_ref=None)
    assert resource == {
        "resourceType": "ImagingStudy", "id": "9.9",
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:9.9"}],
        "status": "available", "subject": {"display": "unknown patient"},
        "numberOfSeries": 0, "numberOfInstances": 0, "series": []}


def test_series_without_modality_or_number():
    series = [SeriesSummary("1.1", {"00200011": attr("IS"), "00080060": attr("CS")}, []),
              SeriesSummary("1.2", {"00200011": attr("IS", "3")}, [])]
    resource = imaging_study("1", {}, series, patient_ref=None, endpoint_ref=None,
                             based_on=[])
    assert "modality" not in resource  # no series names one
    assert "basedOn" not in resource
    assert resource["series"] == [
        {"uid": "1.1", "modality": {"system": DCM, "code": "OT"}, "numberOfInstances": 0,
         "instance": []},
        # a number that is not a number (a string) is left out
        {"uid": "1.2", "modality": {"system": DCM, "code": "OT"}, "numberOfInstances": 0,
         "instance": []},
    ]


def test_modalities_are_distinct_and_sorted():
    series = [SeriesSummary(str(n), {"00080060": attr("CS", m)}, [])
              for n, m in enumerate(["US", "SR", "US", "DOC"])]
    resource = imaging_study("1", {}, series, patient_ref=None, endpoint_ref=None)
    assert [m["code"] for m in resource["modality"]] == ["DOC", "SR", "US"]


@pytest.mark.parametrize("date,time,started", [
    ("20240105", "093015", "2024-01-05T09:30:15Z"),
    ("20240105", "093015.123456", "2024-01-05T09:30:15Z"),
    ("20240105", "0930", "2024-01-05T09:30:00Z"),
    ("20240105", "0930x1", "2024-01-05T09:30:00Z"),  # unreadable seconds: 00
    ("20240105", "09", "2024-01-05"),  # an hour alone: the date
    ("20240105", "ab3015", "2024-01-05"),
    ("20240105", None, "2024-01-05"),
    ("2024010", "093015", None),
    ("2024-01-05", None, None),
    ("2024010x", None, None),
    (None, "093015", None),
])
def test_started(date, time, started):
    study = {}
    if date is not None:
        study["00080020"] = attr("DA", date)
    if time is not None:
        study["00080030"] = attr("TM", time)
    resource = imaging_study("1", study, [], patient_ref=None, endpoint_ref=None)
    assert resource.get("started") == started


def test_started_uses_the_timezone_offset_from_utc():
    study = {"00080020": attr("DA", "20240105"), "00080030": attr("TM", "093015"),
             "00080201": attr("SH", "+0800")}
    resource = imaging_study("1", study, [], patient_ref=None, endpoint_ref=None)
    assert resource["started"] == "2024-01-05T09:30:15+08:00"


# ------------------------------------------------------------------------------ patient


def test_patient_from_dicom_full():
    study = {
        "00100020": attr("LO", "P-77"),
        "00100010": attr("PN", {"Alphabetic": "Wang^Wei^^Dr", "Ideographic": "王^伟",
                                "Phonetic": "ワン^ウェイ"}),
        "00100040": attr("CS", "m"),
        "00100030": attr("DA", "19800517"),
    }
    assert patient_from_dicom(study, "urn:sys") == {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:sys", "value": "P-77"}],
        "name": [
            {"use": "official", "family": "Wang", "given": ["Wei"], "prefix": ["Dr"]},
            {"use": "usual", "family": "王", "given": ["伟"], "text": "王伟"},
            {"use": "usual", "family": "ワン", "given": ["ウェイ"]},
        ],
        "gender": "male",
        "birthDate": "1980-05-17",
    }


@pytest.mark.parametrize("name,expected", [
    ({"Alphabetic": "Smith^John^Q^^Jr"},
     [{"use": "official", "family": "Smith", "given": ["John", "Q"], "suffix": ["Jr"]}]),
    ({"Alphabetic": "Smith"}, [{"use": "official", "family": "Smith"}]),
    ({"Alphabetic": "^John"}, [{"use": "official", "given": ["John"]}]),
    ({"Ideographic": "王^伟"},  # no alphabetic group: the ideographic one, as usual
     [{"use": "usual", "family": "王", "given": ["伟"], "text": "王伟"}]),
    ({"Alphabetic": "^^", "Ideographic": "  "}, None),  # empty groups: no name
    ({}, None),
])
def test_patient_names(name, expected):
    patient = patient_from_dicom({"00100020": attr("LO", "1"), "00100010": attr("PN", name)},
                                 "urn:sys")
    assert patient.get("name") == expected


@pytest.mark.parametrize("sex,gender", [("M", "male"), ("F", "female"), ("O", "other"),
                                        ("f", "female"), ("U", None), ("", None)])
def test_patient_gender(sex, gender):
    patient = patient_from_dicom({"00100040": attr("CS", sex)}, "urn:sys")
    assert patient.get("gender") == gender


@pytest.mark.parametrize("birth,expected", [("19800517", "1980-05-17"), ("1980", None),
                                            ("1980-05-17", None), ("198005xx", None)])
def test_patient_birth_date(birth, expected):
    patient = patient_from_dicom({"00100030": attr("DA", birth)}, "urn:sys")
    assert patient.get("birthDate") == expected


def test_patient_name_not_a_pn_object_is_ignored():
    patient = patient_from_dicom({"00100020": attr("LO", "1"),
                                  "00100010": attr("PN", "Smith^John")}, "urn:sys")
    assert "name" not in patient
