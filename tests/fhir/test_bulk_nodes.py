"""Bulk export across workers and nodes: a job's state and files are in the blob store, so a
node that did not run the job (its own data directory, the same database and blob store)
answers the status, serves the files, cancels, and takes over a job whose process stopped.
Run on files and, with ``SONOBRIDGE_TEST_BLOB=s3``, on an S3 store (moto)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from starlette.testclient import TestClient

from sonobridge.app.server import create_app
from sonobridge.config import Settings
from sonobridge.core.export import service_of
from sonobridge.core.services import open_core
from tests.core.test_export import ASYNC, _seed, _wait


@pytest.fixture
def other(settings, tmp_path) -> Iterator[TestClient]:
    """Another node: its own data directory, the same database and blob store."""
    node = Settings(data_dir=tmp_path / "node-b", database_url=settings.database_url,
                    auth="disabled", audit=False,
                    blob_url=settings.blob_url or settings.resolved_blob_url)
    core = open_core(node, run_migrations=False)
    with TestClient(create_app(node, core), base_url="http://sono.test",
                    client=("127.0.0.1", 50001)) as http:
        http.core = core  # type: ignore[attr-defined]
        yield http
    core.close()


def _path(url: str) -> str:
    return url.removeprefix("http://sono.test")


def test_status_and_files_from_another_node(client, core, other):
    _seed(core)
    r = client.get("/fhir/$export?_type=Patient,Observation", headers=ASYNC)
    assert r.status_code == 202
    done = _wait(other, r.headers["Content-Location"])  # polled on the other node
    assert done.status_code == 200, done.text
    manifest = done.json()
    assert sorted(e["type"] for e in manifest["output"]) == ["Observation", "Patient"]
    for entry in manifest["output"]:
        here = client.get(_path(entry["url"]))
        there = other.get(_path(entry["url"]))
        assert here.status_code == there.status_code == 200
        assert here.content == there.content
        assert len(there.content.splitlines()) == entry["count"] == 5
        assert all(orjson.loads(x)["resourceType"] == entry["type"]
                   for x in there.content.splitlines())
    # cancelled on the other node: gone on both, files included
    assert other.delete(_path(r.headers["Content-Location"])).status_code == 202
    assert client.get(_path(r.headers["Content-Location"])).status_code == 404
    assert client.get(_path(manifest["output"][0]["url"])).status_code == 404
    assert list(core.blobs.keys("export/")) == []


def test_another_node_takes_over_a_stopped_job(client, core, other):
    _seed(core)
    service = service_of(core)
    service._start = lambda job: None  # the accepting process "dies" before it runs
    r = client.get("/fhir/$export?_type=Patient", headers=ASYNC)
    job_id = r.headers["Content-Location"].rsplit("/", 1)[1]
    job = service.jobs.load(job_id)
    job.heartbeat -= 120
    service.jobs.save(job)
    done = _wait(other, r.headers["Content-Location"])
    assert done.status_code == 200, done.text
    assert service_of(other.core).jobs.load(job_id).attempt == 2  # type: ignore[attr-defined]
    url = _path(done.json()["output"][0]["url"])
    assert len(client.get(url).content.splitlines()) == 5  # served by the first node too


def test_another_clients_job_is_404_on_every_node(client, core, other):
    _seed(core)
    r = client.get("/fhir/$export?_type=Patient", headers=ASYNC)
    done = _wait(client, r.headers["Content-Location"])
    url = _path(done.json()["output"][0]["url"])
    job = service_of(core).jobs.load(url.split("/")[-2])
    job.owner["client_id"] = "someone-else"
    service_of(core).jobs.save(job)
    assert other.get(url).status_code == 404
    assert other.get(_path(r.headers["Content-Location"])).status_code == 404
