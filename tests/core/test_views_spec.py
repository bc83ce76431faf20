"""The SQL on FHIR v2 specification's own test suite (tests/fixtures/sql-on-fhir, MIT
licence in that folder), every case: rows compared as a multiset (SQL rows have no order),
numbers by value, ``expectError`` cases must be refused with a ViewError."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sonobridge.core.views.definition import ViewError, compile_view
from sonobridge.core.views.runner import rows

SPEC = Path(__file__).parent.parent / "fixtures" / "sql-on-fhir" / "tests"
# Cases skipped, with the reason (kept empty when every case passes).
SKIPPED: dict[tuple[str, str], str] = {}


def _cases() -> list[Any]:
    out = []
    for file in sorted(SPEC.glob("*.json")):
        suite = json.loads(file.read_text(encoding="utf-8"), parse_float=Decimal)
        for case in suite["tests"]:
            key = (file.stem, case["title"])
            marks = [pytest.mark.skip(reason=SKIPPED[key])] if key in SKIPPED else []
            out.append(pytest.param(suite["resources"], case, id=f"{file.stem}:{case['title']}",
                                    marks=marks))
    return out


def _norm(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _key(row: dict[str, Any]) -> str:
    return json.dumps(_norm(row), sort_keys=True)


def _run(resources: list[dict[str, Any]], view_body: Any, fast: bool = True
         ) -> list[dict[str, Any]]:
    view = compile_view(view_body, fast=fast)
    return [row for resource in resources for row in rows(view, resource)]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "fhirpathpy"])
@pytest.mark.parametrize(("resources", "case"), _cases())
def test_spec_case(resources: list[dict[str, Any]], case: dict[str, Any], fast: bool) -> None:
    """Each case on the compiled fast path (where the view allows it) and on fhirpathpy."""
    if case.get("expectError"):
        with pytest.raises(ViewError) as info:
            _run(resources, case["view"], fast)
        assert info.value.status in (400, 422)
        assert info.value.outcome()["issue"][0]["expression"]
        return
    got = _run(resources, case["view"], fast)
    if "expectColumns" in case:
        assert compile_view(case["view"]).columns == case["expectColumns"]
    if "expect" in case:
        assert sorted(map(_key, got)) == sorted(map(_key, case["expect"]))


def test_the_suite_is_all_there() -> None:
    """The pass count recorded in docs/quality.md is over this many cases."""
    assert len(_cases()) == 134


def test_the_fast_path_covers_most_cases() -> None:
    """How many of the suite's views run on the fast path (the rest use fhirpathpy)."""
    fast = total = 0
    for param in _cases():
        case = param.values[1]
        if case.get("expectError"):
            continue
        view = compile_view(case["view"])
        total += 1
        fast += all(c.expression.use_fast for c in _columns(view.root))
    assert fast >= total * 0.7, (fast, total)


def _columns(select: Any) -> list[Any]:
    out = list(select.columns)
    for sub in select.selects + select.union:
        out += _columns(sub)
    return out
