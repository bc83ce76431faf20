"""The SR mapping's Observations are valid by construction (mappings/sr.py): whatever text an
SR's content items hold, every Observation it makes passes the R4 validator the REST API uses
(``core/validation.py``) and, when it claims SonoUltrasoundObservation, the profile validator
(``core/profiles``). The core relies on it: it writes them without checking each again
(core/reports.py). Arbitrary content comes from hypothesis, written into the DICOM JSON the
archive keeps (what the listener maps)."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sonobridge.conformance.ig.build import guide
from sonobridge.core.profiles.registry import ProfileRegistry
from sonobridge.core.validation import validate
from sonobridge.mappings.sr import OBSERVATION_PROFILE, as_json, map_sr
from tests.mappings.test_sr_builders import image, tid1500, tid5000, tid5100, tid5200

STUDY = "ImagingStudy/1.2.3"
# The attributes whose text the mapping copies (codes, meanings, dates, zones, UIDs, text,
# numbers), in DICOM JSON tags.
COPIED = {
    "00080100": "CodeValue", "00080102": "CodingSchemeDesignator", "00080104": "CodeMeaning",
    "00080119": "LongCodeValue", "00080120": "URNCodeValue", "00080023": "ContentDate",
    "00080033": "ContentTime", "0040A032": "ObservationDateTime",
    "00080201": "TimezoneOffsetFromUTC", "0040A124": "UID", "0040A171": "ObservationUID",
    "0040A160": "TextValue", "0040A30A": "NumericValue", "0040A161": "FloatingPointValue",
}
TRICKY = ["", " ", "  mm ", "a  b", "\x01x", "x\x1f", "\t", "\u3000", "2026 1", "20261399",
          "20260230", "00000101", "99999999", "246060", "2360", "+9999", "-1500", "+1400",
          "+0800", "1.2. 3", "1..2", "abc", "NaN", "inf", "1e400", "-0", "99SONO", "S C T",
          "超声", "\ud7ff", "x" * 300]


@cache
def registry() -> ProfileRegistry:
    found = ProfileRegistry()
    found.add([r for r in guide().conformance
               if r["resourceType"] in ("StructureDefinition", "ValueSet", "CodeSystem")])
    return found


@cache
def sources() -> tuple[dict[str, Any], ...]:
    ev = image()
    return tuple(as_json(sr) for sr in (tid1500(ev, measurements=2, groups=2), tid5000(ev),
                                        tid5100(ev), tid5200(ev)))


def slots(item: Any, out: list[tuple[dict[str, Any], str]]) -> list[tuple[dict[str, Any], str]]:
    """Every (element, tag) of a copied attribute in a DICOM JSON tree."""
    if isinstance(item, dict):
        for tag, element in item.items():
            if not isinstance(element, dict):
                continue
            if tag in COPIED:
                out.append((element, tag))
            for value in element.get("Value") or []:
                slots(value, out)
    return out


def assert_valid(observations: list[dict[str, Any]]) -> None:
    for obs in observations:
        validate(obs, "Observation")  # raises CoreError when not R4
        if OBSERVATION_PROFILE in (obs.get("meta") or {}).get("profile", []):
            issues = registry().validate(obs, OBSERVATION_PROFILE)
            assert issues is not None
            errors = [i.diagnostics for i in issues if i.severity in ("error", "fatal")]
            assert errors == [], (errors, obs)


def test_the_profile_is_held():
    assert registry().profile(OBSERVATION_PROFILE) is not None


@pytest.mark.parametrize("subject", ["Patient/p1", "Group/g1", None])
def test_the_builders_srs_map_valid(subject):
    for source in sources():
        result = map_sr(source, sop_uid="1.2.3.4", study_ref=STUDY, subject_ref=subject)
        assert result.observations
        assert_valid(result.observations)
        claims = {bool(o.get("meta")) for o in result.observations}
        assert claims == {subject == "Patient/p1"}  # the profile wants a Patient


@pytest.mark.parametrize("value", TRICKY)
def test_every_copied_attribute_with_tricky_text(value):
    for source in sources():
        for tag in COPIED:  # the attribute everywhere in the tree at once
            sr = copy.deepcopy(source)
            for element, found in slots(sr, []):
                if found == tag:
                    element["Value"] = [value]
            result = map_sr(sr, sop_uid="1.2.3.4", study_ref=STUDY, subject_ref="Patient/p1",
                            zone="+08:00")
            assert_valid(result.observations)


def test_what_cleaning_does():
    sr = copy.deepcopy(sources()[3])  # TID 5200
    for element, tag in slots(sr, []):
        if tag == "00080100" and element["Value"] == ["18043-0"]:
            element["Value"] = ["  18043-0 "]
        elif tag == "00080104" and element["Value"] == ["mm"]:
            element["Value"] = ["\x02 "]
        elif tag == "00080023":
            element["Value"] = ["20260230"]
    result = map_sr(sr, sop_uid="1.2.3.4", study_ref=STUDY, subject_ref="Patient/p1")
    assert_valid(result.observations)
    lvef = [o for o in result.observations if o["code"]["coding"][0]["code"] == "18043-0"]
    assert len(lvef) == 1  # the code without its spaces
    lvidd = [o for o in result.observations if o["code"]["coding"][0]["code"] == "29436-3"]
    assert lvidd[0]["valueQuantity"]["unit"] == "mm"  # the code when the meaning is empty
    assert lvidd[0]["valueQuantity"]["code"] == "mm"
    assert all("effectiveDateTime" not in o for o in result.observations)  # no 30 February


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 3),
       changes=st.lists(st.tuples(st.integers(0, 10_000),
                                  st.one_of(st.sampled_from(TRICKY), st.text(max_size=40))),
                        min_size=1, max_size=8),
       subject=st.sampled_from(["Patient/p1", "Device/d", None]))
def test_arbitrary_text_in_the_content_items_maps_valid(which, changes, subject):
    sr = copy.deepcopy(sources()[which])
    found = slots(sr, [])
    for index, value in changes:
        element, _ = found[index % len(found)]
        element["Value"] = [value]
    result = map_sr(sr, sop_uid="1.2.3.4", study_ref=STUDY, subject_ref=subject,
                    zone="+08:00")
    assert_valid(result.observations)
