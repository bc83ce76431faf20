"""``core.patients``: one person, one Patient, whichever of the HIS and the modality spoke first.

Identifiers are (issuer, value). A qualified identifier matches the same (issuer, value); an
unqualified DICOM Patient ID matches the one Patient holding that value under any issuer; a
Patient made from an unqualified ID is adopted by the first qualified identifier with its value;
ambiguity makes a new Patient, tagged, counted and listed (``Patients.conflicts``). The DICOM
side is driven through the one ingest path (``core.ingest``), the HIS side through
``Patients.upsert`` with what ``mappings.hl7v2`` makes of a real PID segment.
"""

from __future__ import annotations

from typing import Any

import hl7
import pytest
from prometheus_client import REGISTRY
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from sonobridge.core.patients import CONFLICT_SYSTEM, issuer_system
from sonobridge.core.policy import DIMSE_SERVICES, Policy
from sonobridge.core.services import Core
from sonobridge.mappings import hl7v2
from tests.dicom_data import cine, to_bytes

DICOM_SYSTEM = "urn:sonobridge:dicom:patient-id"
HOSP = "urn:sonobridge:hl7:id:HOSP"
OTHER = "urn:sonobridge:hl7:id:OTHER"


def conflicts_counted(source: str) -> float:
    return REGISTRY.get_sample_value("sonobridge_patient_identity_conflicts_total",
                                     {"source": source}) or 0.0


def pid(value: str, authority: str = "HOSP", name: str = "张^三", birth: str = "19750304",
        sex: str = "M") -> dict[str, Any]:
    """The Patient ``mappings.hl7v2`` makes of an ORM's PID (PID-3 = value^^^authority^MR)."""
    value = value.replace("|", "\\F\\")
    message = hl7.parse("\r".join([
        "MSH|^~\\&|HIS|HOSP|SONOBRIDGE|SB|20250101120000||ORM^O01|M1|P|2.5.1|||||CHN|UNICODE UTF-8",
        f"PID|1||{value}^^^{authority}^MR||{name}||{birth}|{sex}",
    ]))
    return hl7v2.patient(message)


def his(core: Core, value: str, authority: str = "HOSP", **kw: str) -> str:
    with core.store.write() as writer:
        return core.patients.upsert(writer, core.server, pid(value, authority, **kw))


def image(core: Core, patient_id: str, *, issuer: str | None = None, oid: str | None = None,
          sender: str | None = None, study: str | None = None, name: str = "ZHANG^SAN"
          ) -> str:
    """Store a one-frame cine (as ``sender``'s C-STORE when given); its study's subject."""
    study = study or generate_uid()
    ds = cine("native", frames=1, study=study, patient_id=patient_id, patient_name=name)
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    if oid is not None:
        qualifier = Dataset()
        qualifier.UniversalEntityID = oid
        qualifier.UniversalEntityIDType = "ISO"
        ds.IssuerOfPatientIDQualifiersSequence = [qualifier]
    caller = core.caller(Policy.system(f"dicom:{sender}", sender, frozenset(DIMSE_SERVICES))) \
        if sender else core.server
    outcome = core.ingest.ingest(core.ingest.receiver.receive([to_bytes(ds)]), caller)
    assert outcome.ok, outcome.message
    study_resource = current(core, "ImagingStudy", study)
    return str(study_resource["subject"]["reference"]).removeprefix("Patient/")


def current(core: Core, res_type: str, res_id: str) -> dict[str, Any]:
    with core.store.write() as writer:
        body = core.resources.current(writer, res_type, res_id)
        stored = writer.read(res_type, res_id)
    assert body is not None and stored is not None
    import orjson

    body["meta"] = orjson.loads(stored.content).get("meta", {})
    return body


def patients(core: Core) -> list[dict[str, Any]]:
    with core.store.write() as writer:
        ids = core.resources.find(writer, "Patient", [("_id:missing", "false")], "", 1000)
    return [current(core, "Patient", i) for i in ids]


def idents(patient: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["system"], i["value"]) for i in patient.get("identifier", [])}


def tagged(patient: dict[str, Any]) -> bool:
    return any(t.get("system") == CONFLICT_SYSTEM for t in patient["meta"].get("tag", []))


