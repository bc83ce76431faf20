"""One document store for MHD and XDS (issue 17, item 3): a document provided by MHD ITI-65 is
found by XDS ITI-18 FindDocuments and retrieved by ITI-43 with the same bytes, size and hash
(the XDS-to-MHD direction is in tests/hie/xds/test_inbound.py)."""

from __future__ import annotations

import hashlib
from typing import Any

from lxml import etree

from sonobridge.hie.xds import ebrim
from sonobridge.hie.xds.peers import Peers
from sonobridge.hie.xds.xml import q, schema_errors
from tests.core.test_mhd import PDF, H, provide_bundle
from tests.hie.xds import helpers as h

ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"


def test_mhd_provided_document_is_found_and_retrieved_by_xds(client: Any, core: Any) -> None:
    patient = h.patient(client)
    bundle = provide_bundle(patient, unique="1.2.156.7.7")
    r = client.post("/fhir", headers=H, json=bundle)
    assert r.status_code == 200, r.text

    status, answer = h.post_message(client, "/xds/registry", ITI18, h.find_documents())
    assert status == 200 and answer.body.get("status") == ebrim.SUCCESS, \
        etree.tostring(answer.body)
    assert schema_errors(answer.body) == []
    objects = answer.body.findall(f".//{q('rim', 'ExtrinsicObject')}")
    assert len(objects) == 1
    entry = ebrim.read_entry(objects[0])
    assert entry.unique_id == "1.2.156.7.7"
    assert entry.patient_id == h.PATIENT_CX
    assert entry.mime_type == "application/pdf"
    assert entry.size == len(PDF) and entry.hash == hashlib.sha1(PDF).hexdigest()

    repository = Peers.of(core.settings).repository_unique_id
    status, answer = h.post_message(client, "/xds/repository", ITI43,
                                    h.retrieve(repository, entry.unique_id))
    assert status == 200
    document = answer.body.find(f".//{q('xds', 'Document')}")
    assert answer.binary(document) == PDF
