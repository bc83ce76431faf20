"""The CapabilityStatement is valid R4 and lists what the router serves."""

from __future__ import annotations

from fhir.resources.R4B import get_fhir_model_class

from sonobridge.core.definitions import resource_types
from sonobridge.fhir.routes import served_interactions
from tests.fhir.helpers import body


def test_capability_statement(client):
    r = client.get("/fhir/metadata")
    assert r.status_code == 200
    cs = body(r)
    get_fhir_model_class("CapabilityStatement").model_validate(cs)
    assert cs["fhirVersion"] == "4.0.1"
    assert "application/fhir+xml" in cs["format"] and "application/fhir+json" in cs["format"]
    rest = cs["rest"][0]
    types = [res["type"] for res in rest["resource"]]
    assert types == sorted(resource_types()) and len(types) == 145
    patient = next(res for res in rest["resource"] if res["type"] == "Patient")
    codes = {i["code"] for i in patient["interaction"]}
    assert codes == {c for c in served_interactions()
                     if c in ("read", "vread", "update", "patch", "delete", "history-instance",
                              "history-type", "create", "search-type")}
    assert {"read", "vread", "update", "patch", "delete", "create"} <= codes
    assert {i["code"] for i in rest["interaction"]} >= {"transaction", "batch", "history-system"}
    assert cs["implementation"]["url"] == "http://sono.test/fhir"


def test_capability_in_xml(client):
    r = client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"})
    assert r.status_code == 200 and b"<CapabilityStatement" in r.content
    assert b'<fhirVersion value="4.0.1"/>' in r.content