def test_hl7_authority_and_dicom_issuer_are_one_system():
    assert issuer_system("HOSP") == HOSP == pid("MRN1")["identifier"][0]["system"]
    assert issuer_system("HOSP&1.2.156.1&ISO") == "urn:oid:1.2.156.1"
    assert issuer_system(" HOSP ") == HOSP


def test_image_first_then_the_order_adopts_its_patient(core):
    subject = image(core, "MRN1001", name="ZHANG^SAN")
    made = current(core, "Patient", subject)
    assert idents(made) == {(DICOM_SYSTEM, "MRN1001")}
    assert made["name"][0]["family"] == "ZHANG"

    adopted = his(core, "MRN1001", name="张^三", birth="19750304", sex="M")

    assert adopted == subject  # adopted, not duplicated
    assert len(patients(core)) == 1
    patient = current(core, "Patient", adopted)
    assert idents(patient) == {(DICOM_SYSTEM, "MRN1001"), (HOSP, "MRN1001")}
    assert patient["name"][0]["family"] == "张" and patient["name"][0]["given"] == ["三"]
    assert patient["birthDate"] == "1975-03-04"  # the HIS's, not the header's 1980-01-01
    assert patient["gender"] == "male"  # the header said F
    assert not tagged(patient)
    # more images of the study stay on it, and do not undo the HIS's demographics
    [study] = _studies(core)
    assert image(core, "MRN1001", study=study) == adopted
    assert current(core, "Patient", adopted)["name"][0]["family"] == "张"


def _studies(core: Core) -> list[str]:
    with core.store.write() as writer:
        return core.resources.find(writer, "ImagingStudy", [("_id:missing", "false")], "", 100)


def test_order_first_then_the_image_finds_its_patient(core):
    registered = his(core, "MRN1002")
    subject = image(core, "MRN1002")
    assert subject == registered
    assert len(patients(core)) == 1
    assert current(core, "Patient", registered)["name"][0]["family"] == "张"


def test_a_qualified_id_matches_only_its_own_issuer(core):
    before = conflicts_counted("dicom"), conflicts_counted("hl7")
    hosp = his(core, "MRN1003", "HOSP")
    assert image(core, "MRN1003", issuer="HOSP") == hosp
    other = image(core, "MRN1003", issuer="OTHER")  # another authority's MRN1003
    assert other != hosp
    assert idents(current(core, "Patient", other)) == {(OTHER, "MRN1003")}
    assert image(core, "MRN1003", issuer="OTHER") == other
    by_oid = image(core, "MRN1003", oid="1.2.156.99")
    assert by_oid not in (hosp, other)
    assert (("urn:oid:1.2.156.99", "MRN1003")) in idents(current(core, "Patient", by_oid))
    assert len(patients(core)) == 3
    assert (conflicts_counted("dicom"), conflicts_counted("hl7")) == before  # none ambiguous


def test_a_qualified_image_adopts_an_unqualified_patient(core):
    unqualified = image(core, "MRN1004")
    assert image(core, "MRN1004", issuer="HOSP") == unqualified
    assert idents(current(core, "Patient", unqualified)) == {
        (DICOM_SYSTEM, "MRN1004"), (HOSP, "MRN1004")}
    assert his(core, "MRN1004") == unqualified  # the HIS then finds it by its own identifier
    assert len(patients(core)) == 1


def test_the_sending_ae_and_the_site_issuer_qualify_an_id_without_one(core):
    hosp = his(core, "MRN1005", "HOSP")
    other = his(core, "MRN1005", "OTHER")
    assert hosp != other
    core.patients.sender_issuers = {"CART1": "HOSP", "CART2": "OTHER"}
    assert image(core, "MRN1005", sender="CART1") == hosp
    assert image(core, "MRN1005", sender="CART2") == other
    assert image(core, "MRN1005", sender="CART1", issuer="OTHER") == other  # the header wins
    core.patients.default_issuer = "OTHER"
    assert image(core, "MRN1005", sender="CART9") == other  # an AE with none: the site's
    assert image(core, "MRN1005") == other
    assert core.patients.conflicts()[0] == 0
    assert len(patients(core)) == 2


