"""Whatever bytes arrive, the CDA checks answer with problems (never an exception) and the
reader either reads a valid document or raises ``CdaError``: truncations, byte flips,
attribute values swapped for odd ones, elements dropped, all from a valid 检查报告."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from sonobridge.mappings.cda import CdaError
from sonobridge.mappings.cda.parse import read_report
from sonobridge.mappings.cda.validate import problems
from tests.mappings.test_cda import _report

VALID = _report()
ODD = ["", " ", "-1", "0", "99999999999999999999", "2026-13-45", "NaN", "1e309", "&amp;",
       "\ufffd", "张" * 300, "urn:oid:", "..", "<", "DE04.50.131.00"]


def _outcome(data: bytes) -> None:
    found = problems(data)
    assert isinstance(found, list)
    try:
        parsed = read_report(data)
    except CdaError as exc:
        assert exc.problems
        return
    assert not found
    assert parsed.report["resourceType"] == "DiagnosticReport"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(VALID)), st.binary(max_size=8))
def test_truncated_or_spliced(cut: int, junk: bytes) -> None:
    _outcome(VALID[:cut] + junk)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.sampled_from(ODD), st.booleans())
def test_attribute_values_and_elements(seed: int, odd: str, drop: bool) -> None:
    rng = random.Random(seed)
    root = etree.fromstring(VALID)
    elements = list(root.iter())
    target = rng.choice(elements[1:])
    if drop:
        target.getparent().remove(target)
    elif target.attrib:
        target.set(rng.choice(sorted(target.attrib)), odd)
    else:
        target.text = odd
    _outcome(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([*ODD, "NaN", "INF", "-0", "1.5e3"]))
def test_measurement_values_read_back_as_finite_numbers(odd: str) -> None:
    data = VALID.replace(b'<value value="23" xsi:type="REAL"/>',
                         f'<value value="{odd}" xsi:type="REAL"/>'.encode())
    try:
        parsed = read_report(data)
    except CdaError:
        return
    for obs in parsed.report.get("contained", []):
        value = obs.get("valueQuantity", {}).get("value", 0)
        assert value == value and abs(value) < float("inf")
