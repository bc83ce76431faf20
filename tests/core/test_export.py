"""Bulk Data $export: the async pattern, parameters, levels, rights, cancel, restart."""

from __future__ import annotations

import time

import orjson
import pytest

from sonobridge.core.export import service_of
from sonobridge.core.policy import Caller, Policy
from tests.auth.conftest import secure_settings, smart  # noqa: F401 (fixtures)
from tests.auth.smart import bearer

ASYNC = {"Prefer": "respond-async"}
FHIR = "http://sono.test/fhir"


def _seed(core, count: int = 5) -> None:
    caller = Caller(Policy.open(), FHIR)
    for n in range(count):
        core.resources.update(caller, "Patient", f"p{n}", {
            "resourceType": "Patient", "id": f"p{n}", "gender": "female",
            "name": [{"family": f"F{n}"}]})
        core.resources.update(caller, "Observation", f"o{n}", {
            "resourceType": "Observation", "id": f"o{n}",
            "status": "final" if n % 2 == 0 else "preliminary", "code": {"text": "AFI"},
            "subject": {"reference": f"Patient/p{n}"}})
    core.resources.update(caller, "Organization", "org1", {
        "resourceType": "Organization", "id": "org1", "name": "Clinic"})
    core.resources.update(caller, "Group", "g1", {
        "resourceType": "Group", "id": "g1", "type": "person", "actual": True,
        "member": [{"entity": {"reference": "Patient/p1"}},
                   {"entity": {"reference": "Patient/p2"}},
                   {"entity": {"reference": "Patient/p3"}, "inactive": True}]})


def _wait(http, location: str, headers=None, timeout: float = 30.0):
    deadline = time.time() + timeout
    while True:
        r = http.get(location.removeprefix("http://sono.test"), headers=headers or {})
        if r.status_code != 202:
            return r
        assert "X-Progress" in r.headers and r.headers["Retry-After"].isdecimal()
        assert time.time() < deadline, "the export did not finish"
        time.sleep(0.1)


def _export(http, url: str, headers=None):
    r = http.get(url, headers={**ASYNC, **(headers or {})})
    assert r.status_code == 202, r.text
    assert r.content == b""
    location = r.headers["Content-Location"]
    assert location.startswith(FHIR + "/$export-status/")
    done = _wait(http, location, headers)
    assert done.status_code == 200, done.text
    return location, done.json()


