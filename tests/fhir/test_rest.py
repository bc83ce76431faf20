"""FHIR REST interactions and their headers, on SQLite and PostgreSQL."""

from __future__ import annotations

import orjson

from tests.fhir.helpers import FHIR_JSON, body, outcome_codes, post, put

PATIENT = {"resourceType": "Patient", "name": [{"family": "张", "given": ["伟"]}],
           "gender": "male", "birthDate": "1990-03-07"}


def test_create_then_read(client):
    r = post(client, "/fhir/Patient", PATIENT)
    assert r.status_code == 201
    created = body(r)
    pid = created["id"]
    assert r.headers["location"] == f"http://sono.test/fhir/Patient/{pid}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["last-modified"].endswith("GMT")
    assert r.headers["content-type"] == "application/fhir+json; charset=utf-8"
    read = client.get(f"/fhir/Patient/{pid}")
    assert read.status_code == 200
    assert read.content == r.content  # the stored bytes, served as they are
    assert body(read)["name"][0]["family"] == "张"


def test_create_ignores_id_in_body(client):
    r = post(client, "/fhir/Patient", {**PATIENT, "id": "chosen"})
    assert r.status_code == 201 and body(r)["id"] != "chosen"


def test_update_as_create_then_update_then_identical(client):
    r = put(client, "/fhir/Patient/p-1", {**PATIENT, "id": "p-1"})
    assert r.status_code == 201
    assert r.headers["location"].endswith("/fhir/Patient/p-1/_history/1")
    r = put(client, "/fhir/Patient/p-1", {**PATIENT, "id": "p-1", "gender": "other"})
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'
    assert r.headers["content-location"].endswith("/fhir/Patient/p-1/_history/2")
    r = put(client, "/fhir/Patient/p-1", {**PATIENT, "id": "p-1", "gender": "other"})
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'  # no new version


def test_vread(client):
    put(client, "/fhir/Patient/v", {**PATIENT, "id": "v"})
    put(client, "/fhir/Patient/v", {**PATIENT, "id": "v", "gender": "female"})
    r1 = client.get("/fhir/Patient/v/_history/1")
    assert r1.status_code == 200 and body(r1)["gender"] == "male"
    assert r1.headers["etag"] == 'W/"1"'
    assert client.get("/fhir/Patient/v/_history/9").status_code == 404
    assert client.get("/fhir/Patient/v/_history/x").status_code == 400


def test_if_match(client):
    put(client, "/fhir/Patient/m", {**PATIENT, "id": "m"})
    stale = put(client, "/fhir/Patient/m", {**PATIENT, "id": "m", "gender": "female"},
                **{"If-Match": 'W/"5"'})
    assert stale.status_code == 412 and outcome_codes(stale) == ["conflict"]
    ok = put(client, "/fhir/Patient/m", {**PATIENT, "id": "m", "gender": "female"},
             **{"If-Match": 'W/"1"'})
    assert ok.status_code == 200 and ok.headers["etag"] == 'W/"2"'
    bad = put(client, "/fhir/Patient/m", {**PATIENT, "id": "m"}, **{"If-Match": "nonsense"})
    assert bad.status_code == 400


