"""SR -> Observations (mappings/sr.py): TID 1500 built by highdicom, TID 5000/5100/5200 content
trees, templates that are not mapped, and ill-formed items."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from sonobridge.mappings.sr import (
    DCM,
    LOINC,
    SCT,
    SR_INSTANCE_SYSTEM,
    SR_ITEM_SYSTEM,
    UCUM,
    map_sr,
    observation_id,
    template_of,
)
from tests.mappings.test_sr_builders import (
    image,
    other_template,
    tid1500,
    tid5000,
    tid5100,
    tid5200,
)

STUDY = "ImagingStudy/1.2.3"
PATIENT = "Patient/p1"


def mapped(sr: Dataset, **kw: Any):
    return map_sr(sr, sop_uid=sr.SOPInstanceUID, study_ref=STUDY, subject_ref=PATIENT,
                  zone="+08:00", **kw)


def by_code(observations: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    return [o for o in observations if o["code"]["coding"][0]["code"] == code]


def walk(ds: Dataset):
    for item in ds.get("ContentSequence") or []:
        yield item
        yield from walk(item)


def item_named(ds: Dataset, code: str) -> Dataset:
    for item in walk(ds):
        names = item.get("ConceptNameCodeSequence") or []
        if names and names[0].CodeValue == code:
            return item
    raise KeyError(code)


def test_tid1500_groups_and_measurements():
    sr = tid1500(image(), measurements=3, groups=2)
    result = mapped(sr)
    assert result.template == "1500" and result.warnings == []
    groups = by_code(result.observations, "125007")
    diameters = by_code(result.observations, "81827009")
    assert len(groups) == 2 and len(diameters) == 6
    assert len(result.observations) == 8
    ids = {o["id"] for o in result.observations}
    assert len(ids) == 8
    for group in groups:
        assert group["code"]["coding"][0]["system"] == DCM
        assert group["category"][0]["coding"][0]["code"] == "imaging"
        assert len(group["hasMember"]) == 3
        assert {m["reference"].split("/")[1] for m in group["hasMember"]} <= ids
        assert group["bodySite"]["coding"][0] == {"system": SCT, "code": "10200004",
                                                  "display": "Liver"}
        finding = [c for c in group["component"] if c["code"]["coding"][0]["code"] == "121071"]
        assert finding[0]["valueCodeableConcept"]["coding"][0]["code"] == "27925004"
        tracking = [i for i in group["identifier"] if i.get("system") == "urn:dicom:uid"]
        assert len(tracking) == 1 and tracking[0]["value"].startswith("urn:oid:")
        assert any(i.get("value", "").startswith("lesion ") for i in group["identifier"])
    # every group precedes its members (writers may rely on it), members carry values
    position = {o["id"]: n for n, o in enumerate(result.observations)}
    for group in groups:
        for member in group["hasMember"]:
            assert position[member["reference"].split("/")[1]] > position[group["id"]]
    first = diameters[0]
    assert first["valueQuantity"] == {"value": 20, "unit": "mm", "system": UCUM, "code": "mm"}
    assert first["code"]["coding"][0]["system"] == SCT
    assert first["bodySite"]["coding"][0]["code"] == "10200004"
    assert first["method"]["coding"][0] == {"system": DCM, "code": "125220",
                                            "display": "Area-Length Single Plane"}
    derivation = [c for c in first["component"] if c["code"]["coding"][0]["code"] == "121401"]
    assert derivation[0]["valueCodeableConcept"]["coding"][0]["code"] == "373098007"  # mean
    assert "method" not in diameters[1]
    assert diameters[1]["valueQuantity"]["value"] == pytest.approx(20.1)
    for obs in result.observations:
        assert obs["status"] == "final"
        assert obs["subject"] == {"reference": PATIENT}
        assert obs["derivedFrom"][0]["reference"] == STUDY
        assert obs["partOf"] == [{"reference": STUDY}]
        assert obs["effectiveDateTime"].endswith("+08:00")
        assert {"system": SR_INSTANCE_SYSTEM,
                "value": f"urn:oid:{sr.SOPInstanceUID}"} in obs["identifier"]
        item = [i for i in obs["identifier"] if i.get("system") == SR_ITEM_SYSTEM]
        assert len(item) == 1 and obs["id"] == observation_id(
            sr.SOPInstanceUID, item[0]["value"].split("/", 1)[1])
        assert len(obs["id"]) <= 64


def test_stable_ids_and_preliminary_status():
    ev = image()
    sr = tid1500(ev, sop_uid="1.2.3.4.5", final=False)
    again = tid1500(ev, sop_uid="1.2.3.4.5", final=False)
    a, b = mapped(sr), mapped(again)
    assert [o["id"] for o in a.observations] == [o["id"] for o in b.observations]
    assert {o["status"] for o in a.observations} == {"preliminary"}
    other = mapped(tid1500(ev, sop_uid="1.2.3.4.6"))
    assert not {o["id"] for o in a.observations} & {o["id"] for o in other.observations}


def test_no_subject_no_profile_claim():
    sr = tid5200(image())
    result = map_sr(sr, sop_uid=sr.SOPInstanceUID, study_ref=STUDY, subject_ref=None)
    assert result.observations
    assert all("subject" not in o and "meta" not in o for o in result.observations)
    assert all(o["effectiveDateTime"].endswith("Z") for o in result.observations)


def test_tid5000_obgyn_biometry():
    result = mapped(tid5000(image(), fetus="B", bpd=88.4))
    assert result.template == "5000" and result.warnings == []
    (bpd,) = by_code(result.observations, "11820-8")
    assert bpd["code"]["coding"][0] == {"system": LOINC, "code": "11820-8",
                                        "display": "Biparietal Diameter"}
    assert bpd["valueQuantity"] == {"value": 88.4, "unit": "mm", "system": UCUM, "code": "mm"}
    components = {c["code"]["coding"][0]["code"]: c for c in bpd["component"]}
    assert components["125012"]["valueQuantity"]["value"] == 45
    assert components["125012"]["valueQuantity"]["code"] == "%"
    assert components["125013"]["valueQuantity"]["value"] == pytest.approx(-0.2)
    assert components["11951-1"]["valueString"] == "B"
    assert components["121401"]["valueCodeableConcept"]["coding"][0]["code"] == "373098007"
    # percentile and Z-score are components, never Observations of their own
    assert not by_code(result.observations, "125012")
    for code in ("11984-2", "11979-2", "11963-6", "11948-7"):
        assert len(by_code(result.observations, code)) == 1, code
    (group,) = by_code(result.observations, "125005")  # Biometry Group
    assert len(group["hasMember"]) == 4 and "bodySite" not in group
    (summary,) = by_code(result.observations, "121111")
    (fhr,) = by_code(result.observations, "11948-7")
    assert summary["hasMember"] == [{"reference": f"Observation/{fhr['id']}"}]
    assert fhr["valueQuantity"]["code"] == "/min"


def test_tid5100_vascular_velocities_at_their_vessel():
    result = mapped(tid5100(image(), psv=92.5, edv=25.0))
    assert result.template == "5100"
    (psv,) = by_code(result.observations, "11726-7")
    (edv,) = by_code(result.observations, "11653-3")
    assert psv["valueQuantity"] == {"value": 92.5, "unit": "cm/s", "system": UCUM,
                                    "code": "cm/s"}
    assert edv["valueQuantity"]["value"] == 25
    for obs in (psv, edv):
        assert obs["bodySite"]["coding"][0] == {"system": SCT, "code": "32062004",
                                                "display": "Common carotid artery"}
        lat = [c for c in obs["component"] if c["code"]["coding"][0]["code"] == "272741003"]
        assert lat[0]["valueCodeableConcept"]["coding"][0]["code"] == "24028007"
    (group,) = by_code(result.observations, "32062004")
    assert len(group["hasMember"]) == 2


def test_tid5200_echo():
    result = mapped(tid5200(image(), lvef=31.0, lvidd=56.0))
    assert result.template == "5200"
    (lvef,) = by_code(result.observations, "18043-0")
    assert lvef["valueQuantity"] == {"value": 31, "unit": "%", "system": UCUM, "code": "%"}
    assert lvef["method"]["coding"][0]["code"] == "125209"  # Teichholz
    assert lvef["bodySite"]["coding"][0]["code"] == "87878005"
    (lvidd,) = by_code(result.observations, "29436-3")
    assert lvidd["valueQuantity"]["value"] == 56 and "method" not in lvidd


def test_other_templates_map_to_nothing():
    sr = other_template(image())
    assert template_of(sr) is None
    result = mapped(sr)
    assert result.template is None and result.observations == []


def test_template_from_root_concept_without_template_sequence():
    sr = tid5200(image())
    del sr.ContentTemplateSequence
    assert template_of(sr) == "5200"
    assert mapped(sr).observations


def test_ill_formed_items_are_skipped_with_a_warning():
    sr = tid5200(image())
    lvidd = item_named(sr, "29436-3")
    del lvidd.MeasuredValueSequence[0].MeasurementUnitsCodeSequence  # no units
    ivsd = item_named(sr, "18154-5")
    value = ivsd.MeasuredValueSequence[0]
    if "FloatingPointValue" in value:
        del value.FloatingPointValue
    value[0x0040A30A] = RawDataElement(Tag(0x0040A30A), "DS", 3, b"abc", 0, True, True)
    result = mapped(sr)
    assert [o["code"]["coding"][0]["code"] for o in result.observations] == [
        "87878005", "18043-0"]
    assert len(result.warnings) == 2
    assert "no measurement units" in result.warnings[0]
    assert "is not a number" in result.warnings[1]

    broken = tid1500(image(), measurements=2)
    group = item_named(broken, "125007")
    del group.RelationshipType  # a broken content tree
    result = mapped(broken)
    assert result.observations == []
    assert any("no relationship type" in w for w in result.warnings)

    empty = tid5200(image())
    item_named(empty, "18043-0").MeasuredValueSequence = []
    result = mapped(empty)
    assert len(by_code(result.observations, "18043-0")) == 0
    assert any("no measured value" in w for w in result.warnings)


def test_bounded_depth_and_count(monkeypatch):
    import sonobridge.mappings.sr as sr_module

    monkeypatch.setattr(sr_module, "MAX_OBSERVATIONS", 3)
    result = mapped(tid1500(image(), measurements=5))
    members = [o for o in result.observations if "valueQuantity" in o]
    assert len(members) == 3
    assert any("more than 3 measurements" in w for w in result.warnings)
    monkeypatch.setattr(sr_module, "MAX_DEPTH", 1)
    result = mapped(tid1500(image(), measurements=1))
    assert result.observations == [] and any("deeper" in w for w in result.warnings)


def test_stored_dicom_json_maps_like_the_dataset():
    """The listener maps the archive's DICOM JSON (core/imaging/metadata.py), not a Dataset:
    both give the same Observations."""
    import io

    import orjson
    from pydicom import dcmread

    from sonobridge.core.imaging.metadata import instance_json
    from tests.dicom_data import to_bytes

    for sr in (tid1500(image(), measurements=2, groups=2), tid5000(image()),
               tid5100(image()), tid5200(image())):
        read = dcmread(io.BytesIO(to_bytes(sr)))
        stored = orjson.loads(orjson.dumps(instance_json(
            read, sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID,
            "1.2.840.10008.1.2.1", None)))
        a, b = (map_sr(data, sop_uid=sr.SOPInstanceUID, study_ref=STUDY,
                       subject_ref=PATIENT, zone="+08:00").observations
                for data in (stored, read))
        assert a == b != []


def test_tid1500_qualitative_evaluations_are_members_too():
    result = mapped(tid1500(image(), measurements=1, qualitative=True))
    (group,) = by_code(result.observations, "125007")
    (echo,) = by_code(result.observations, "370856009")
    assert echo["valueCodeableConcept"]["coding"][0]["code"] == "263709002"
    assert "valueQuantity" not in echo
    assert {"reference": f"Observation/{echo['id']}"} in group["hasMember"]
    assert len(group["hasMember"]) == 2
    assert echo["bodySite"]["coding"][0]["code"] == "10200004"


def test_observation_ids_of_one_sr_share_a_prefix():
    """An SR's Observations sit together in the id-keyed indexes: one prefix per SR, a stable
    id per item, and a different prefix for another SR."""
    first = [observation_id("1.2.3", f"1.{n}") for n in range(1, 6)]
    other = observation_id("1.2.4", "1.1")
    assert len({i.rsplit("-", 1)[0] for i in first}) == 1 and len(set(first)) == 5
    assert other.rsplit("-", 1)[0] != first[0].rsplit("-", 1)[0]
    assert observation_id("1.2.3", "1.1") == first[0] and all(len(i) <= 64 for i in first)
