"""A custom SearchParameter written through one process is searchable in another within about
a second (two cores on one database stand for two workers)."""

from __future__ import annotations

import time

import orjson

from sonobridge.core.resources import SearchSpec
from sonobridge.core.services import SearchParamWatch, open_core

TOWNSHIP = "http://example.org/fhir/StructureDefinition/township"


def test_another_worker_sees_a_new_search_parameter(core, settings):
    other = open_core(settings, run_migrations=False)
    watch = SearchParamWatch(other, interval=0.2)
    watch.start()
    try:
        core.resources.create(core.server, "SearchParameter", {
            "resourceType": "SearchParameter", "url": "http://example.org/sp/township",
            "name": "township", "status": "active", "description": "Township", "code":
            "township", "base": ["Patient"], "type": "string",
            "expression": f"Patient.extension('{TOWNSHIP}').value"})
        deadline = time.monotonic() + 5
        while other.registry.get("Patient", "township") is None:
            assert time.monotonic() < deadline, "the other process never saw the parameter"
            time.sleep(0.05)
        assert time.monotonic() - (deadline - 5) < 1.5  # within the promised second or so
        other.resources.create(other.server, "Patient", {
            "resourceType": "Patient", "extension": [{"url": TOWNSHIP,
                                                      "valueString": "Qingshui"}]})
        found = other.resources.search(other.server, SearchSpec("Patient", [("township",
                                                                             "qing")]))
        bundle = found.bundle if isinstance(found.bundle, dict) else orjson.loads(found.bundle)
        assert len(bundle.get("entry", [])) == 1, bundle
    finally:
        watch.stop()
        other.close()
