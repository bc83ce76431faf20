"""History bundles at instance, type and system level."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.fhir.helpers import body, put


def links(bundle: dict) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle.get("link", [])}


def test_instance_history(client):
    put(client, "/fhir/Patient/h", {"resourceType": "Patient", "id": "h", "gender": "male"})
    put(client, "/fhir/Patient/h", {"resourceType": "Patient", "id": "h", "gender": "female"})
    client.delete("/fhir/Patient/h")
    bundle = body(client.get("/fhir/Patient/h/_history"))
    assert bundle["type"] == "history"
    methods = [e["request"]["method"] for e in bundle["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in bundle["entry"][0]
    assert bundle["entry"][1]["resource"]["gender"] == "female"
    assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert bundle["entry"][1]["fullUrl"] == "http://sono.test/fhir/Patient/h"


def test_type_and_system_history_with_paging(client):
    for i in range(5):
        put(client, f"/fhir/Patient/p{i}", {"resourceType": "Patient", "id": f"p{i}"})
    put(client, "/fhir/Organization/o", {"resourceType": "Organization", "id": "o"})
    first = body(client.get("/fhir/Patient/_history?_count=2"))
    assert [e["resource"]["id"] for e in first["entry"]] == ["p4", "p3"]
    seen = [e["resource"]["id"] for e in first["entry"]]
    next_url = links(first)["next"]
    put(client, "/fhir/Patient/late", {"resourceType": "Patient", "id": "late"})
    while next_url:
        parts = urlsplit(next_url)
        page = body(client.get(f"{parts.path}?{parts.query}"))
        seen += [e["resource"]["id"] for e in page["entry"]]
        next_url = links(page).get("next")
    assert seen == ["p4", "p3", "p2", "p1", "p0"]
    system = body(client.get("/fhir/_history"))
    assert {e["resource"]["resourceType"] for e in system["entry"]} == {"Patient",
                                                                        "Organization"}


def test_since_and_at(client):
    put(client, "/fhir/Patient/s", {"resourceType": "Patient", "id": "s", "gender": "male"})
    first = body(client.get("/fhir/Patient/s"))
    put(client, "/fhir/Patient/s", {"resourceType": "Patient", "id": "s", "gender": "female"})
    second = body(client.get("/fhir/Patient/s"))
    since = second["meta"]["lastUpdated"]
    r = body(client.get("/fhir/Patient/s/_history", params={"_since": since}))
    assert [e["response"]["etag"] for e in r["entry"]] == ['W/"2"']
    at = first["meta"]["lastUpdated"]
    r = body(client.get("/fhir/Patient/s/_history", params={"_at": at}))
    assert [e["response"]["etag"] for e in r["entry"]] == ['W/"1"']
    r = body(client.get("/fhir/Patient/_history", params={"_since": "2999-01-01"}))
    assert "entry" not in r


def test_history_bad_parameters(client):
    assert client.get("/fhir/_history?_since=yesterday").status_code == 400
    assert client.get("/fhir/_history?_since=2024-01-01T10:00:00").status_code == 400
    assert client.get("/fhir/_history?_count=-1").status_code == 400
    assert client.get("/fhir/_history?_count=100000").status_code == 400
    assert client.get("/fhir/_history?_page=garbage").status_code == 400
    assert client.get("/fhir/Patient/none/_history").status_code == 404
    assert client.post("/fhir/Patient/x/_history").status_code == 405
