"""Health, readiness, metrics, request ids and access logs."""

from __future__ import annotations

import logging

from sqlalchemy import text

from sonobridge.store import migrate
from tests.fhir.helpers import post


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "blobs": "ok"}


def test_readyz_reports_migrations_behind(client, core):
    with core.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["migrations"] == "behind"
    finally:
        with core.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"),
                         {"v": migrate.head_revision()})


def test_request_id_in_and_out(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    hostile = client.get("/healthz", headers={"X-Request-ID": "bad id\tvalue"})
    assert hostile.headers["x-request-id"] != "bad id\tvalue"


def test_metrics_count_by_route_and_status(client):
    client.get("/fhir/Patient/whoever")
    text_ = client.get("/metrics").text
    assert 'sonobridge_http_requests_total{method="GET",route="/fhir/{type}/{id}",status="404"}' \
        in text_
    assert "sonobridge_http_request_duration_seconds_bucket" in text_


def test_access_log_has_no_personal_data(client, caplog):
    caplog.set_level(logging.INFO, logger="sonobridge.access")
    post(client, "/fhir/Patient", {"resourceType": "Patient", "name": [{"family": "张三丰"}]})
    client.get("/fhir/Patient/zhang-sanfeng?name=张三丰")
    lines = [r for r in caplog.records if r.name == "sonobridge.access"]
    assert len(lines) == 2
    rendered = " ".join(r.getMessage() + str(vars(r)) for r in lines)
    assert "张三丰" not in rendered and "zhang-sanfeng" not in rendered
    assert lines[1].getMessage() == "GET /fhir/{type}/{id} 404"
    assert lines[1].request_id
