"""The compiled fast path gives what fhirpathpy gives, expression by expression, and hands
back to fhirpathpy the values it does not decide (dates compared as values, non-booleans in
logic, a non-choice element under ofType)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sonobridge.core.views.fastpath import Fallback, compile_fast
from sonobridge.core.views.fhirpath import Expression

OBS = {"resourceType": "Observation", "id": "o1", "status": "final",
       "code": {"coding": [{"system": "http://loinc.org", "code": "11820-8"},
                           {"system": "http://x", "code": "y"}], "text": "Breast US 乳腺"},
       "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 45.5, "unit": "mm"},
       "effectiveDateTime": "2026-11-05T10:00:00+08:00",
       "extension": [{"url": "u1", "valueString": "a"}, {"url": "u2", "valueInteger": 3}],
       "derivedFrom": [{"reference": "ImagingStudy/s1"},
                       {"reference": "http://other/fhir/DocumentReference/d1/_history/2"}],
       "component": [{"code": {"text": "c1"}, "valueString": "v1"},
                     {"code": {"text": "c2"}, "valueBoolean": True}]}
CONSTANTS = {"resource": OBS, "rootResource": OBS, "rowIndex": 2, "s": "final", "n": 1}

SAME = [
    "status", "code.coding.code", "code.coding[1].system", "code.coding[5].code",
    "code.coding.where(system = 'http://loinc.org').code.first()",
    "code.coding.where(system = 'http://loinc.org' or code = 'y').count()",
    "code.coding.where(system = 'http://loinc.org' and code = 'y').exists()",
    "value.ofType(Quantity).value", "value.ofType(string)", "value.unit",
    "component.value.ofType(string)", "component.where(value.ofType(boolean) = true).code.text",
    "code.coding.code.join('|')", "code.coding.code.join()", "subject.getReferenceKey(Patient)",
    "subject.getReferenceKey(Group)", "derivedFrom.getReferenceKey()",
    "getResourceKey()", "extension('u2').value", "extension.where(url = 'u1').value",
    "status = %s", "status != %s", "%rowIndex", "code.coding[%n].code", "id.empty()",
    "issued.empty()", "(status = 'final').not()", "code.text.contains('乳腺')",
    "code.text.lower().startsWith('breast')", "code.text.endsWith('US')",
    "Observation.status", "$this.status", "status.exists() and code.exists()",
    "issued.exists() or status = 'x'", "component.exists(value.ofType(boolean) = true)",
    "true", "'a\\'b'", "1.50", "code.coding.last().code",
]


@pytest.mark.parametrize("text", SAME)
def test_fast_equals_fhirpathpy(text: str) -> None:
    expr = Expression(text, frozenset({"s", "n"}))
    assert expr.fast is not None, f"{text} should compile"
    slow = expr.values(OBS, CONSTANTS)
    expr.use_fast = True
    fast = expr.values(OBS, CONSTANTS)

    def norm(v: object) -> object:
        return float(v) if isinstance(v, int | float | Decimal) and \
            not isinstance(v, bool) else v

    assert [norm(v) for v in fast] == [norm(v) for v in slow]


@pytest.mark.parametrize("text", [
    "effective.ofType(dateTime) = '2026-11-05T02:00:00Z'",  # dates compare as values
    "status = '2026-11-05'", "'10:00' = status",  # a date-like text on either side
    "status and true",  # not a boolean
    "code.coding.code = 'y'",  # a collection compared
    "code.ofType(CodeableConcept)",  # code is not a choice element here
])
def test_undecided_values_fall_back_to_fhirpathpy(text: str) -> None:
    expr = Expression(text, frozenset())
    if expr.fast is None:
        return  # not compiled at all: fhirpathpy only
    with pytest.raises(Fallback):
        expr.fast([OBS], CONSTANTS)
    expr.use_fast = True
    try:
        fast = expr.values(OBS, CONSTANTS)
    except Exception as exc:
        fast = [type(exc).__name__]
    expr.use_fast = False
    try:
        slow = expr.values(OBS, CONSTANTS)
    except Exception as exc:
        slow = [type(exc).__name__]
    assert fast == slow


@pytest.mark.parametrize("text", [
    "name.given.union(name.family)", "birthDate > @2000-01-01", "iif(active, 1, 2)",
    "value.ofType(Quantity).value.lowBoundary()", "%ucum", "a | b", "descendants()",
])
def test_outside_the_subset_is_not_compiled(text: str) -> None:
    assert compile_fast(Expression(text, frozenset())._tree) is None
