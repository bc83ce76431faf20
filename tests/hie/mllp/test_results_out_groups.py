"""Results out with an SR's measurement groups (hie/mllp/outbound.py): a final report whose
``result`` lists measurement-group Observations sends each member measurement as an NM OBX,
members read from the store through ``hasMember``, each once, a group's under one OBX-4
sub-ID; read back by the fake HIS with the ``hl7`` parser. SQLite and PostgreSQL."""

from __future__ import annotations

import hl7

from sonobridge.hie.mllp.outbound import OutboxSender
from tests.hie.mllp.test_results_out import FakeHis, port, report, setup  # noqa: F401

LOINC = "http://loinc.org"


def measurement(oid: str, code: str, value: float) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code, "display": code}]},
            "subject": {"reference": "Patient/p1"},
            "valueQuantity": {"value": value, "unit": "mm", "code": "mm",
                              "system": "http://unitsofmeasure.org"}}


def group(oid: str, *members: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                 "code": "125007", "display": "Measurement Group"}]},
            "subject": {"reference": "Patient/p1"},
            "hasMember": [{"reference": f"Observation/{m}"} for m in members]}


def test_members_of_listed_groups_go_out_as_nm_obx(setup, port):  # noqa: F811
    core, put, _ = setup
    for resource in (measurement("a-bpd", "11820-8", 88), measurement("a-fl", "11963-6", 68),
                     measurement("b-bpd", "11820-8", 86), group("twin-a", "a-bpd", "a-fl"),
                     group("twin-b", "b-bpd", "gone"), group("outer", "twin-b", "a-bpd")):
        put(resource)
    final = report("final")
    final["result"] = [{"reference": "Observation/twin-a"}, {"reference": "Observation/outer"},
                       {"reference": "Observation/o1"}]
    his = FakeHis(port)
    try:
        put(final)
        assert OutboxSender(core).send_due() == 1
    finally:
        his.close()
    (text,) = his.received
    message = hl7.parse(text)
    sent = [(str(s(3)(1)(1)), str(s(4)), str(s(5)), str(s(6)(1)(3)))
            for s in message.segments("OBX") if str(s(2)) == "NM"]
    assert sent == [("11820-8", "1", "88", "UCUM"), ("11963-6", "1", "68", "UCUM"),
                    ("11820-8", "2.1", "86", "UCUM"),  # twin B's, in the outer group
                    ("11348-0", "", "14.5", "UCUM")]  # listed directly: no sub-ID
    assert [str(s(1)) for s in message.segments("OBX")] == ["1", "2", "3", "4", "5"]