def _lines(http, manifest, headers=None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for entry in manifest["output"]:
        r = http.get(entry["url"].removeprefix("http://sono.test"), headers=headers or {})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        rows = [orjson.loads(line) for line in r.content.splitlines()]
        assert len(rows) == entry["count"]
        out.setdefault(entry["type"], []).extend(rows)
    return out


def test_system_export_manifest_and_files(client, core):
    _seed(core)
    location, manifest = _export(client, "/fhir/$export")
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"] == FHIR + "/$export"
    assert manifest["transactionTime"] and manifest["error"] == []
    files = _lines(client, manifest)
    assert sorted(files) == ["Group", "Observation", "Organization", "Patient"]
    assert sorted(r["id"] for r in files["Patient"]) == [f"p{n}" for n in range(5)]
    assert len(files["Observation"]) == 5
    # the status stays readable after completion; DELETE removes the job and its files
    assert client.get(location.removeprefix("http://sono.test")).status_code == 200
    gone = client.delete(location.removeprefix("http://sono.test"))
    assert gone.status_code == 202
    assert client.get(location.removeprefix("http://sono.test")).status_code == 404
    url = manifest["output"][0]["url"].removeprefix("http://sono.test")
    assert client.get(url).status_code == 404


def test_type_since_typefilter_elements(client, core):
    _seed(core)
    _, manifest = _export(client, "/fhir/$export?_type=Observation,Patient"
                          "&_typeFilter=Observation%3Fstatus%3Dfinal&_elements=id,gender")
    files = _lines(client, manifest)
    assert sorted(files) == ["Observation", "Patient"]
    assert sorted(o["id"] for o in files["Observation"]) == ["o0", "o2", "o4"]
    patient = files["Patient"][0]
    assert "name" not in patient and patient["gender"] == "female"
    assert any(t["code"] == "SUBSETTED" for t in patient["meta"]["tag"])
    assert "status" not in files["Observation"][0]  # _elements applies to every type
    # _since after everything: no files
    _, later = _export(client, "/fhir/$export?_since=2999-01-01T00:00:00Z")
    assert later["output"] == []


def test_patient_and_group_level(client, core):
    _seed(core)
    _, manifest = _export(client, "/fhir/Patient/$export")
    files = _lines(client, manifest)
    assert "Organization" not in files  # not in a patient's compartment
    assert len(files["Patient"]) == 5 and len(files["Observation"]) == 5
    _, manifest = _export(client, "/fhir/Group/g1/$export")
    files = _lines(client, manifest)
    assert sorted(r["id"] for r in files["Patient"]) == ["p1", "p2"]  # p3 is inactive
    assert sorted(r["id"] for r in files["Observation"]) == ["o1", "o2"]
    assert manifest["request"] == FHIR + "/Group/g1/$export"


def test_files_split_at_the_configured_size(client, core):
    _seed(core, 20)
    service_of(core).max_size = 300
    _, manifest = _export(client, "/fhir/$export?_type=Patient")
    assert len(manifest["output"]) > 1
    assert all(e["type"] == "Patient" for e in manifest["output"])
    assert sum(e["count"] for e in manifest["output"]) == 20
    assert len(_lines(client, manifest)["Patient"]) == 20


@pytest.mark.parametrize(("url", "headers", "status", "where"), [
    ("/fhir/$export", {}, 400, "Prefer"),
    ("/fhir/$export?_type=Nonsense", ASYNC, 400, "_type"),
    ("/fhir/$export?_outputFormat=text/csv", ASYNC, 400, "_outputFormat"),
    ("/fhir/$export?_since=yesterday", ASYNC, 400, "_since"),
    ("/fhir/$export?_typeFilter=Observation", ASYNC, 400, "_typeFilter"),
    ("/fhir/$export?_type=Patient&_typeFilter=Observation%3Fstatus%3Dfinal", ASYNC, 400,
     "_typeFilter"),
    ("/fhir/$export?_bogus=1", ASYNC, 400, "_bogus"),
    ("/fhir/$export?patient=Patient/p1", ASYNC, 400, "patient"),
    ("/fhir/Patient/$export?_type=Organization", ASYNC, 400, "_type"),
    ("/fhir/$export?includeAssociatedData=LatestProvenanceResources", ASYNC, 400,
     "includeAssociatedData"),
])
def test_bad_kickoffs(client, core, url, headers, status, where):
    r = client.get(url, headers=headers)
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == [where]


def test_unknown_group_and_unknown_job(client, core):
    assert client.get("/fhir/Group/nope/$export", headers=ASYNC).status_code == 404
    assert client.get("/fhir/$export-status/" + "x" * 32).status_code == 404
    assert client.get("/fhir/$export-status/bad!id").status_code == 404
    assert client.delete("/fhir/$export-status/" + "x" * 32).status_code == 404


def test_too_many_jobs_is_429(client, core):
    _seed(core)
    service = service_of(core)
    service.max_jobs = 1
    service._start = lambda job: None  # jobs stay queued
    assert client.get("/fhir/$export", headers=ASYNC).status_code == 202
    r = client.get("/fhir/$export", headers=ASYNC)
    assert r.status_code == 429 and r.headers["Retry-After"] == "60"


def test_a_job_whose_process_stopped_is_taken_over(client, core):
    """A job left in progress with a stopped heartbeat (its process died) is started again
    by the next poll and completes with every resource."""
    _seed(core)
    service = service_of(core)
    start = service._start
    service._start = lambda job: None
    r = client.get("/fhir/$export?_type=Patient", headers=ASYNC)
    job_id = r.headers["Content-Location"].rsplit("/", 1)[1]
    job = service.jobs.load(job_id)
    job.heartbeat -= 120
    core.blobs.put(service.jobs.file(job_id, "Patient-1.ndjson"), [b"half"])
    service.jobs.save(job)
    service._start = start
    done = _wait(client, r.headers["Content-Location"])
    assert done.status_code == 200
    assert service.jobs.load(job_id).attempt == 2
    assert len(_lines(client, done.json())["Patient"]) == 5


def test_cancel_while_running_removes_the_job(client, core):
    _seed(core)
    service = service_of(core)
    service._start = lambda job: None
    r = client.get("/fhir/$export", headers=ASYNC)
    path = r.headers["Content-Location"].removeprefix("http://sono.test")
    assert client.get(path).status_code == 202
    assert client.delete(path).status_code == 202
    assert client.get(path).status_code == 404
    job_id = path.rsplit("/", 1)[1]
    assert service.jobs.exists(job_id)  # the running job removes it when it sees it
    service._run(service.jobs.load(job_id))
    assert not service.jobs.exists(job_id)
    assert list(core.blobs.keys("export/")) == []


def test_expired_jobs_are_deleted(client, core):
    _seed(core)
    location, _ = _export(client, "/fhir/$export?_type=Patient")
    service = service_of(core)
    service.retention = 0
    time.sleep(0.01)
    assert client.get(location.removeprefix("http://sono.test")).status_code == 404
    assert list(core.blobs.keys("export/")) == []  # the job and its files


def test_the_sweep_deletes_expired_and_leftover_jobs(client, core):
    """Jobs nobody polls again are deleted by the sweep: expired ones with their files, and
    the files a removal cut short left without a state."""
    _seed(core)
    _, manifest = _export(client, "/fhir/$export?_type=Patient")
    _, kept = _export(client, "/fhir/$export?_type=Observation")
    service = service_of(core)
    expired_id = manifest["output"][0]["url"].split("/")[-2]
    job = service.jobs.load(expired_id)
    job.finished -= service.retention + 1
    service.jobs.save(job)
    core.blobs.put("export/" + "L" * 32 + "/Patient-1.ndjson", [b"{}\n"])
    service._reap(force=True)
    jobs = service.jobs.listing()
    assert expired_id not in jobs and "L" * 32 not in jobs
    assert jobs == {kept["output"][0]["url"].split("/")[-2]: {
        "job.json", "ended", "Observation-1.ndjson"}}
    assert len(_lines(client, kept)["Observation"]) == 5


def test_files_are_in_the_blob_store_not_the_data_directory(client, core, settings):
    _seed(core)
    _, manifest = _export(client, "/fhir/$export?_type=Patient")
    job_id = manifest["output"][0]["url"].split("/")[-2]
    key = f"export/{job_id}/Patient-1.ndjson"
    stored = b"".join(core.blobs.stream(key))
    r = client.get(manifest["output"][0]["url"].removeprefix("http://sono.test"),
                   headers={"Accept-Encoding": "identity"})
    assert r.content == stored and r.headers["content-length"] == str(len(stored))
    assert sorted(orjson.loads(x)["id"] for x in stored.splitlines()) == \
        [f"p{n}" for n in range(5)]
    written = [p for p in settings.data_dir.rglob("*.ndjson")
               if settings.blob_url is not None or "blobs" not in p.parts]
    assert written == []  # nothing beside the blob store (no scratch file left either)


# ------------------------------------------------------------------ rights (real tokens)

def test_only_system_scopes_export(smart):  # noqa: F811
    client_id, key = smart.backend("system/Patient.rs system/Observation.rs")
    token = smart.backend_token(client_id, key, "system/Patient.rs").json()["access_token"]
    auth = bearer(token)
    # a type outside the token's scopes, asked by name: 403
    r = smart.http.get("/fhir/$export?_type=Observation", headers={**ASYNC, **auth})
    assert r.status_code == 403, r.text
    # without _type: only what the token may read
    _, manifest = _export(smart.http, "/fhir/$export", auth)
    files = _lines(smart.http, manifest, auth)
    assert sorted(files) == ["Patient"]
    # another client cannot see the job or its files
    other = smart.system_token("system/*.rs")
    r = smart.http.get(manifest["output"][0]["url"].removeprefix("http://sono.test"),
                       headers=bearer(other))
    assert r.status_code == 404
    # no token: 401
    r = smart.http.get(manifest["output"][0]["url"].removeprefix("http://sono.test"))
    assert r.status_code == 401


def test_user_tokens_may_not_export(smart):  # noqa: F811
    smart.user("doc", "sonographer")
    client, _ = smart.app("user/*.rs openid fhirUser")
    token = smart.user_token(client.client_id, "doc", "user/*.rs")["access_token"]
    r = smart.http.get("/fhir/$export", headers={**ASYNC, **bearer(token)})
    assert r.status_code == 403, r.text
    assert "system/" in r.json()["issue"][0]["diagnostics"]


def test_two_hundred_concurrent_kickoffs(client, core):
    """Kick-offs at once from many threads: exactly the configured number is accepted (the
    count and the new job are made under one lock), the rest are 429 with Retry-After."""
    from concurrent.futures import ThreadPoolExecutor

    from sonobridge.core.errors import CoreError
    from sonobridge.core.operations import OperationCall

    _seed(core)
    service = service_of(core)
    service.max_jobs = 3
    service._start = lambda job: None

    def kick(_: int) -> int:
        try:
            return service.kickoff(OperationCall(
                Caller(Policy.open(), FHIR), "export", "system", "GET",
                headers={"prefer": "respond-async"})).status
        except CoreError as exc:
            assert exc.headers.get("Retry-After") == "60"
            return exc.status

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(kick, range(200)))
    assert statuses.count(202) == 3 and statuses.count(429) == 197


def test_listed_in_the_capability_statement(client, core):
    statement = client.get("/fhir/metadata").json()
    rest = statement["rest"][0]
    assert any(op["name"] == "export" for op in rest.get("operation", []))
    by_type = {r["type"]: r for r in rest["resource"]}
    for res_type in ("Patient", "Group"):
        assert any(op["name"] == "export" for op in by_type[res_type].get("operation", []))
