"""The versioned resource store, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from sonobridge import jsonio
from sonobridge.store.resources import VersionConflict


def patient(family: str = "Zhang", **extra: object) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family}], **extra}


def test_create_assigns_id_version_and_meta(core):
    with core.store.write() as w:
        stored = w.create("Patient", patient())
    assert stored.version_id == 1 and not stored.deleted
    body = jsonio.loads(stored.content)
    assert body["id"] == stored.id
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].startswith(stored.last_updated_instant[:19])
    assert list(body)[:3] == ["resourceType", "id", "meta"]
    assert core.store.read("Patient", stored.id).content == stored.content


def test_client_meta_is_kept_but_server_fields_replaced(core):
    resource = patient(meta={"versionId": "99", "lastUpdated": "2000-01-01T00:00:00Z",
                             "profile": ["http://example.org/p"]})
    with core.store.write() as w:
        stored = w.create("Patient", resource)
    meta = jsonio.loads(stored.content)["meta"]
    assert meta["versionId"] == "1"
    assert meta["lastUpdated"] != "2000-01-01T00:00:00Z"
    assert meta["profile"] == ["http://example.org/p"]


def test_update_makes_versions_and_identical_update_does_not(core):
    with core.store.write() as w:
        first = w.update("Patient", "p1", patient(id="p1"))
    assert first.created and first.stored.version_id == 1
    with core.store.write() as w:
        second = w.update("Patient", "p1", patient("Li", id="p1"))
    assert not second.created and second.changed and second.stored.version_id == 2
    with core.store.write() as w:
        same = w.update("Patient", "p1", patient("Li", id="p1"))
    assert not same.changed and same.stored.version_id == 2
    assert jsonio.loads(core.store.vread("Patient", "p1", 1).content)["name"][0]["family"] == \
        "Zhang"
    assert core.store.vread("Patient", "p1", 3) is None


def test_if_match_conflict(core):
    with core.store.write() as w:
        w.update("Patient", "p1", patient(id="p1"))
    with pytest.raises(VersionConflict) as info, core.store.write() as w:
        w.update("Patient", "p1", patient("X", id="p1"), if_match=7)
    assert info.value.current == 1
    with core.store.write() as w:
        assert w.update("Patient", "p1", patient("X", id="p1"), if_match=1).stored.version_id == 2


def test_delete_is_a_version_and_resurrection_continues_numbering(core):
    with core.store.write() as w:
        w.update("Patient", "p1", patient(id="p1"))
    with core.store.write() as w:
        deleted = w.delete("Patient", "p1")
    assert deleted.deleted and deleted.version_id == 2
    assert core.store.read("Patient", "p1").deleted
    with core.store.write() as w:
        assert w.delete("Patient", "p1") is None  # nothing left to delete
        assert w.delete("Patient", "never") is None
    with core.store.write() as w:
        back = w.update("Patient", "p1", patient(id="p1"))
    assert back.created and back.stored.version_id == 3


def test_failed_transaction_stores_nothing(core):
    with pytest.raises(RuntimeError), core.store.write() as w:
        w.create("Patient", patient(), "a")
        w.create("Patient", patient(), "b")
        raise RuntimeError("boom")
    assert core.store.read("Patient", "a") is None
    assert core.store.read("Patient", "b") is None
    assert not core.store.exists_any()


def test_history_pages_are_stable_while_writing(core):
    for i in range(5):
        with core.store.write() as w:
            w.update("Patient", f"p{i}", patient(str(i), id=f"p{i}"))
    page1, key = core.store.history(res_type="Patient", count=2)
    assert [s.id for s in page1] == ["p4", "p3"]
    with core.store.write() as w:  # a write between pages must not shift the next page
        w.update("Patient", "p9", patient(id="p9"))
    page2, key2 = core.store.history(res_type="Patient", count=2, after=key)
    assert [s.id for s in page2] == ["p2", "p1"]
    page3, key3 = core.store.history(res_type="Patient", count=2, after=key2)
    assert [s.id for s in page3] == ["p0"] and key3 is None


def test_history_at_finds_the_version_current_then(core):
    with core.store.write() as w:
        v1 = w.update("Patient", "p", patient("A", id="p")).stored
    with core.store.write() as w:
        v2 = w.update("Patient", "p", patient("B", id="p")).stored
    page, _ = core.store.history(res_type="Patient", res_id="p",
                                 at=(v1.last_updated, v1.last_updated + 1))
    assert [s.version_id for s in page] == [1]
    page, _ = core.store.history(res_type="Patient", res_id="p",
                                 at=(v2.last_updated, v2.last_updated + 1))
    assert [s.version_id for s in page] == [2]
    page, _ = core.store.history(res_type="Patient", res_id="p", since=v2.last_updated)
    assert [s.version_id for s in page] == [2]


def test_concurrent_updates_with_same_if_match_one_wins(core):
    with core.store.write() as w:
        w.update("Patient", "race", patient(id="race"))
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(name: str) -> None:
        barrier.wait()
        try:
            with core.store.write() as w:
                w.update("Patient", "race", patient(name, id="race"), if_match=1)
            outcomes.append("ok")
        except VersionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "ok"]
    assert core.store.read("Patient", "race").version_id == 2
