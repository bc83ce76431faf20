"""MHD, PIXm and PDQm driven by a real FHIR client (the ``fhirclient`` package) against a live
``sonobridge serve``, with the ATNA feed of that server going to a real TLS collector: the
client provides a document bundle (ITI-65), finds the SubmissionSet and the document
(ITI-66/67 with fhirclient's search models), retrieves the bytes at the attachment's URL
(ITI-68), cross-references the patient's identifiers (ITI-83) and finds the patient by
demographics (ITI-78); the collector receives every request's audit event as a
schema-valid DICOM AuditMessage over mutual TLS."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhirclient import client as fhir_client
from fhirclient.models.documentreference import DocumentReference
from fhirclient.models.list import List as FhirList
from fhirclient.models.parameters import Parameters
from fhirclient.models.patient import Patient

from tests.core.test_mhd import ID_CARD, PDF, provide_bundle
from tests.hie.test_syslog import TlsCollector, parse_message, pki  # noqa: F401 - fixture
from tests.live import serve

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
MRN = "urn:sonobridge:hl7:id:HOSP"


@pytest.fixture(scope="module")
def live(pki: Path, tmp_path_factory: pytest.TempPathFactory  # noqa: F811 - the fixture
         ) -> Iterator[tuple[str, TlsCollector]]:
    work = tmp_path_factory.mktemp("mhd-fhirclient")
    tls = work / "data" / "tls"
    tls.mkdir(parents=True)
    for name in ("node.pem", "node.key", "ca.pem"):
        shutil.copy(pki / name, tls / name)
    collector = TlsCollector(pki)
    try:
        with serve(f"sqlite:///{work / 'sonobridge.db'}", work, SONOBRIDGE_AUDIT="on",
                   SONOBRIDGE_AUDIT_FEED=f"tls://127.0.0.1:{collector.port}",
                   SONOBRIDGE_AUDIT_FEED_CERT="tls/node.pem",
                   SONOBRIDGE_AUDIT_FEED_KEY="tls/node.key",
                   SONOBRIDGE_AUDIT_FEED_CA="tls/ca.pem",
                   SONOBRIDGE_AUDIT_SOURCE_ID="SONO-LIVE") as (base, _log):
            yield base, collector
    finally:
        collector.close()


def test_mhd_pixm_pdqm_with_fhirclient_and_the_feed(live: tuple[str, TlsCollector]) -> None:
    base, collector = live
    smart = fhir_client.FHIRClient(settings={"app_id": "mhd-source",
                                             "api_base": f"{base}/fhir/"})
    server: Any = smart.server
    patient = Patient({"name": [{"family": "张", "given": ["三"]}], "gender": "male",
                       "birthDate": "1990-03-07",
                       "identifier": [{"system": ID_CARD, "value": "110101199003077777"},
                                      {"system": MRN, "value": "MRN-42"}]})
    created = patient.create(server)
    patient_id = created["id"]

    # ITI-65 Provide Document Bundle
    response = server.post_json("", provide_bundle(patient_id)).json()
    assert [e["response"]["status"][:3] for e in response["entry"]] == ["201"] * 3

    # ITI-66 Find Document Lists and ITI-67 Find Document References (fhirclient's models)
    lists = list(FhirList.where(struct={"code": "submissionset",
                                   "patient.identifier": f"{ID_CARD}|110101199003077777"}
                           ).perform_resources_iter(server))
    assert len(lists) == 1 and lists[0].subject.reference == f"Patient/{patient_id}"
    docs = list(DocumentReference.where(struct={
        "patient.identifier": f"{ID_CARD}|110101199003077777", "status": "current",
        "creation": "ge2026-01-01"}).perform_resources_iter(server))
    assert len(docs) == 1
    attachment = docs[0].content[0].attachment
    assert attachment.contentType == "application/pdf" and attachment.size == len(PDF)

    # ITI-68 Retrieve Document
    got = server.session.get(f"{base}/fhir/{attachment.url}",
                             headers={"Accept": "application/pdf"})
    assert got.status_code == 200 and got.content == PDF
    assert got.headers["Content-Type"] == "application/pdf"

    # ITI-83 $ihe-pix, answered as a Parameters fhirclient parses
    answer = Parameters(server.request_json(
        f"Patient/$ihe-pix?sourceIdentifier={MRN}|MRN-42&targetSystem={ID_CARD}"))
    found = {(p.name, p.valueIdentifier.value if p.valueIdentifier else
              p.valueReference.reference) for p in answer.parameter}
    assert found == {("targetIdentifier", "110101199003077777"),
                     ("targetId", f"Patient/{patient_id}")}

    # ITI-78 PDQm
    matches = list(Patient.where(struct={"family": "张", "given": "三", "birthdate": "1990-03-07",
                                    "gender": "male"}).perform_resources_iter(server))
    assert [p.id for p in matches] == [patient_id]

    # ATNA: every one of these requests reached the collector as a valid AuditMessage
    collector.wait_for(8, timeout=30)
    assert collector.peers and set(collector.peers) == {"node"}
    seen = []
    for message in collector.messages:
        _header, root = parse_message(message)
        assert root.find("AuditSourceIdentification").get("AuditSourceID") == "SONO-LIVE"
        seen.append(root.find("EventIdentification/EventTypeCode").get("csd-code"))
    assert "create" in seen and "search-type" in seen and "read" in seen, seen
