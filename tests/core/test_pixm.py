"""IHE PIXm ITI-83 ``Patient/$ihe-pix`` over the identifiers patients carry: each answer of
the profile (found, restricted to target systems, unknown domain 400, unknown identifier
404, unknown target system 403), GET and POST, a merged patient's survivor, a token confined
to another patient."""

from __future__ import annotations

from typing import Any

import pytest

H = {"Content-Type": "application/fhir+json"}
ID_CARD = "urn:oid:2.16.156.10011.1.3"
HEALTH_CARD = "urn:oid:2.16.156.10011.1.19"
MRN = "urn:sonobridge:hl7:id:HOSP"


def _patient(client: Any, identifiers: list[tuple[str, str]], **more: Any) -> str:
    r = client.post("/fhir/Patient", headers=H, json={
        "resourceType": "Patient", "name": [{"family": "李"}],
        "identifier": [{"system": s, "value": v} for s, v in identifiers], **more})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _pix(client: Any, query: str) -> Any:
    return client.get(f"/fhir/Patient/$ihe-pix?{query}")


def _targets(body: dict[str, Any]) -> tuple[set[tuple[str, str]], list[str]]:
    ids = {(p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
           for p in body["parameter"] if p["name"] == "targetIdentifier"}
    refs = [p["valueReference"]["reference"] for p in body["parameter"]
            if p["name"] == "targetId"]
    return ids, refs


@pytest.fixture
def resident(client: Any) -> str:
    _patient(client, [(ID_CARD, "110101199001011234"), (MRN, "OTHER")])
    return _patient(client, [(ID_CARD, "110101199003077777"), (HEALTH_CARD, "HC-88"),
                             (MRN, "MRN-1")])


def test_found_with_every_other_identifier(client: Any, resident: str) -> None:
    r = _pix(client, f"sourceIdentifier={ID_CARD}|110101199003077777")
    assert r.status_code == 200, r.text
    ids, refs = _targets(r.json())
    assert ids == {(HEALTH_CARD, "HC-88"), (MRN, "MRN-1")}  # the source is not repeated
    assert refs == [f"Patient/{resident}"]
    # from the hospital's MRN to the 身份证号, only the domains asked for
    r = _pix(client, f"sourceIdentifier={MRN}|MRN-1&targetSystem={ID_CARD}")
    assert _targets(r.json())[0] == {(ID_CARD, "110101199003077777")}
    r = _pix(client, f"sourceIdentifier={MRN}|MRN-1&targetSystem={ID_CARD}"
                     f"&targetSystem={HEALTH_CARD}")
    assert _targets(r.json())[0] == {(ID_CARD, "110101199003077777"), (HEALTH_CARD, "HC-88")}


def test_post_with_parameters(client: Any, resident: str) -> None:
    r = client.post("/fhir/Patient/$ihe-pix", headers=H, json={
        "resourceType": "Parameters", "parameter": [
            {"name": "sourceIdentifier", "valueIdentifier": {"system": HEALTH_CARD,
                                                             "value": "HC-88"}},
            {"name": "targetSystem", "valueUri": MRN}]})
    assert r.status_code == 200, r.text
    assert _targets(r.json()) == ({(MRN, "MRN-1")}, [f"Patient/{resident}"])


@pytest.mark.parametrize("query,status,code,where", [
    ("sourceIdentifier=urn:oid:1.2.3.4.5|X", 400, "code-invalid", "sourceIdentifier"),
    (f"sourceIdentifier={ID_CARD}|999", 404, "not-found", "sourceIdentifier"),
    (f"sourceIdentifier={ID_CARD}|110101199003077777&targetSystem=urn:oid:9.9", 403,
     "code-invalid", "targetSystem"),
    ("sourceIdentifier=onlyavalue", 400, "invalid", "sourceIdentifier"),
    ("targetSystem=urn:x", 400, "required", "sourceIdentifier"),
    (f"sourceIdentifier={ID_CARD}|1&sourceIdentifier={ID_CARD}|2", 400, "invalid", None),
])
def test_refusals(client: Any, resident: str, query: str, status: int, code: str,
                  where: str | None) -> None:
    r = _pix(client, query)
    assert r.status_code == status, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == code
    if where:
        assert issue["expression"] == [where]


def test_a_national_domain_is_known_before_anyone_carries_it(client: Any) -> None:
    r = _pix(client, f"sourceIdentifier={HEALTH_CARD}|nobody")
    assert r.status_code == 404  # recognized domain, no such patient (not 400)


def test_merged_patient_answers_with_its_survivor(client: Any) -> None:
    survivor = _patient(client, [(ID_CARD, "110101199505050000"), (MRN, "KEEP")])
    _patient(client, [(MRN, "OLD-7")], active=False,
             link=[{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}])
    r = _pix(client, f"sourceIdentifier={MRN}|OLD-7")
    assert r.status_code == 200, r.text
    ids, refs = _targets(r.json())
    assert refs == [f"Patient/{survivor}"]
    assert (ID_CARD, "110101199505050000") in ids


def test_listed_in_the_capability_statement(client: Any) -> None:
    cs = client.get("/fhir/metadata").json()
    patient = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Patient")
    ops = {o["name"]: o["definition"] for o in patient.get("operation", [])}
    assert ops["ihe-pix"] == \
        "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"


def test_a_token_confined_to_another_patient_gets_not_found(core: Any) -> None:
    """Rule 10: another patient's identifiers are not cross-referenced for a patient-scoped
    token, and the answer is the one for an identifier nobody holds."""
    from sonobridge.core.errors import CoreError
    from sonobridge.core.operations import OperationCall
    from sonobridge.core.policy import Policy

    ids = {}
    for key, value in (("mine", "110101199003077777"), ("other", "310101198501010000")):
        ids[key] = core.resources.create(core.server, "Patient", {
            "resourceType": "Patient", "identifier": [
                {"system": ID_CARD, "value": value}, {"system": MRN, "value": f"M-{key}"}],
        }).stored.id
    policy = Policy.from_claims({"sub": "p1", "client_id": "app", "scope": "patient/*.rs",
                                 "patient": ids["mine"]})
    caller = core.caller(policy)

    def pix(value: str) -> Any:
        return core.operations.invoke(OperationCall(
            caller, "ihe-pix", "type", "GET", "Patient", None,
            [("sourceIdentifier", f"{ID_CARD}|{value}")]))

    found = pix("110101199003077777")
    assert found.status == 200
    assert _targets(found.body) == ({(MRN, "M-mine")}, [f"Patient/{ids['mine']}"])
    with pytest.raises(CoreError) as refused:
        pix("310101198501010000")
    with pytest.raises(CoreError) as absent:
        pix("999")
    assert refused.value.status == absent.value.status == 404
    assert str(refused.value) == str(absent.value)


def test_iti104_identity_feed_then_cross_reference(client: Any) -> None:
    """PIXm ITI-104 Patient Identity Feed FHIR: a Patient Source creates and updates a
    patient by conditional update on its identifier, and links a duplicate to the survivor;
    ITI-83 answers from what the feed said."""
    url = f"/fhir/Patient?identifier={ID_CARD}|440101198807070000"
    body = {"resourceType": "Patient", "name": [{"family": "陈"}],
            "identifier": [{"system": ID_CARD, "value": "440101198807070000"}]}
    assert client.put(url, headers=H, json=body).status_code == 201
    body["identifier"].append({"system": MRN, "value": "FEED-1"})
    updated = client.put(url, headers=H, json=body)
    assert updated.status_code == 200, updated.text
    survivor = updated.json()["id"]
    r = _pix(client, f"sourceIdentifier={MRN}|FEED-1")
    assert _targets(r.json()) == ({(ID_CARD, "440101198807070000")}, [f"Patient/{survivor}"])
    duplicate = {"resourceType": "Patient", "active": False, "name": [{"family": "陈"}],
                 "identifier": [{"system": MRN, "value": "DUP-9"}],
                 "link": [{"other": {"reference": f"Patient/{survivor}"},
                           "type": "replaced-by"}]}
    assert client.put(f"/fhir/Patient?identifier={MRN}|DUP-9", headers=H,
                      json=duplicate).status_code == 201
    r = _pix(client, f"sourceIdentifier={MRN}|DUP-9")
    assert _targets(r.json())[1] == [f"Patient/{survivor}"]
