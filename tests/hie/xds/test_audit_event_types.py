"""The audit records of the document-exchange transactions name them as IHE does: the DICOM
event type on this side of the transaction (Import 110107, Export 110106, Query 110112) and
the transaction in ``urn:ihe:event-type-code`` — XDS (ITI-41, ITI-18, ITI-43, and the ITI-41
this gateway sends), MHD (ITI-65, ITI-66, ITI-67, ITI-68), PDQm (ITI-78, ITI-119) and PIXm
(ITI-83), each after a real transaction; in the ATNA feed the transaction is the
AuditMessage's EventTypeCode in "IHE Transactions"."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from sonobridge.hie.syslog import SCHEMA, to_xml
from sonobridge.hie.xds import ebrim
from sonobridge.hie.xds.peers import Peers
from sonobridge.hie.xds.xml import q
from tests.core.test_mhd import provide_bundle
from tests.hie.xds import helpers as h

ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
IHE = "urn:ihe:event-type-code"
JSON = {"Content-Type": "application/fhir+json"}
RNG = etree.RelaxNG(etree.parse(str(SCHEMA)))


@pytest.fixture
def settings(settings):
    return settings.replace(audit=True)


def _events(client: Any, core: Any) -> list[dict[str, Any]]:
    core.audit.flush()
    bundle = client.get("/fhir/AuditEvent?_count=500").json()
    return [e["resource"] for e in bundle.get("entry", [])]


def _ihe(events: list[dict[str, Any]], transaction: str) -> list[dict[str, Any]]:
    return [e for e in events if e["subtype"][0] == {
        "system": IHE, "code": transaction, "display": e["subtype"][0].get("display")}]


def _type(event: dict[str, Any]) -> tuple[str, str]:
    return event["type"]["system"], event["type"]["code"]


def test_xds_transactions_have_their_ihe_event_types(client: Any, core: Any) -> None:
    patient_id = h.patient(client)
    data = b"a report"
    entry = h.entry(data)
    message = h.iti41((entry, data))
    _, body = h.post(client, "/xds/repository", message.content_type, message.body)
    assert body.get("status") == ebrim.SUCCESS
    message = h.iti41((h.entry(data, size=1), data))  # refused: the size is wrong
    h.post(client, "/xds/repository", message.content_type, message.body)
    h.post_message(client, "/xds/registry", ITI18, h.find_documents())
    repository = Peers.of(core.settings).repository_unique_id
    _, answer = h.post_message(client, "/xds/repository", ITI43,
                               h.retrieve(repository, entry.unique_id))
    assert answer.binary(answer.body.find(f".//{q('xds', 'Document')}")) == data
    events = _events(client, core)

    received = _ihe(events, "ITI-41")
    assert sorted(e["outcome"] for e in received) == ["0", "4"]
    for event in received:
        assert _type(event) == (DCM, "110107") and event["action"] == "C"  # Import
        assert event["subtype"][0]["display"] == "Provide and Register Document Set-b"
    ok = next(e for e in received if e["outcome"] == "0")
    assert {"reference": f"Patient/{patient_id}"} in [x.get("what") for x in ok["entity"]]
    (query,) = _ihe(events, "ITI-18")
    assert _type(query) == (DCM, "110112") and query["action"] == "E"  # Query
    (retrieved,) = _ihe(events, "ITI-43")
    assert _type(retrieved) == (DCM, "110106") and retrieved["action"] == "R"  # Export
    assert entry.unique_id in retrieved["outcomeDesc"]
    # in the ATNA feed: the AuditMessage's EventID and EventTypeCode, schema-valid
    for event in (*received, query, retrieved):
        message = etree.fromstring(to_xml(event, "SONOBRIDGE"))
        assert RNG.validate(message), RNG.error_log
        code = message.find("EventIdentification/EventTypeCode")
        assert (code.get("csd-code"), code.get("codeSystemName")) == \
            (event["subtype"][0]["code"], "IHE Transactions")
        assert message.find("EventIdentification/EventID").get("csd-code") == \
            event["type"]["code"]
    # no XDS record left under the kinds of HL7 v2 and DIMSE
    assert not [e for e in events if _type(e) in ((DCM, "110112"), (DCM, "110107"),
                                                  (DCM, "110106"))
                and e["subtype"][0]["system"] != IHE]


def test_mhd_pixm_pdqm_have_their_ihe_event_types(client: Any, core: Any) -> None:
    from tests.core.test_mhd import ID_CARD, _patient

    patient = _patient(client)
    r = client.post("/fhir", json=provide_bundle(patient), headers=JSON)
    assert r.status_code == 200, r.text
    refused = provide_bundle(patient, unique="1.2.156.1.2")
    refused["entry"][1]["resource"]["content"][0]["attachment"]["size"] = 1
    assert client.post("/fhir", json=refused, headers=JSON).status_code == 422
    card = f"{ID_CARD}|110101199003077777"
    assert client.get(f"/fhir/List?code=submissionset&patient.identifier={card}"
                      ).status_code == 200
    docs = client.get(f"/fhir/DocumentReference?patient.identifier={card}").json()
    url = docs["entry"][0]["resource"]["content"][0]["attachment"]["url"]
    assert client.get(f"/fhir/{url}", headers={"Accept": "application/pdf"}).status_code == 200
    assert client.get("/fhir/Patient?family=张").status_code == 200
    assert client.get(f"/fhir/Patient/$ihe-pix?sourceIdentifier={card}").status_code == 200
    match = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {
        "resourceType": "Patient", "name": [{"family": "张", "given": ["三"]}]}}]}
    assert client.post("/fhir/Patient/$match", json=match, headers=JSON).status_code == 200
    events = _events(client, core)

    provided = _ihe(events, "ITI-65")
    assert sorted(e["outcome"] for e in provided) == ["0", "4"]
    for event in provided:
        assert _type(event) == (DCM, "110107") and event["action"] == "C"  # Import
        assert {"reference": f"Patient/{patient}"} in [x.get("what") for x in event["entity"]]
    for transaction in ("ITI-66", "ITI-67", "ITI-78", "ITI-83"):
        found = _ihe(events, transaction)
        assert len(found) == 1, (transaction, found)
        assert _type(found[0]) == (DCM, "110112") and found[0]["action"] == "E"  # Query
        assert any(x.get("query") for x in found[0]["entity"])  # the query itself
    (retrieved,) = _ihe(events, "ITI-68")
    assert _type(retrieved) == (DCM, "110106") and retrieved["action"] == "R"  # Export
    assert {"reference": url} in [x.get("what") for x in retrieved["entity"]]
    (matched,) = _ihe(events, "ITI-119")
    assert _type(matched) == (DCM, "110112")
    # ITI-41 stores a SubmissionSet List too, but is not audited as an ITI-65
    h.patient(client)
    data = b"x"
    message = h.iti41((h.entry(data), data))
    h.post(client, "/xds/repository", message.content_type, message.body)
    assert len(_ihe(_events(client, core), "ITI-65")) == 2

