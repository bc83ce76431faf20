"""IHE PDQm ITI-78 Mobile Patient Demographics Query: the search parameters the profile
requires of a Patient Demographics Supplier, each one narrowing the answer (the Chinese
name search included), unknown ones refused under ``handling=strict``."""

from __future__ import annotations

from typing import Any

import pytest

H = {"Content-Type": "application/fhir+json"}
ID_CARD = "urn:oid:2.16.156.10011.1.3"
MMN = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"


@pytest.fixture
def people(client: Any) -> dict[str, str]:
    out = {}
    for key, body in {
        "zhang": {"name": [{"family": "张", "given": ["三"], "text": "张三"}],
                  "gender": "male", "birthDate": "1990-03-07", "active": True,
                  "identifier": [{"system": ID_CARD, "value": "110101199003077777"}],
                  "telecom": [{"system": "phone", "value": "13800000001"}],
                  "address": [{"city": "北京", "state": "北京市", "postalCode": "100000",
                               "country": "CN"}],
                  "extension": [{"url": MMN, "valueString": "王"}]},
        "li": {"name": [{"family": "李", "given": ["四"]}], "gender": "female",
               "birthDate": "1985-01-01", "active": True,
               "identifier": [{"system": ID_CARD, "value": "310101198501010000"}],
               "address": [{"city": "上海", "country": "CN"}],
               "extension": [{"url": MMN, "valueString": "赵"}]},
    }.items():
        r = client.post("/fhir/Patient", headers=H, json={"resourceType": "Patient", **body})
        assert r.status_code == 201, r.text
        out[key] = r.json()["id"]
    return out


def _ids(client: Any, query: str) -> set[str]:
    r = client.get(f"/fhir/Patient?{query}", headers={"Prefer": "handling=strict"})
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry") or []}


@pytest.mark.parametrize("query,who", [
    ("family=张", "zhang"), ("given=四", "li"), ("name=张三", "zhang"),
    (f"identifier={ID_CARD}|110101199003077777", "zhang"), ("birthdate=1985-01-01", "li"),
    ("gender=male", "zhang"), ("telecom=13800000001", "zhang"), ("address-city=上海", "li"),
    ("address-postalcode=100000", "zhang"), ("address-state=北京市", "zhang"),
    ("mothersMaidenName=赵", "li"), ("family=张&gender=female", None),
    ("address-country=CN&birthdate=lt1988", "li"),
])
def test_iti78_parameters(client: Any, people: dict[str, str], query: str,
                          who: str | None) -> None:
    assert _ids(client, query) == ({people[who]} if who else set())


def test_id_and_active(client: Any, people: dict[str, str]) -> None:
    assert _ids(client, f"_id={people['li']}&active=true") == {people["li"]}


def test_unknown_parameter_refused_when_strict(client: Any) -> None:
    r = client.get("/fhir/Patient?shoeSize=42", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400


# ------------------------------------------------------------------ ITI-119 $match

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def _match(client: Any, patient: dict[str, Any], **params: Any) -> Any:
    parameters = [{"name": "resource", "resource": {"resourceType": "Patient", **patient}}]
    for name, value in params.items():
        key = "valueBoolean" if isinstance(value, bool) else "valueInteger"
        parameters.append({"name": name, key: value})
    return client.post("/fhir/Patient/$match", headers=H,
                       json={"resourceType": "Parameters", "parameter": parameters})


def _graded(body: dict[str, Any]) -> list[tuple[str, float, str]]:
    return [(e["resource"]["id"], e["search"]["score"], e["search"]["extension"][0]["valueCode"])
            for e in body.get("entry") or []]


def test_match_by_identifier_is_certain(client: Any, people: dict[str, str]) -> None:
    r = _match(client, {"identifier": [{"system": ID_CARD, "value": "110101199003077777"}],
                        "name": [{"family": "错"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "searchset"
    assert _graded(body) == [(people["zhang"], 1.0, "certain")]


def test_match_by_demographics_is_graded(client: Any, people: dict[str, str]) -> None:
    # family + given + birth date + gender: probable
    r = _match(client, {"name": [{"family": "张", "given": ["三"]}], "birthDate": "1990-03-07",
                        "gender": "male"})
    assert _graded(r.json()) == [(people["zhang"], 0.9, "probable")]
    # the Chinese name as one text, with the birth date: possible
    r = _match(client, {"name": [{"text": "张三"}], "birthDate": "1990-03-07"})
    assert _graded(r.json()) == [(people["zhang"], 0.8, "probable")]
    r = _match(client, {"name": [{"family": "李"}], "birthDate": "1985-01-01"})
    assert _graded(r.json()) == [(people["li"], 0.6, "possible")]
    # a contradicting birth date leaves the patient out
    r = _match(client, {"name": [{"family": "李"}], "birthDate": "2001-01-01"})
    assert _graded(r.json()) == []
    # onlyCertainMatches: a demographic match is not certain
    r = _match(client, {"name": [{"family": "张", "given": ["三"]}],
                        "birthDate": "1990-03-07"}, onlyCertainMatches=True)
    assert r.json()["entry"] == [] or "entry" not in r.json()


def test_match_count_orders_and_bounds(client: Any, people: dict[str, str]) -> None:
    for _ in range(3):  # namesakes with no birth date on record: possible matches
        client.post("/fhir/Patient", headers=H, json={
            "resourceType": "Patient", "name": [{"family": "张", "given": ["三"]}]})
    r = _match(client, {"name": [{"family": "张", "given": ["三"]}], "birthDate": "1990-03-07",
                        "gender": "male"}, count=2)
    graded = _graded(r.json())
    assert len(graded) == 2 and graded[0] == (people["zhang"], 0.9, "probable")
    assert graded[1][1:] == (0.5, "possible")
    assert r.json()["total"] == 2


@pytest.mark.parametrize("body,where", [
    ({"resourceType": "Parameters", "parameter": []}, "resource"),
    ({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "gender": "male"}}]},
     "resource.identifier"),
    ({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "name": [{"family": "张"}]}},
        {"name": "count", "valueInteger": 500}]}, "count"),
])
def test_match_refusals(client: Any, body: dict[str, Any], where: str) -> None:
    r = client.post("/fhir/Patient/$match", headers=H, json=body)
    assert r.status_code == 400, r.text
    assert where in r.json()["issue"][0]["expression"]


def test_iti78_and_match_in_xml(client: Any, people: dict[str, str]) -> None:
    """PDQm allows XML: the search (stored resources served as they are) and $match."""
    r = client.get("/fhir/Patient?family=张&_format=xml")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+xml")
    assert f'<id value="{people["zhang"]}"/>' in r.text and '<family value="张"/>' in r.text
    r = _match(client, {"identifier": [{"system": ID_CARD, "value": "310101198501010000"}]})
    assert r.status_code == 200
    r = client.post("/fhir/Patient/$match?_format=xml", headers=H, json={
        "resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {
            "resourceType": "Patient",
            "identifier": [{"system": ID_CARD, "value": "310101198501010000"}]}}]})
    assert r.status_code == 200, r.text
    assert '<score value="1.0"/>' in r.text and '<valueCode value="certain"/>' in r.text
