"""``sonobridge.mappings.worklist``: an open ServiceRequest -> a Modality Worklist item.

``item()`` for a full order (every attribute it sets, exactly) and a bare one (the defaults);
then tables for what each attribute comes from: Patient ID and issuer, the patient name with
its ideographic group, modality, station AE titles (Devices, else the configured stations),
the start date and time in the modalities' zone, code items and their designators, priority,
and ``study_uid``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from sonobridge.mappings.hl7v2 import (
    AE_TITLE_TYPE,
    DICOM_IDENTIFIER_TYPE,
    ID_SYSTEM,
    REQUESTED_PROCEDURE_SYSTEM,
    SCHEDULED_STEP_SYSTEM,
)
from sonobridge.mappings.worklist import (
    DCM,
    ItemContext,
    item,
    local_date_time,
    patient_name,
    study_uid,
)

PATIENT = {"resourceType": "Patient", "id": "pat1",
           "identifier": [{"system": f"{ID_SYSTEM}HOSP",
                           "type": {"coding": [{"code": "MR"}]}, "value": "MRN1"}],
           "name": [{"family": "Wang", "given": ["Wei"]}, {"family": "王", "given": ["伟"]}],
           "gender": "male", "birthDate": "1980-05-17"}


def device(*aets: str, name: str = "Cart one") -> dict[str, Any]:
    return {"resourceType": "Device", "deviceName": [{"name": name}], "identifier": [
        {"type": {"coding": [{"system": DICOM_IDENTIFIER_TYPE, "code": AE_TITLE_TYPE}]},
         "value": aet} for aet in aets]}


def order(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": "o1", **extra}


def codes(items: Any) -> list[tuple[str, str, str]]:
    return [(i.get("CodeValue") or i.get("LongCodeValue"), i.CodingSchemeDesignator,
             i.CodeMeaning) for i in items]


def test_full_item():
    full = order(
        priority="stat",
        identifier=[{"type": {"coding": [{"code": "ACSN"}]}, "value": "ACC-1"},
                    {"system": "urn:dicom:uid", "value": "urn:oid:1.2.840.9"},
                    {"system": REQUESTED_PROCEDURE_SYSTEM, "value": "RP-1"},
                    {"system": SCHEDULED_STEP_SYSTEM, "value": "SPS-1"}],
        category=[{"coding": [{"system": DCM, "code": "US"}]}],
        code={"coding": [{"system": "http://loinc.org", "code": "24558-9",
                          "display": "US Abdomen"}], "text": "Abdominal ultrasound"},
        requester={"reference": "Practitioner/1", "display": "Li^Na"},
        occurrenceDateTime="2024-12-01T01:30:00Z")
    performers = [device("CART1", "CART2"),
                  {"resourceType": "Practitioner", "name": [{"family": "Zhao",
                                                             "given": ["Min"]}]}]
    ds = item(full, ItemContext(PATIENT, performers))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientName == "Wang^Wei=王^伟"
    assert (ds.PatientID, ds.IssuerOfPatientID) == ("MRN1", "HOSP")
    assert "IssuerOfPatientIDQualifiersSequence" not in ds
    assert (ds.PatientBirthDate, ds.PatientSex) == ("19800517", "M")
    assert ds.AccessionNumber == "ACC-1"
    assert ds.ReferringPhysicianName == "Li^Na"
    assert ds.StudyInstanceUID == "1.2.840.9"
    assert ds.RequestedProcedureID == "RP-1"
    assert ds.RequestedProcedureDescription == "Abdominal ultrasound"  # code.text first
    assert codes(ds.RequestedProcedureCodeSequence) == [("24558-9", "LN", "US Abdomen")]
    assert ds.RequestedProcedurePriority == "STAT"
    (step,) = ds.ScheduledProcedureStepSequence
    assert step.Modality == "US"
    assert list(step.ScheduledStationAETitle) == ["CART1", "CART2"]
    assert step.ScheduledStationName == "Cart one"
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == \
        ("20241201", "093000")  # 01:30Z in +08:00
    assert step.ScheduledProcedureStepID == "SPS-1"
    assert step.ScheduledProcedureStepDescription == "Abdominal ultrasound"
    assert codes(step.ScheduledProtocolCodeSequence) == [("24558-9", "LN", "US Abdomen")]
    assert step.ScheduledPerformingPhysicianName == "Zhao^Min"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert sorted(e.keyword for e in step) == sorted([
        "Modality", "ScheduledStationAETitle", "ScheduledStationName",
        "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepID", "ScheduledProcedureStepDescription",
        "ScheduledProtocolCodeSequence", "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepStatus"])


def test_bare_item_defaults():
    ds = item(order(), ItemContext({"id": "pat9"}))
    assert ds.PatientName == ""
    assert (ds.PatientID, ds.IssuerOfPatientID) == ("pat9", "")
    assert (ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber) == ("", "", "")
    assert ds.ReferringPhysicianName == ""
    assert ds.StudyInstanceUID == study_uid(order())
    assert ds.RequestedProcedureID == "o1"  # no procedure id, no accession: the order's id
    assert ds.RequestedProcedureDescription == ""
    assert list(ds.RequestedProcedureCodeSequence) == []
    assert ds.RequestedProcedurePriority == ""
    (step,) = ds.ScheduledProcedureStepSequence
    assert step.Modality == "US"
    assert list(step.ScheduledStationAETitle) == []  # no Device, no configured station
    assert step.ScheduledStationName == ""
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == \
        ("", "")
    assert step.ScheduledProcedureStepID == "o1"
    assert list(step.ScheduledProtocolCodeSequence) == []
    assert step.ScheduledPerformingPhysicianName == ""


def test_accession_is_the_requested_procedure_id_when_there_is_none():
    ds = item(order(identifier=[{"type": {"coding": [{"code": "ACSN"}]},
                                 "value": "ACC-0123456789ABCDEF"}]), ItemContext({"id": "p"}))
    assert ds.AccessionNumber == "ACC-0123456789AB"  # SH: 16 characters
    assert ds.RequestedProcedureID == "ACC-0123456789AB"


# ------------------------------------------------------------------------------ patient


@pytest.mark.parametrize("patient,expected", [
    # the DICOM Patient ID domain's identifier, without an issuer
    ({"id": "p", "identifier": [
        {"system": "urn:x", "type": {"coding": [{"code": "MR"}]}, "value": "MR-9"},
        {"system": "urn:sonobridge:dicom:patient-id", "value": "D-1"}]}, ("D-1", "", None)),
    # a medical record number with its assigning authority
    ({"id": "p", "identifier": [{"system": f"{ID_SYSTEM}CITY",
                                 "type": {"coding": [{"code": "MR"}]}, "value": "M1"}]},
     ("M1", "CITY", None)),
    ({"id": "p", "identifier": [{"system": "urn:oid:1.2.156.1",
                                 "type": {"coding": [{"code": "MR"}]}, "value": "M2"}]},
     ("M2", "", "1.2.156.1")),
    ({"id": "p", "identifier": [{"system": "http://hospital/mrn",
                                 "type": {"coding": [{"code": "MR"}]}, "value": "M3"}]},
     ("M3", "", None)),
    # an identifier of another type, or one without a value: the resource id
    ({"id": "p7", "identifier": [{"system": "urn:x", "type": {"coding": [{"code": "NI"}]},
                                  "value": "N1"},
                                 {"type": {"coding": [{"code": "MR"}]}, "value": ""}]},
     ("p7", "", None)),
    ({"id": "x" * 70}, ("x" * 64, "", None)),  # LO: 64 characters
])
def test_patient_id_and_issuer(patient, expected):
    ds = item(order(), ItemContext(patient))
    patient_id, issuer, oid = expected
    assert (ds.PatientID, ds.IssuerOfPatientID) == (patient_id, issuer)
    if oid is None:
        assert "IssuerOfPatientIDQualifiersSequence" not in ds
    else:
        (qualifiers,) = ds.IssuerOfPatientIDQualifiersSequence
        assert (qualifiers.UniversalEntityID, qualifiers.UniversalEntityIDType) == (oid, "ISO")


@pytest.mark.parametrize("names,expected", [
    ([], ""),
    ([{"family": "Smith", "given": ["John", "Q"]}], "Smith^John Q"),
    ([{"family": "Smith"}], "Smith"),
    ([{"given": ["John"]}], "^John"),
    ([{"text": "John Smith"}], "John Smith"),
    ([{"family": "王", "given": ["伟"]}], "王^伟"),
    ([{"family": "王", "given": ["伟"]}, {"family": "Wang", "given": ["Wei"]}], "王^伟"),
    ([{"family": "Wang", "given": ["Wei"]}, {"family": "王", "given": ["伟"]}], "Wang^Wei=王^伟"),
    ([{"family": "Wang", "given": ["Wei"]}, {"text": "王伟"}], "Wang^Wei=王伟"),
    ([{"family": "Kim"}, {"family": "김"}], "Kim=김"),  # Hangul counts as CJK
    ([{"family": "Wang"}, {"family": "Wong"}], "Wang"),  # a second latin name is not used
    ([{"family": "Old", "use": "old"}, {"family": "New"}], "New"),
    ([{"family": "Old", "use": "old"}], "Old"),  # only old names: the first of them
])
def test_patient_name(names, expected):
    assert patient_name({"name": names}) == expected


@pytest.mark.parametrize("gender,sex", [("male", "M"), ("female", "F"), ("other", "O"),
                                        ("unknown", ""), (None, "")])
def test_patient_sex(gender, sex):
    patient = {"id": "p"} if gender is None else {"id": "p", "gender": gender}
    assert item(order(), ItemContext(patient)).PatientSex == sex


# ------------------------------------------------------------------------------ the step


@pytest.mark.parametrize("category,modality", [
    (None, "US"),
    ([{"coding": [{"system": DCM, "code": "US"}]}], "US"),
    ([{"coding": [{"system": "urn:local", "code": "ECHO"}, {"system": DCM, "code": "US"}]}],
     "US"),  # the DCM coding first
    ([{"coding": [{"system": "urn:local", "code": "ECHO"}]}], "ECHO"),
    ([{"coding": [{"system": DCM}]}, {"coding": [{"system": DCM, "code": "XA"}]}], "XA"),
    ([{"text": "ultrasound"}], "US"),
])
def test_modality(category, modality):
    the_order = order() if category is None else order(category=category)
    (step,) = item(the_order, ItemContext({"id": "p"})).ScheduledProcedureStepSequence
    assert step.Modality == modality


@pytest.mark.parametrize("performers,stations,aets,name", [
    ([device("CART1")], {}, ["CART1"], "Cart one"),
    ([device(" CART1 ", "ABCDEFGHIJKLMNOPQ")], {}, ["CART1", "ABCDEFGHIJKLMNOP"], "Cart one"),
    # Devices without an AE title do not count; the configured stations of the modality do
    ([device(name="No AE")], {"US": ("CART7", "CART8")}, ["CART7", "CART8"], ""),
    ([], {"US": ("CART7",), "CT": ("CT1",)}, ["CART7"], ""),
    ([], {"CT": ("CT1",)}, [], ""),
    ([device(name="No AE"), device("CART2", name="Second")], {"US": ("CART7",)},
     ["CART2"], "Second"),
    ([{"resourceType": "Device", "identifier": [
        {"type": {"coding": [{"system": "urn:other", "code": AE_TITLE_TYPE}]},
         "value": "WRONG"}]}], {}, [], ""),
])
def test_station_ae_titles(performers, stations, aets, name):
    ds = item(order(), ItemContext({"id": "p"}, performers, stations=stations))
    (step,) = ds.ScheduledProcedureStepSequence
    got = step.ScheduledStationAETitle
    assert ([got] if isinstance(got, str) and got else list(got or [])) == aets
    assert step.ScheduledStationName == name


@pytest.mark.parametrize("value,zone,expected", [
    ("2024-12-01T01:30:00Z", "+08:00", ("20241201", "093000")),
    ("2024-12-01T20:30:00Z", "+08:00", ("20241202", "043000")),  # the next day there
    ("2024-12-01T09:30:15+08:00", "+08:00", ("20241201", "093015")),
    ("2024-12-01T09:30:00+08:00", "-05:30", ("20241130", "200000")),
    ("2024-12-01T09:30:00", "+08:00", ("20241201", "093000")),  # no zone: as given
    ("2024-12-01", "+08:00", ("20241201", "")),
    ("2024-12", "+08:00", ("", "")),
    ("2024", "+08:00", ("", "")),
    ("", "+08:00", ("", "")),
    ("2024-12-01Tnoon", "+08:00", ("", "")),
])
def test_local_date_time(value, zone, expected):
    assert local_date_time(value, zone) == expected


def test_start_from_the_occurrence_period():
    ds = item(order(occurrencePeriod={"start": "2024-12-01T02:00:00Z"}),
              ItemContext({"id": "p"}, zone="+01:00"))
    (step,) = ds.ScheduledProcedureStepSequence
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == \
        ("20241201", "030000")


def test_code_items_and_designators():
    coding = [
        {"system": "http://snomed.info/sct", "code": "45036003", "display": "US abdomen"},
        {"system": DCM, "code": "US"},
        {"system": "http://www.radlex.org", "code": "RID10321", "version": "4.1",
         "display": "ultrasound"},
        {"system": "urn:hospital", "code": "LOCAL-LONG-CODE-12345", "display": "Long"},
        {"code": "NOSYS"},
        {"system": "urn:x", "display": "no code"},
    ]
    ds = item(order(code={"coding": coding}), ItemContext({"id": "p"}))
    assert ds.RequestedProcedureDescription == "US abdomen"  # no text: the first display
    assert codes(ds.RequestedProcedureCodeSequence) == [("45036003", "SCT", "US abdomen")]
    (step,) = ds.ScheduledProcedureStepSequence
    protocol = step.ScheduledProtocolCodeSequence
    assert codes(protocol) == [
        ("45036003", "SCT", "US abdomen"), ("US", "DCM", "US"),
        ("RID10321", "RADLEX", "ultrasound"), ("LOCAL-LONG-CODE-12345", "99LOCAL", "Long"),
        ("NOSYS", "99LOCAL", "NOSYS")]
    assert protocol[2].CodingSchemeVersion == "4.1"
    assert "CodeValue" not in protocol[3]  # more than 16 characters: Long Code Value
    assert "CodingSchemeVersion" not in protocol[0]


@pytest.mark.parametrize("priority,expected", [("routine", "ROUTINE"), ("urgent", "HIGH"),
                                               ("asap", "HIGH"), ("stat", "STAT"),
                                               ("other", ""), (None, "")])
def test_priority(priority, expected):
    the_order = order() if priority is None else order(priority=priority)
    assert item(the_order, ItemContext({"id": "p"})).RequestedProcedurePriority == expected


def test_performing_physician_is_the_first_practitioner():
    performers = [{"resourceType": "PractitionerRole"},
                  {"resourceType": "Practitioner", "name": [{"text": "Dr Zhao"}]},
                  {"resourceType": "Practitioner", "name": [{"family": "Second"}]}]
    (step,) = item(order(), ItemContext({"id": "p"}, performers)).ScheduledProcedureStepSequence
    assert step.ScheduledPerformingPhysicianName == "Dr Zhao"


# ------------------------------------------------------------------------------ study_uid


def test_study_uid_from_the_order():
    assert study_uid(order(identifier=[{"system": "urn:dicom:uid",
                                        "value": "urn:oid:1.2.3"}])) == "1.2.3"
    assert study_uid(order(identifier=[{"system": "urn:dicom:uid", "value": "2.25.9"}])) == \
        "2.25.9"


def test_study_uid_derived_is_stable():
    derived = study_uid(order(identifier=[{"system": "urn:dicom:uid", "value": ""}]))
    expected = f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'ServiceRequest/o1').int}"
    assert derived == expected == study_uid(order())
    assert len(derived) <= 64
    assert study_uid({"id": "o2"}) != derived
