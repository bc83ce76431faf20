"""The audit trail's cost and completeness: a viewer's burst of DICOM retrievals becomes two
events (the first at once, the rest gathered with their count and instances), nothing queued
is lost on a clean shutdown, and the chain stays intact throughout."""

from __future__ import annotations

import dataclasses
import time

from sonobridge.app.compose import open_app_core
from sonobridge.core.audit import verify
from sonobridge.core.policy import Caller, Policy
from tests.auth.smart import bearer
from tests.dicom_data import cine, to_bytes
from tests.dicomweb.helpers import BOUNDARY, multipart


def _events(core) -> list[dict]:
    core.audit.flush()
    from sqlalchemy import select

    from sonobridge.store.tables import resource_versions as V

    with core.store.reader.connect() as conn:
        rows = conn.execute(select(V.c.content).where(V.c.res_type == "AuditEvent")).all()
    import orjson

    return [orjson.loads(row.content) for row in rows]


def _accesses(core, study: str) -> list[dict]:
    return [e for e in _events(core) if e["type"]["code"] == "110103" and any(
        x.get("what", {}).get("identifier", {}).get("value") == f"urn:oid:{study}"
        for x in e.get("entity", []))]


def test_a_cine_played_frame_by_frame_is_two_events_with_every_instance(smart):
    token = smart.system_token("system/*.cruds")
    images = [cine(frames=4, study="2.25.7001"), cine(frames=4, study="2.25.7001")]
    for image in images:
        image.SeriesInstanceUID = images[0].SeriesInstanceUID
    r = smart.http.post("/dicomweb/studies", content=multipart([to_bytes(i) for i in images]),
                        headers={**bearer(token), "Accept": "application/dicom+json",
                                 "Content-Type": 'multipart/related; type="application/dicom";'
                                                 f" boundary={BOUNDARY}"})
    assert r.status_code == 200, r.text
    base = f"/dicomweb/studies/2.25.7001/series/{images[0].SeriesInstanceUID}/instances"
    accept = {"Accept": 'multipart/related; type="application/octet-stream"; '
                        'transfer-syntax=*', **bearer(token)}
    for image in images:
        for frame in range(1, 5):
            got = smart.http.get(f"{base}/{image.SOPInstanceUID}/frames/{frame}",
                                 headers=accept)
            assert got.status_code == 200
    events = _accesses(smart.core, "2.25.7001")
    assert len(events) == 2, [e["subtype"] for e in events]
    gathered = next(e for e in events if e["subtype"][0]["code"] == "retrieve")
    [study] = [x for x in gathered["entity"] if "detail" in x]
    details = {d["type"]: d["valueString"] for d in study["detail"]}
    assert details["retrievals"] == "7"
    assert set(details["SOP Instance UIDs"].split("\\")) == {i.SOPInstanceUID for i in images}
    assert verify(smart.core.store).problems == []


def test_another_caller_or_study_opens_its_own_window(smart):
    core = smart.core
    trail = core.audit
    first = Caller(Policy.system("viewer-a", "A"), "", "10.0.0.1")
    other = Caller(Policy.system("viewer-b", "B"), "", "10.0.0.2")
    from sonobridge.core.events import Answered

    for caller, study in ((first, "2.25.1"), (first, "2.25.1"), (other, "2.25.1"),
                          (first, "2.25.2"), (first, "2.25.1")):
        core.events.emit(Answered(caller, "dicom-access", "R", "frames", study=study))
    trail.flush()
    one = _accesses(core, "2.25.1")
    assert len(one) == 3  # A's first, B's first, A's gathered (2 more)
    assert len(_accesses(core, "2.25.2")) == 1


def test_a_window_closes_on_time(smart, monkeypatch):
    core = smart.core
    monkeypatch.setattr(core.audit, "read_window", 0.5)
    from sonobridge.core.events import Answered

    caller = Caller(Policy.system("viewer-c", "C"), "", "10.0.0.3")
    for _ in range(3):
        core.events.emit(Answered(caller, "dicom-access", "R", "frames", study="2.25.3"))
    deadline = time.monotonic() + 5
    from sqlalchemy import func, select

    from sonobridge.store.tables import audit_log as AL

    while time.monotonic() < deadline:  # written by the writer thread, without a flush
        with core.store.reader.connect() as conn:
            if conn.execute(select(func.count()).select_from(AL)).scalar_one() >= 2:
                break
        time.sleep(0.1)
    else:
        raise AssertionError("the window was not written within 5 s")
    assert len(_accesses(core, "2.25.3")) == 2


def test_nothing_queued_is_lost_on_a_clean_shutdown(secure_settings):
    settings = dataclasses.replace(secure_settings, audit_read_window=3600)
    core = open_app_core(settings, run_migrations=False)
    from sonobridge.core.events import Answered

    caller = Caller(Policy.system("viewer-d", "D"), "", "10.0.0.4")
    for n in range(250):
        core.events.emit(Answered(caller, "rest", "R", "read", resource=f"Observation/x{n}"))
    for _ in range(40):
        core.events.emit(Answered(caller, "dicom-access", "R", "frames", study="2.25.4",
                                  instances=("2.25.4.1",)))
    core.close()  # flushes the queue and every open window
    again = open_app_core(settings, run_migrations=False)
    try:
        events = _events(again)
        reads = [e for e in events if e["subtype"][0]["code"] == "read"]
        assert len(reads) == 250
        gathered = _accesses(again, "2.25.4")
        assert len(gathered) == 2 and any(
            d.get("valueString") == "39" for e in gathered for x in e["entity"]
            for d in x.get("detail", []))
        assert verify(again.store).problems == []
    finally:
        again.close()
