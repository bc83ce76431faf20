"""What the indicators' scale work added (issue 15, performance): views looked up by id
without paging, fewer larger pages for a query narrowed by the search index, the compact row
cache, and the generated world spread over a year."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from sonobridge.core.views import service as service_module
from sonobridge.core.views.cache import RowCache
from sonobridge.core.views.definition import compile_view
from sonobridge.core.views.service import RunOptions, ViewService
from sonobridge.core.views.shipped import SHIPPED
from tests.core.qc_world import stored_world, world


@pytest.fixture
def loaded(core):
    resources = stored_world(core, seed=3, n=120)
    return resources


def test_rows_by_id_equal_the_id_search(core, loaded):
    service = ViewService(core.store, core.search)
    view = compile_view(SHIPPED["us-exams"])
    ids = ("st1", "st5", "st7", "nope", "st2")
    by_search = list(service.run(core.server, view, RunOptions(query=(("_id", ",".join(ids)),))))
    assert by_search
    cache = RowCache(1000)
    for _ in range(2):  # cold, then from the cache
        assert list(service.run_cached(core.server, view, "us-exams", cache,
                                       RunOptions(ids=ids))) == by_search
    with core.store.write() as writer:
        writer.delete("ImagingStudy", by_search[0]["id"])
    assert list(service.run_cached(core.server, view, "us-exams", cache,
                                   RunOptions(ids=ids))) == by_search[1:]
    assert list(service.run(core.server, view, RunOptions(ids=()))) == []


def test_narrowed_pages_give_every_row_once(core, loaded, monkeypatch):
    service = ViewService(core.store, core.search)
    view = compile_view(SHIPPED["us-reports"])
    options = RunOptions(query=(("issued", "ge2026-10-01T00:00:00Z"),
                                ("issued", "le2026-12-31T00:00:00Z")))
    whole = list(service.run(core.server, view, options))
    assert len(whole) > 10
    monkeypatch.setattr(service_module, "NARROWED_PAGE", 7)
    assert list(service.run(core.server, view, options)) == whole
    assert list(service.run_cached(core.server, view, "us-reports", RowCache(10),
                                   options, batch=5)) == whole


def test_compact_cache_entries():
    cache = RowCache(10)
    cache.put("v", b"none", ["x"], [])
    cache.put("v", b"one", ["x", "y"], [{"x": "final", "y": 1}])
    cache.put("v", b"two", ["x"], [{"x": "a"}, {"x": "b"}])
    cache.put("w", b"one", ["x"], [{"x": "other view"}])
    assert cache.get("v", b"none") == ()
    assert cache.get("v", b"one") == (("final", 1),)
    assert cache.get("v", b"two") == (("a",), ("b",))
    assert cache.get("w", b"one") == (("other view",),)
    assert len(cache) == 4
    # The short strings of different resources' rows are one object.
    cache.put("v", b"again", ["x", "y"], [{"x": "".join(["fin", "al"]), "y": 2}])
    first, again = cache.get("v", b"one"), cache.get("v", b"again")
    assert first is not None and again is not None and first[0][0] is again[0][0]
    off = RowCache(0)
    off.put("v", b"one", ["x"], [{"x": 1}])
    assert len(off) == 0 and off.get("v", b"one") is None


def test_the_spread_world_fills_every_month():
    resources = world(n=2400, spread=True)
    months = Counter(datetime.fromisoformat(r["authoredOn"].replace("Z", "+00:00"))
                     .astimezone(UTC).month for r in resources
                     if r["resourceType"] == "ServiceRequest")
    assert len(months) == 12 and max(months.values()) < 2 * min(months.values())
    # The default world is the one the existing tests count: around November.
    assert world(n=60) == world()


@pytest.mark.parametrize("value", [
    "2026-11-03T10:00:00+08:00", "2026-11-03T10:00:00Z", "2026-11-03T10:00:00",
    "2026-11-03T10:00:00.5-05:30", "2026-11-03T23:59:59.123456789+14:00",
    "2026-11-03T10:00:60Z", "2026-11-03T25:00:00Z", "2026-02-30T10:00:00Z",
    "2026-11-03T10:00+08:00", "2026-11-03", "2026-11", "2026", "2026-11-03 10:00:00Z",
    "0001-01-01T00:00:00Z", "not a date", "2026-11-03T10:00:00+0800", "2026-11-03T1:00:00Z",
    "2026-11-03T10:00:00.Z", "2026-11-03T10:00:00+08"])
def test_instants_read_fast_equal_the_general_parser(value):
    """The fromisoformat fast path gives what parse_period gives, None where it refuses."""
    from sonobridge.core.errors import CoreError
    from sonobridge.core.measures.indicators import _instant
    from sonobridge.core.search.dates import parse_period

    try:
        expected: int | None = parse_period(value, "value", require_tz=False)[0]
    except CoreError:
        expected = None
    _instant.cache_clear()
    assert _instant(value) == expected


def test_the_last_second_has_its_instant():
    from sonobridge.core.measures.indicators import instant

    assert instant("9999-12-31T23:59:59Z") == 253_402_300_799_000_000
