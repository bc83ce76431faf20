"""Content negotiation: JSON and XML, _format, _pretty, Accept with q-values."""

from __future__ import annotations

import pytest

from sonobridge.core.errors import CoreError
from sonobridge.fhir.formats import request_format, response_format
from tests.fhir.helpers import body, put

PATIENT = {"resourceType": "Patient", "id": "f", "gender": "female"}


@pytest.mark.parametrize(("accept", "kind", "media"), [
    (None, "json", "application/fhir+json"),
    ("application/fhir+json", "json", "application/fhir+json"),
    ("application/json", "json", "application/json"),
    ("application/fhir+xml", "xml", "application/fhir+xml"),
    ("application/xml", "xml", "application/xml"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json",
     "application/fhir+json"),
    ("*/*", "json", "application/fhir+json"),
    ("application/fhir+xml;q=0.5, application/fhir+json;q=0.9", "json", "application/fhir+json"),
    ("application/fhir+json;q=0.1, application/fhir+xml", "xml", "application/fhir+xml"),
    ("application/fhir+json; fhirVersion=4.0", "json", "application/fhir+json"),
])
def test_accept_negotiation(accept, kind, media):
    fmt = response_format(None, accept)
    assert (fmt.kind, fmt.media_type) == (kind, media)


@pytest.mark.parametrize("accept", ["application/pdf", "image/png, text/csv",
                                    "application/fhir+json;q=0"])
def test_accept_nothing_acceptable(accept):
    with pytest.raises(CoreError) as info:
        response_format(None, accept)
    assert info.value.status == 406


@pytest.mark.parametrize(("value", "kind"), [("json", "json"), ("xml", "xml"),
                                              ("application/fhir+xml", "xml"),
                                              ("text/xml", "xml")])
def test_format_parameter_wins(value, kind):
    assert response_format(value, "application/fhir+json").kind == kind


@pytest.mark.parametrize(("content_type", "kind"), [
    (None, "json"), ("application/fhir+json", "json"),
    ("application/fhir+json; charset=utf-8", "json"), ("application/json", "json"),
    ("application/fhir+xml", "xml"), ("application/xml", "xml"), ("text/xml", "xml"),
    ("application/json-patch+json", "json-patch")])
def test_request_content_types(content_type, kind):
    assert request_format(content_type) == kind


def test_xml_read_and_write_over_http(client):
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><id value="x1"/>'
           b'<active value="true"/><name><family value="\xe5\xbc\xa0"/>'
           b'<given value="A"/><given value="B"/></name></Patient>')
    r = client.put("/fhir/Patient/x1", content=xml,
                   headers={"Content-Type": "application/fhir+xml",
                            "Accept": "application/fhir+xml"})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/fhir+xml; charset=utf-8"
    assert b"<active value=\"true\"/>" in r.content
    data = body(client.get("/fhir/Patient/x1"))
    assert data["active"] is True and data["name"] == [{"family": "张", "given": ["A", "B"]}]


def test_pretty_and_format_query(client):
    put(client, "/fhir/Patient/f", PATIENT)
    compact = client.get("/fhir/Patient/f").content
    pretty = client.get("/fhir/Patient/f?_pretty=true").content
    assert b"\n" not in compact and b'\n  "id": "f"' in pretty
    xml = client.get("/fhir/Patient/f?_format=xml&_pretty=true")
    assert xml.headers["content-type"].startswith("application/fhir+xml")
    assert b'\n  <id value="f"/>' in xml.content


def test_errors_follow_the_requested_format(client):
    r = client.get("/fhir/Patient/missing", headers={"Accept": "application/fhir+xml"})
    assert r.status_code == 404
    assert r.content.startswith(b"<?xml") and b"<OperationOutcome" in r.content