def test_an_ambiguous_unqualified_id_makes_a_new_patient_and_is_counted(core):
    hosp = his(core, "MRN1006", "HOSP")
    other = his(core, "MRN1006", "OTHER")
    before = conflicts_counted("dicom")
    study = generate_uid()

    subject = image(core, "MRN1006", study=study)

    assert subject not in (hosp, other)  # never merged silently
    made = current(core, "Patient", subject)
    assert idents(made) == {(DICOM_SYSTEM, "MRN1006")} and tagged(made)
    assert conflicts_counted("dicom") == before + 1
    count, listed = core.patients.conflicts()
    assert count == 1 and [c.patient for c in listed] == [subject]
    assert f"{DICOM_SYSTEM}|MRN1006" in listed[0].identifiers
    # the study's next instance stays on that patient (no second conflict)
    assert image(core, "MRN1006", study=study) == subject
    assert conflicts_counted("dicom") == before + 1
    assert len(patients(core)) == 3
    for survivor in (hosp, other):
        assert not tagged(current(core, "Patient", survivor))


def test_an_ambiguous_adoption_makes_a_new_patient_and_is_counted(core):
    first = image(core, "MRN1007")
    with core.store.write() as writer:  # a second patient made from the same unqualified ID
        second = core.resources.create(core.server, "Patient", {
            "resourceType": "Patient",
            "identifier": [{"system": DICOM_SYSTEM, "value": "MRN1007"}]},
            writer=writer).stored.id
    before = conflicts_counted("hl7")

    registered = his(core, "MRN1007")

    assert registered not in (first, second)
    assert conflicts_counted("hl7") == before + 1
    patient = current(core, "Patient", registered)
    assert tagged(patient) and (HOSP, "MRN1007") in idents(patient)
    assert patient["name"][0]["family"] == "张"
    for untouched in (first, second):
        assert idents(current(core, "Patient", untouched)) == {(DICOM_SYSTEM, "MRN1007")}
    # the tag stays when the HIS updates its patient; the conflict is listed until resolved
    assert his(core, "MRN1007", name="张^三丰") == registered
    updated = current(core, "Patient", registered)
    assert tagged(updated) and updated["name"][0]["given"] == ["三丰"]
    assert core.patients.conflicts()[0] == 1


def test_another_issuers_patient_is_another_person_not_a_conflict(core):
    unqualified = image(core, "MRN1008")
    hosp = his(core, "MRN1008", "HOSP")
    assert hosp == unqualified  # adopted by HOSP
    before = conflicts_counted("hl7")
    other = his(core, "MRN1008", "OTHER")
    assert other != hosp and conflicts_counted("hl7") == before
    assert not tagged(current(core, "Patient", other))
    # now an unqualified MRN1008 is ambiguous: a new patient, counted
    dicom_before = conflicts_counted("dicom")
    ambiguous = image(core, "MRN1008")
    assert ambiguous not in (hosp, other)
    assert conflicts_counted("dicom") == dicom_before + 1
    # ... and a third issuer does not adopt the patient made on an ambiguous ID
    third = his(core, "MRN1008", "THIRD")
    assert third != ambiguous and conflicts_counted("hl7") == before + 1


def test_a_person_resolves_the_conflict(core):
    """As docs/bridges.md says: point the study at the right patient, retire the other."""
    hosp = his(core, "MRN1009", "HOSP")
    his(core, "MRN1009", "OTHER")
    study = generate_uid()
    ambiguous = image(core, "MRN1009", study=study)
    assert core.patients.conflicts()[0] == 1
    resolved = current(core, "ImagingStudy", study)
    resolved["subject"] = {"reference": f"Patient/{hosp}"}
    retired = current(core, "Patient", ambiguous)
    retired["active"] = False
    with core.store.write() as writer:
        for body in (resolved, retired):
            body.pop("meta")
            core.resources.update(core.server, body["resourceType"], body["id"], body,
                                  writer=writer)
    assert core.patients.conflicts() == (0, [])
    # the study's next instance stays where the person put it
    assert image(core, "MRN1009", study=study) == hosp


@pytest.mark.parametrize("value", ["A|B", "A,B", "A$B"])
def test_ids_with_search_syntax_in_them(core, value):
    """FHIR token syntax in an ID is escaped in the searches (a backslash is not an ID: it
    splits DICOM values)."""
    first = image(core, value)
    assert image(core, value) == first
    assert his(core, value) == first
    assert len(patients(core)) == 1
