"""Composite index rows built once per component and node within one resource (the registry's
``shared`` rows): the same rows as building each composite's components on their own, for
Observations with components, SR measurement Observations and the sample data."""

from __future__ import annotations

import json
from importlib import resources

from sonobridge.core.search.registry import Registry
from sonobridge.mappings.sr import map_sr
from tests.mappings.test_sr_builders import image, tid1500, tid5000


class Unshared(Registry):
    """Every composite's components extracted on their own (no sharing)."""

    def _composite_rows(self, param, nodes, out, shared=None, parts=None):
        super()._composite_rows(param, nodes, out, None)


def canonical(rows):
    return {table: sorted(json.dumps(r, sort_keys=True, default=str) for r in found)
            for table, found in rows.items()}


BLOOD_PRESSURE = {
    "resourceType": "Observation", "id": "bp", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}], "text": "BP"},
    "component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
         "valueQuantity": {"value": 80, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
         "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                                              "code": "17621005"}]}},
    ],
    "valueString": "120/80",
}


def observations():
    ev = image()
    out = [BLOOD_PRESSURE]
    for sr in (tid1500(ev, measurements=3, groups=2), tid5000(ev)):
        out.extend(map_sr(sr, sop_uid=sr.SOPInstanceUID, study_ref="ImagingStudy/1.2",
                          subject_ref="Patient/p").observations)
    return out


def test_shared_component_rows_equal_unshared_ones():
    shared, unshared = Registry(), Unshared()
    for obs in observations():
        rows = shared.index_rows("Observation", obs)
        assert canonical(rows) == canonical(unshared.index_rows("Observation", obs)), obs["id"]
    bp = canonical(shared.index_rows("Observation", BLOOD_PRESSURE))
    # the systolic pair stays in one group, apart from the diastolic one
    quantity = [json.loads(r) for r in bp["idx_quantity"]]
    systolic = [r for r in quantity
                if r["param"] == "component-code-value-quantity$1" and r["value"] == 120]
    tokens = [json.loads(r) for r in bp["idx_token"]]
    codes = {r["code"]: r["grp"] for r in tokens
             if r["param"] == "component-code-value-quantity$0"}
    assert len(systolic) == 1 and systolic[0]["grp"] == codes["8480-6"] != codes["8462-4"]


def test_rows_are_not_shared_between_composites():
    rows = Registry().index_rows("Observation", BLOOD_PRESSURE)["idx_token"]
    assert len({id(r) for r in rows}) == len(rows)
    first = [r for r in rows if r["param"] == "code-value-quantity$0"]
    first[0]["code"] = "changed"
    assert all(r["code"] != "changed" for r in rows if r["param"] == "combo-code-value-quantity$0")


def test_a_follower_composite_keeps_complete_groups_only():
    """code-value-concept/-date/-string share code-value-quantity's first component: a group
    without their value (never matched) is left to the leader's $0 rows, which :missing
    reads for all of them. The quantity composite leads (measurements are complete for it)."""
    registry = Registry()
    for follower in ("code-value-date", "code-value-concept", "code-value-string"):
        assert registry.composite_leader(registry.get("Observation", follower)).code == \
            "code-value-quantity"
    assert registry.composite_leader(registry.get("Observation", "code-value-quantity")) is None
    rows = registry.index_rows("Observation", BLOOD_PRESSURE)
    params = {r["param"] for table in rows.values() for r in table}
    assert {"code-value-quantity$0", "code-value-string$0", "code-value-string$1"} <= params
    assert not {p for p in params if p.startswith(("code-value-date", "code-value-concept"))}
    assert "code-value-quantity$1" not in params  # BP has no valueQuantity of its own
    # components: 8480-6 and 8462-4 have quantities, 8867-4 a concept
    leader = {r["grp"] for r in rows["idx_token"]
              if r["param"] == "component-code-value-quantity$0"}
    concept = {r["grp"] for r in rows["idx_token"]
               if r["param"] == "component-code-value-concept$0"}
    assert len(leader) == 3 and len(concept) == 1


def test_composite_token_rows_carry_no_text():
    """The composite is searched on system and code only: its token rows stay out of the
    (partial) text index, while the plain ``code`` row keeps the text for ``:text``; a
    text-only code still gives its composite a first component, for ``:missing``."""
    rows = Registry().index_rows("Observation", BLOOD_PRESSURE)["idx_token"]
    composite = [r for r in rows if "$" in r["param"]]
    assert composite and all(r["text"] is None for r in composite)
    assert "bp" in {r["text"] for r in rows if r["param"] == "code"}
    text_only = {**BLOOD_PRESSURE, "code": {"text": "BP"}}
    first = [r for r in Registry().index_rows("Observation", text_only)["idx_token"]
             if r["param"] == "code-value-string$0"]
    assert first == [{"param": "code-value-string$0", "system": None, "code": None,
                      "text": None, "grp": 0}]


def test_sample_data():
    bundle = json.loads(resources.files("sonobridge.app").joinpath("sample_bundle.json")
                        .read_text("utf-8"))
    shared, unshared = Registry(), Unshared()
    for entry in bundle["entry"]:
        resource = entry.get("resource")
        if resource:
            kind = resource["resourceType"]
            assert canonical(shared.index_rows(kind, resource)) == \
                canonical(unshared.index_rows(kind, resource)), resource["id"]
