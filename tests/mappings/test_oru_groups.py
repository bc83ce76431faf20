"""ORU^R01 measurement groups (mappings/oru.py): a report whose ``result`` lists an SR's
measurement-group Observations sends every member measurement as an NM OBX (``hasMember``
followed, groups in groups, each Observation once, depth and reads bounded), the members of a
group under one OBX-4 sub-ID. Read back with the ``hl7`` parser as a HIS would."""

from __future__ import annotations

from typing import Any

import hl7

from sonobridge.mappings import oru
from sonobridge.mappings.oru import MAX_GROUP_DEPTH, measurements, members_of, oru_r01
from sonobridge.mappings.sr import map_sr
from tests.mappings.test_sr_builders import image, tid1500, tid5000

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def measurement(oid: str, code: str, value: float) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code, "display": code}]},
            "valueQuantity": {"value": value, "unit": "mm", "system": UCUM, "code": "mm"}}


def group(oid: str, *members: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "G", "display": "group"}]},
            "hasMember": [{"reference": f"Observation/{m}"} for m in members]}


def store(*resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"Observation/{r['id']}": r for r in resources}


def send(results: list[dict[str, Any]], stored: dict[str, dict[str, Any]]
         ) -> tuple[hl7.Message, list[str]]:
    reads: list[str] = []

    def read(ref: str) -> dict[str, Any] | None:
        reads.append(ref)
        return stored.get(ref)

    text = oru_r01({"status": "final", "conclusion": "双胎妊娠"}, {}, {}, results,
                   control_id="C1", now="20261203100000+0800", sending=("SONO", "TELEUS"),
                   receiving=("HIS", "HOSP"), patient_id_system="urn:x",
                   members=members_of(results, read))
    return hl7.parse(text), reads


def nm(message: hl7.Message) -> list[tuple[str, str, str]]:
    """(OBX-3 code, OBX-4 sub-ID, OBX-5 value) of each NM OBX."""
    return [(str(s(3)(1)(1)), str(s(4)), str(s(5))) for s in message.segments("OBX")
            if str(s(2)) == "NM"]


TWINS = store(
    measurement("a-bpd", "11820-8", 88), measurement("a-hc", "11779-6", 310),
    measurement("b-bpd", "11820-8", 86), measurement("b-hc", "11779-6", 305),
    measurement("afi", "AFI", 120),
    group("twin-a", "a-bpd", "a-hc"), group("twin-b", "b-bpd", "b-hc"))


def test_each_member_of_a_listed_group_goes_out_under_the_groups_sub_id():
    results = [TWINS["Observation/twin-a"], TWINS["Observation/twin-b"],
               TWINS["Observation/afi"]]
    message, reads = send(results, TWINS)
    assert nm(message) == [("11820-8", "1", "88"), ("11779-6", "1", "310"),
                           ("11820-8", "2", "86"), ("11779-6", "2", "305"),
                           ("AFI", "", "120")]
    assert sorted(reads) == sorted(["Observation/a-bpd", "Observation/a-hc",
                                    "Observation/b-bpd", "Observation/b-hc"])
    # set ids run on after the report's text OBX
    assert [str(s(1)) for s in message.segments("OBX")] == [str(i) for i in range(1, 7)]


def test_a_measurement_listed_and_held_by_a_group_goes_out_once():
    results = [TWINS["Observation/twin-a"], TWINS["Observation/a-bpd"],
               TWINS["Observation/twin-a"]]
    message, _ = send(results, TWINS)
    assert nm(message) == [("11820-8", "1", "88"), ("11779-6", "1", "310")]
    shared = store(measurement("m", "X", 1), group("g1", "m"), group("g2", "m", "n"),
                   measurement("n", "Y", 2))
    message, reads = send([shared["Observation/g1"], shared["Observation/g2"]], shared)
    assert nm(message) == [("X", "1", "1"), ("Y", "2", "2")]
    assert reads.count("Observation/m") == 1


def test_groups_in_groups_and_cycles_are_bounded():
    nested = store(group("top", "inner", "m1"), group("inner", "m2", "top"),
                   measurement("m1", "M1", 1), measurement("m2", "M2", 2))
    message, _ = send([nested["Observation/top"]], nested)
    assert nm(message) == [("M2", "1.1", "2"), ("M1", "1", "1")]
    # groups followed MAX_GROUP_DEPTH levels below the result: a measurement that deep goes
    # out, one level deeper is not even read
    chain = [group(f"g{i}", f"g{i + 1}") for i in range(MAX_GROUP_DEPTH + 1)]
    chain[-1]["hasMember"] = [{"reference": "Observation/deep"}]
    chain[-2]["hasMember"].append({"reference": "Observation/shallow"})
    deep = store(*chain, measurement("deep", "D", 9), measurement("shallow", "S", 3))
    message, reads = send([deep["Observation/g0"]], deep)
    assert nm(message) == [("S", ".".join(["1"] * MAX_GROUP_DEPTH), "3")]
    assert "Observation/deep" not in reads and len(reads) == MAX_GROUP_DEPTH + 1


def test_reads_are_bounded(monkeypatch):
    monkeypatch.setattr(oru, "MAX_MEMBERS", 3)
    many = store(group("g", *[f"m{i}" for i in range(10)]),
                 *[measurement(f"m{i}", f"C{i}", i) for i in range(10)])
    message, reads = send([many["Observation/g"]], many)
    assert len(reads) == 3 and len(nm(message)) == 3


def test_missing_members_and_other_types_send_nothing():
    odd = store(group("g", "gone", "qr"))
    odd["Observation/qr"] = {"resourceType": "QuestionnaireResponse", "id": "qr"}
    message, _ = send([odd["Observation/g"], measurement("m", "M", 1)], odd)
    assert nm(message) == [("M", "", "1")]


def test_without_members_the_result_list_is_sent_as_before():
    results = [TWINS["Observation/twin-a"], TWINS["Observation/afi"]]
    assert measurements(results) == [("", results[0]), ("", results[1])]
    text = oru_r01({"status": "final"}, {}, {}, results, control_id="C1", now="20261203",
                   sending=("S", "F"), receiving=("H", "F"), patient_id_system="urn:x")
    assert nm(hl7.parse(text)) == [("AFI", "", "120")]


def test_an_srs_groups_send_all_its_measurements():
    """The groups mappings/sr.py makes, as a report lists them: every NUM goes out."""
    ev = image()
    for sr, count in ((tid1500(ev, measurements=3, groups=2), 6), (tid5000(ev), 5)):
        mapped = map_sr(sr, sop_uid=sr.SOPInstanceUID, study_ref="ImagingStudy/1",
                        subject_ref="Patient/p").observations
        stored = {f"Observation/{o['id']}": o for o in mapped}
        groups = [o for o in mapped if "hasMember" in o]
        message, _ = send(groups, stored)
        sent = nm(message)
        assert len(sent) == count == len([o for o in mapped if "valueQuantity" in o])
        assert {sub for _, sub, _ in sent} == {str(n) for n in range(1, len(groups) + 1)}
        # the report may list every Observation of the SR: still each measurement once
        message, _ = send(mapped, stored)
        assert sorted(nm(message)) == sorted(sent)
