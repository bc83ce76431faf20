"""The registry's memo of index rows: the same rows as extracting every time, whatever the
order and repetition of resources, and off for parameters whose values do not repeat."""

from __future__ import annotations

import copy
import json
from importlib import resources

from sonobridge.core.audit import Record, to_audit_event
from sonobridge.core.search.registry import Registry, _Memo


def fresh_rows(res_type, resource):
    """Rows from a registry whose memos never serve (every parameter extracted)."""
    registry = Registry()
    for param in registry.indexed(res_type):
        memo = registry._for_type(res_type).memos.setdefault(param.code, _Memo())
        memo.on = False
    return registry.index_rows(res_type, resource)


def canonical(rows):
    return {table: sorted(json.dumps(r, sort_keys=True, default=str) for r in found)
            for table, found in rows.items()}


def sample_resources():
    bundle = json.loads(resources.files("sonobridge.app").joinpath("sample_bundle.json")
                        .read_text("utf-8"))
    return [e["resource"] for e in bundle["entry"] if "resource" in e]


def test_memoised_rows_equal_extracted_rows_for_the_sample_data_read_three_times():
    registry = Registry()
    items = sample_resources()
    assert len(items) > 10
    for _ in range(3):
        for resource in items:
            assert canonical(registry.index_rows(resource["resourceType"], resource)) == \
                canonical(fresh_rows(resource["resourceType"], resource)), resource["id"]


def test_audit_events_that_share_agents_get_their_own_entities_and_patients():
    registry = Registry()
    for i in range(300):
        event = to_audit_event(Record("rest", "R", "read", who="client-1", client_id="c1",
                                      ip="10.0.0.1", resource=f"Observation/o{i}",
                                      patient=f"Patient/p{i % 7}"))
        rows = registry.index_rows("AuditEvent", event)
        assert canonical(rows) == canonical(fresh_rows("AuditEvent", event))
        targets = {(r["param"], r["target_id"]) for r in rows["idx_reference"]}
        assert ("entity", f"o{i}") in targets and ("patient", f"p{i % 7}") in targets
    memos = registry._for_type("AuditEvent").memos
    assert memos["agent"].on  # the same agents every time
    assert not memos["entity"].on  # a new entity each time: the memo turned itself off


def test_a_changed_element_is_not_served_from_the_memo_and_rows_are_not_shared_mutably():
    registry = Registry()
    obs = {"resourceType": "Observation", "id": "a", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "11979-2"}]},
           "subject": {"reference": "Patient/p1"}}
    first = registry.index_rows("Observation", obs)
    changed = copy.deepcopy(obs)
    changed["code"]["coding"][0]["code"] = "11878-6"
    second = registry.index_rows("Observation", changed)
    codes = {r["code"] for r in second["idx_token"] if r["param"] == "code"}
    assert codes == {"11878-6"}
    again = registry.index_rows("Observation", obs)
    assert canonical(again) == canonical(first)


def test_a_memo_that_served_a_repeated_warm_up_turns_off_when_values_stop_repeating():
    registry = Registry()

    def event(i):
        return to_audit_event(Record("rest", "R", "read", who="c", resource=f"Observation/o{i}"))

    for _ in range(5):  # the same 100 events five times: every entity repeats
        for i in range(100):
            registry.index_rows("AuditEvent", event(i))
    memo = registry._for_type("AuditEvent").memos["entity"]
    assert memo.on
    for i in range(100, 1000):  # from now on each entity is new
        rows = registry.index_rows("AuditEvent", event(i))
        assert ("entity", f"o{i}") in {(r["param"], r["target_id"])
                                       for r in rows["idx_reference"]}
    assert not memo.on and not memo.rows
