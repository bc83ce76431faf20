"""Index rows served from the registry's memo keyed by the top-level elements they come from
(``_memo_roots``: a cast on a choice element keeps only the choices it can keep; composites
too): the same rows as building them every time, for SR Observations with values of their
own, Observations of every value type, Conditions of every onset and the sample data; what a
parameter reads is never left out of its key; the memo serves an SR's measurements."""

from __future__ import annotations

import copy
import json
import random

from sonobridge.core.search.registry import Registry, _Memo
from sonobridge.mappings.sr import map_sr
from tests.core.search.test_index_memo import sample_resources
from tests.mappings.test_sr_builders import image, tid1500, tid5000


def fresh_rows(res_type, resource):
    """Rows from a registry whose memos never serve (every parameter built)."""
    registry = Registry()
    for param in registry.indexed(res_type):
        registry._for_type(res_type).memos.setdefault(param.code, _Memo()).on = False
    return registry.index_rows(res_type, resource)


def canonical(rows):
    return {table: sorted(json.dumps(r, sort_keys=True, default=str) for r in found)
            for table, found in rows.items() if found}


def varied(dataset, rnd):
    """The SR's DICOM JSON with each measured value scaled by a random factor."""
    data = copy.deepcopy(dataset)

    def walk(item):
        for child in (item.get("0040A730") or {}).get("Value") or []:
            for measured in (child.get("0040A300") or {}).get("Value") or []:
                for tag in ("0040A30A", "0040A161"):  # NumericValue, FloatingPointValue
                    element = measured.get(tag)
                    if element and element.get("Value"):
                        value = float(element["Value"][0]) * rnd.uniform(0.5, 1.5)
                        element["Value"] = [round(value, 2)]
            walk(child)

    walk(data)
    return data


def sr_observations(count=6):
    ev, rnd = image(), random.Random(3)
    out = []
    for n in range(count):
        sr = tid1500(ev, measurements=4, groups=2) if n % 2 else tid5000(ev)
        data = varied(sr.to_json_dict(), rnd) if n > 1 else sr.to_json_dict()
        out.extend(map_sr(data, sop_uid=f"1.2.3.{n}", study_ref="ImagingStudy/1.2",
                          subject_ref="Patient/p").observations)
    return out


BASE = {"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}
VALUES = [
    {"valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org",
                       "code": "/min"}},
    {"valueQuantity": {"value": 73, "unit": "/min"}},
    {"valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                                          "code": "17621005"}], "text": "Normal"}},
    {"valueString": "regular"},
    {"valueString": "irregular"},
    {"valueDateTime": "2026-01-02T03:04:05Z"},
    {"valuePeriod": {"start": "2026-01-01", "end": "2026-01-03"}},
    {"valueBoolean": True},
    {"valueInteger": 3},
    {"valueRange": {"low": {"value": 1}, "high": {"value": 2}}},
    {},
    {"component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {"value": 120, "unit": "mmHg"}}]},
    {"component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {"value": 121, "unit": "mmHg"}},
                   {"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "valueCodeableConcept": {"text": "fast"}}]},
]


def every_value_type():
    out = []
    for n, value in enumerate(VALUES * 2):
        resource = {**copy.deepcopy(BASE), "id": f"o{n}", **copy.deepcopy(value)}
        if n >= len(VALUES):  # the same values under another code
            resource["code"]["coding"][0]["code"] = "8310-5"
        out.append(resource)
    return out


def test_memoised_rows_equal_built_rows_read_three_times_in_turn():
    registry = Registry()
    items = sr_observations() + every_value_type() + sample_resources()
    for _ in range(3):
        for resource in items:
            kind = resource["resourceType"]
            assert canonical(registry.index_rows(kind, resource)) == \
                canonical(fresh_rows(kind, resource)), resource.get("id")


def test_each_value_after_each_other_value_under_one_code():
    """Every pair in both orders: the second is never served the first one's rows."""
    for first in VALUES:
        for second in VALUES:
            registry = Registry()
            a = {**copy.deepcopy(BASE), **copy.deepcopy(first)}
            b = {**copy.deepcopy(BASE), **copy.deepcopy(second)}
            registry.index_rows("Observation", a)
            assert canonical(registry.index_rows("Observation", b)) == \
                canonical(fresh_rows("Observation", b)), (first, second)


ONSETS = [{"onsetDateTime": "2026-01-02"}, {"onsetAge": {"value": 3, "unit": "a"}},
          {"onsetPeriod": {"start": "2026-01-01"}}, {"onsetString": "in spring"},
          {"onsetRange": {"low": {"value": 1}}}, {"abatementDateTime": "2026-02-01"},
          {"abatementString": "gone"}, {"abatementAge": {"value": 4, "unit": "a"}}, {}]


def test_each_onset_after_each_other_onset():
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p"},
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]}}
    for first in ONSETS:
        for second in ONSETS:
            registry = Registry()
            registry.index_rows("Condition", {**condition, **first})
            b = {**condition, **second}
            assert canonical(registry.index_rows("Condition", b)) == \
                canonical(fresh_rows("Condition", b)), (first, second)


def test_memo_keys_hold_what_the_rows_come_from():
    registry = Registry()
    plan = {step.param.code: step.order
            for step in registry._plan("Observation", registry._for_type("Observation"))}
    assert plan["value-string"] == ("valueCodeableConcept", "valueString")  # and its .text
    assert plan["value-quantity"] == ("valueQuantity", "valueSampledData")
    assert plan["combo-value-concept"] == ("component", "valueCodeableConcept")
    assert plan["code"] == ("code",)
    assert plan["code-value-quantity"] == ("code", "valueQuantity")
    assert plan["code-value-string"] == ("code", "valueString")
    assert plan["code-value-concept"] == ("code", "valueCodeableConcept")
    assert set(plan["code-value-date"]) >= {"code", "valueDateTime", "valuePeriod"}
    assert plan["combo-code-value-quantity"] == ("code", "component", "valueQuantity")
    assert plan["component-code-value-concept"] == ("component",)


def test_an_srs_measurements_are_served_their_code_rows():
    registry = Registry()
    observations = sr_observations(4)
    for obs in observations:
        registry.index_rows("Observation", obs)
    memos = registry._for_type("Observation").memos
    # a measurement's code-value-date rows would be its code's alone; as a follower of
    # code-value-quantity it has none (no group of a measurement is complete for it), and
    # they are served again from the memo
    assert memos["code-value-date"].on and memos["code-value-date"].hits > 0
    rows = registry.index_rows("Observation", observations[1])["idx_token"]
    assert [r["code"] for r in rows if r["param"] == "code-value-quantity$0"] == \
        [observations[1]["code"]["coding"][0]["code"]]
    assert not [r for r in rows if r["param"].startswith(("code-value-date",
                                                          "code-value-concept"))]
