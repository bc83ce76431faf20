"""The indicators' fast path (views read in two steps, rows cached by content, referenced
studies read for their device alone) gives the MeasureReports and view rows of the plain
path: ``ViewService.run`` over every shipped view, evaluated afresh for each indicator."""

from __future__ import annotations

from typing import Any

import pytest

from sonobridge.core.measures.definitions import MEASURES
from sonobridge.core.measures.evaluate import evaluate, period_of
from sonobridge.core.measures.indicators import ID, Data, Row
from sonobridge.core.views.cache import RowCache
from sonobridge.core.views.definition import compile_view
from sonobridge.core.views.service import RunOptions, ViewService
from sonobridge.core.views.shipped import SHIPPED
from tests.core.qc_world import stored_world

PERIODS = [("2026-11-01", "2026-11-30"), ("2026-01-01", "2026-12-31"),
           ("2026-11-10", "2026-11-12")]


class PlainData(Data):
    """The reference: every view run with ``ViewService.run``, all columns, no cache (the
    indicators' data before the fast path)."""

    def rows(self, view_id: str, query: tuple[tuple[str, str], ...] = ()) -> list[Row]:
        return list(self.service.run(self.caller, compile_view(SHIPPED[view_id]),
                                     RunOptions(query=query)))

    def by_ids(self, view_id: str, res_type: str, ids: Any) -> dict[str, Row]:
        wanted = sorted({i for i in ids if isinstance(i, str) and ID.match(i)})
        if not wanted or not self.readable(res_type):
            return {}
        found = {}
        for start in range(0, len(wanted), 100):
            query = (("_id", ",".join(wanted[start:start + 100])),)
            for row in self.service.run(self.caller, compile_view(SHIPPED[view_id]),
                                        RunOptions(query=query)):
                found[row["id"]] = row
        return found


@pytest.fixture
def loaded(core):
    resources = stored_world(core, seed=11, n=400)
    return resources


def _reports(data: Data, zone: str = "+08:00") -> list[dict[str, Any]]:
    out = []
    for start, end in PERIODS:
        period = period_of(start, end, zone)
        for measure in MEASURES.values():
            for report_type in ("summary", "subject-list"):
                report = evaluate(measure, data, period, report_type=report_type)
                report.pop("date")
                out.append(report)
    return out


def test_measure_reports_equal_the_plain_path_cold_and_warm(core, loaded):
    service = ViewService(core.store, core.search)
    expected = _reports(PlainData(service, core.server))
    cache = RowCache(100_000)
    assert _reports(Data(service, core.server, cache)) == expected  # cold
    assert len(cache) > 0
    assert _reports(Data(service, core.server, cache)) == expected  # every row from the cache
    # A cache too small to hold anything: every resource read each time.
    assert _reports(Data(service, core.server, RowCache(0))) == expected


def test_a_changed_resource_is_read_again(core, loaded):
    service = ViewService(core.store, core.search)
    cache = RowCache(100_000)
    before = _reports(Data(service, core.server, cache))
    positive = next(r for r in loaded if r["resourceType"] == "DiagnosticReport"
                    and r["status"] == "final" and r["issued"].startswith("2026-11-1")
                    and r.get("conclusionCode", [{}])[0].get("coding", [{}])[0].get("code")
                    != "17621005")
    changed = {**positive, "conclusionCode": [{"coding": [
        {"system": "http://snomed.info/sct", "code": "17621005"}]}]}
    changed.pop("meta", None)
    with core.store.write() as writer:
        writer.update("DiagnosticReport", positive["id"], changed)
        writer.delete("ImagingStudy", positive["imagingStudy"][0]["reference"].split("/")[1])
    after = _reports(Data(service, core.server, cache))
    assert after == _reports(PlainData(service, core.server))
    assert after != before


@pytest.mark.parametrize("view_id", sorted(SHIPPED))
def test_cached_view_rows_equal_the_plain_run(core, loaded, view_id):
    service = ViewService(core.store, core.search)
    view = compile_view(SHIPPED[view_id])
    cache = RowCache(100_000)
    for options in (RunOptions(), RunOptions(patient="p1"), RunOptions(limit=7)):
        plain = list(service.run(core.server, view, options))
        assert list(service.run_cached(core.server, view, view_id, cache, options,
                                       batch=33)) == plain
        assert list(service.run_cached(core.server, view, view_id, cache, options,
                                       batch=33)) == plain
        assert plain or options.limit or options.patient


def test_content_read_is_the_version_matched(core, loaded):
    """A resource changed between finding it and reading it is left out, never read at a
    version the conditions did not match."""
    service = ViewService(core.store, core.search)
    page = next(service._matched(core.server, "Device", RunOptions()))
    wanted = {m.rid: m.version_id for m in page}
    assert len(service._read(wanted)) == len(page)
    with core.store.write() as writer:
        writer.update("Device", "dev1", {"resourceType": "Device", "id": "dev1",
                                         "status": "inactive"})
    read = service._read(wanted)
    assert len(read) == len(page) - 1
    assert "dev1" not in {resource["id"] for _, resource in read}


def test_the_cache_keeps_the_most_recently_used():
    cache = RowCache(2)
    cache.put("v", b"a", ["x"], [{"x": 1}])
    cache.put("v", b"b", ["x"], [{"x": 2}])
    assert cache.get("v", b"a") == ((1,),)  # a is now the most recent
    cache.put("v", b"c", ["x"], [{"x": 3}])
    assert cache.get("v", b"b") is None and cache.get("v", b"a") == ((1,),)
    rows = [{"x": [1, 2]}]
    cache.put("v", b"d", ["x"], rows, collections=True)
    rows[0]["x"].append(3)
    assert cache.get("v", b"d") == (([1, 2],),)


def test_get_many_equals_get_and_touches_alike():
    cache = RowCache(3)
    cache.put("v", b"a", ["x"], [{"x": 1}])
    cache.put("v", b"b", ["x"], [{"x": 2}, {"x": 3}])
    cache.put("v", b"c", ["x"], [])
    cache.put("w", b"a", ["x"], [{"x": 9}])  # another view's: pushes v/a out
    assert cache.get_many("v", [b"b", b"a", None, b"c", b"zz"]) == [
        ((2,), (3,)), None, None, (), None]
    assert cache.get_many("w", [b"a"]) == [((9,),)] == [cache.get("w", b"a")]
    cache.get_many("v", [b"b"])  # b most recent now: c goes first
    cache.put("v", b"d", ["x"], [{"x": 4}])
    assert cache.get("v", b"c") is None and cache.get("v", b"b") == ((2,), (3,))