def test_conditional_read_304(client):
    put(client, "/fhir/Patient/c", {**PATIENT, "id": "c"})
    r = client.get("/fhir/Patient/c", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == 'W/"1"'
    r = client.get("/fhir/Patient/c", headers={"If-None-Match": 'W/"0"'})
    assert r.status_code == 200
    last_modified = client.get("/fhir/Patient/c").headers["last-modified"]
    r = client.get("/fhir/Patient/c", headers={"If-Modified-Since": last_modified})
    assert r.status_code == 304
    r = client.get("/fhir/Patient/c",
                   headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert r.status_code == 200


def test_delete_then_read_is_gone(client):
    put(client, "/fhir/Patient/d", {**PATIENT, "id": "d"})
    r = client.delete("/fhir/Patient/d")
    assert r.status_code == 200 and body(r)["resourceType"] == "OperationOutcome"
    assert r.headers["etag"] == 'W/"2"'
    gone = client.get("/fhir/Patient/d")
    assert gone.status_code == 410 and outcome_codes(gone) == ["deleted"]
    assert client.get("/fhir/Patient/d/_history/1").status_code == 200
    assert client.get("/fhir/Patient/d/_history/2").status_code == 410
    again = client.delete("/fhir/Patient/d", headers={"Prefer": "return=minimal"})
    assert again.status_code == 204
    assert client.get("/fhir/Patient/nope").status_code == 404


def test_delete_with_stale_if_match(client):
    put(client, "/fhir/Patient/dm", {**PATIENT, "id": "dm"})
    r = client.delete("/fhir/Patient/dm", headers={"If-Match": 'W/"3"'})
    assert r.status_code == 412
    assert client.get("/fhir/Patient/dm").status_code == 200


def test_prefer_return(client):
    minimal = post(client, "/fhir/Patient", PATIENT, Prefer="return=minimal")
    assert minimal.status_code == 201 and minimal.content == b""
    assert "location" in minimal.headers
    oo = post(client, "/fhir/Patient", PATIENT, Prefer="return=OperationOutcome")
    assert oo.status_code == 201 and body(oo)["resourceType"] == "OperationOutcome"
    rep = post(client, "/fhir/Patient", PATIENT, Prefer="return=representation")
    assert body(rep)["resourceType"] == "Patient"


def test_json_patch(client):
    put(client, "/fhir/Patient/jp", {**PATIENT, "id": "jp"})
    ops = [{"op": "replace", "path": "/gender", "value": "female"},
           {"op": "add", "path": "/active", "value": True}]
    r = client.patch("/fhir/Patient/jp", content=orjson.dumps(ops),
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert body(r)["gender"] == "female" and body(r)["active"] is True
    assert r.headers["etag"] == 'W/"2"'
    history = body(client.get("/fhir/Patient/jp/_history"))
    assert history["entry"][0]["request"]["method"] == "PATCH"


def test_fhirpath_patch(client):
    put(client, "/fhir/Patient/fp", {**PATIENT, "id": "fp"})
    params = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.birthDate"},
        {"name": "value", "valueDate": "1991-01-01"}]}, {"name": "operation", "part": [
        {"name": "type", "valueCode": "add"},
        {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "telecom"},
        {"name": "value", "valueContactPoint": {"system": "phone", "value": "123"}}]}]}
    r = client.patch("/fhir/Patient/fp", content=orjson.dumps(params), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert body(r)["birthDate"] == "1991-01-01"
    assert body(r)["telecom"] == [{"system": "phone", "value": "123"}]


def test_patch_of_missing_resource(client):
    r = client.patch("/fhir/Patient/none", content=b"[]",
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 404


def test_head_read(client):
    put(client, "/fhir/Patient/h", {**PATIENT, "id": "h"})
    r = client.head("/fhir/Patient/h")
    assert r.status_code == 200 and r.content == b"" and r.headers["etag"] == 'W/"1"'


def test_method_not_allowed_is_an_operation_outcome(client):
    r = client.delete("/fhir/metadata")
    assert r.status_code == 405 and outcome_codes(r) == ["not-supported"]
    assert r.headers["allow"] == "GET"
    r = client.put("/fhir/Patient/1/_history", content=b"{}", headers=FHIR_JSON)
    assert r.status_code == 405


def test_unknown_path(client):
    r = client.get("/fhir/Patient/1/foo/bar/baz")
    assert r.status_code == 404 and outcome_codes(r) == ["not-supported"]


def test_base_url_honours_forwarded_headers(client):
    r = post(client, "/fhir/Patient", PATIENT, **{
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.example.org",
        "X-Forwarded-Prefix": "/sono"})
    assert r.headers["location"].startswith("https://gw.example.org/sono/fhir/Patient/")
