"""Each XDS transaction in the audit trail (and so in the ATNA feed) with the IHE event ID
and the transaction, refusals as minor failures; a failure inside is a Receiver fault."""

from __future__ import annotations

import pytest

from sonobridge.hie.xds.registry import Registry
from sonobridge.hie.xds.xml import q
from tests.hie.xds import helpers as h

ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"


@pytest.fixture
def settings(settings):
    return settings.replace(audit=True)


def _events(client, core):
    core.audit.flush()
    bundle = client.get("/fhir/AuditEvent?_count=100").json()
    return [e["resource"] for e in bundle.get("entry", [])]


def _xds(events, transaction):
    return [e for e in events if any(s.get("code") == transaction for s in e.get("subtype", []))]


def test_transactions_audited(client, core):
    patient_id = h.patient(client)
    data = b"report"
    message = h.iti41((h.entry(data), data))
    h.post(client, "/xds/repository", message.content_type, message.body)
    message = h.iti41((h.entry(data, size=99), data))
    h.post(client, "/xds/repository", message.content_type, message.body)
    h.post_message(client, "/xds/registry", ITI18, h.find_documents())
    events = _events(client, core)
    stored = _xds(events, "ITI-41")
    assert len(stored) == 2
    ok = next(e for e in stored if e["outcome"] == "0")
    refused = next(e for e in stored if e["outcome"] == "4")
    assert ok["type"]["code"] == "110107"  # Import
    assert any(f"Patient/{patient_id}" == (o.get("what") or {}).get("reference")
               for o in ok.get("entity", [])), ok
    assert "XDSRepositoryMetadataError" in str(refused)
    query = _xds(events, "ITI-18")
    assert len(query) == 1 and query[0]["type"]["code"] == "110112"  # Query


def test_internal_failure_is_a_receiver_fault(client, monkeypatch):
    def boom(*_args):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Registry, "stored_query", boom)
    status, answer = h.post_message(client, "/xds/registry", ITI18, h.find_documents())
    assert status == 500
    assert answer.body.tag == q("soap", "Fault")
    assert answer.body.findtext(f".//{q('soap', 'Value')}") == "soap:Receiver"
    assert "database" not in answer.body.findtext(f".//{q('soap', 'Text')}")

