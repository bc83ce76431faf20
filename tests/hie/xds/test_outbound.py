"""SonoBridge as Document Source: a final report's WS/T 500.6 CDA queued as a Task and sent
by ITI-41 (SOAP 1.2 + WS-Addressing + MTOM) to a repository that reads it with zeep."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lxml import etree

from sonobridge.hie.xds import ebrim
from sonobridge.hie.xds.outbound import QUEUE_SYSTEM, XdsSender, status
from tests.core.test_documents import _binary, _documents, _final, _seed
from tests.fhir.helpers import body
from tests.hie.xds.zeep_peer import repository

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def peer(tmp_path):
    with repository(tmp_path) as repo:
        yield repo


@pytest.fixture
def settings(settings, peer):  # the conftest's settings, pointed at the test repository
    return settings.replace(xds_repository_url=peer.url, xds_source_oid="2.25.42")


def _pdf(core) -> None:
    """Render the queued report PDFs (the renderer is a cluster duty, not running here)."""
    from sonobridge.core.pdf.report import report_pdf_of

    report_pdf_of(core).drain()


def _tasks(client: Any) -> list[dict[str, Any]]:
    r = client.get(f"/fhir/Task?code={QUEUE_SYSTEM}|ITI-41")
    return [e["resource"] for e in body(r).get("entry", [])]


def test_final_report_reaches_the_repository(client, core, peer):
    _seed(client)
    assert _tasks(client) == []  # preliminary: nothing queued
    _final(client)
    tasks = _tasks(client)
    assert len(tasks) == 1 and tasks[0]["status"] == "requested"
    doc = _documents(client)[0]
    assert tasks[0]["focus"]["reference"] == f"DocumentReference/{doc['id']}"
    cda = _binary(client, doc)

    sender = XdsSender(core)
    assert sender.send_due() == 1  # the report's PDF is not made yet: wait for it
    assert peer.received == []
    task = _tasks(client)[0]
    assert task["status"] == "requested" and "PDF" in task["businessStatus"]["text"]
    _pdf(core)
    sender = XdsSender(core, clock=lambda: datetime.now(UTC) + timedelta(seconds=6))
    assert sender.send_due() == 1
    assert len(peer.received) == 1
    got = peer.received[0]
    assert got.action == "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
    assert got.content_type.startswith("multipart/related")
    assert 'type="application/xop+xml"' in got.content_type
    parts = list(got.documents.values())  # the MTOM parts: the stored CDA, the report's PDF
    assert parts[0] == cda and parts[1].startswith(b"%PDF") and len(parts) == 2
    # zeep read the message against the published WSDL: the document (XOP resolved) and
    # the ebRIM objects (kept raw by zeep: substitution groups), read back here
    documents = [(d.id, d._value_1) for d in got.request.Document]
    assert documents[0] == ("Document01", cda)
    assert documents[1][0] == "Document02" and documents[1][1].startswith(b"%PDF")
    raw = list(got.request.SubmitObjectsRequest.RegistryObjectList._raw_elements)
    assert [etree.QName(e).localname for e in raw] == \
        ["ExtrinsicObject", "ExtrinsicObject", "RegistryPackage", "Classification",
         "Association", "Association"]
    pdf = ebrim.read_entry(raw[1])
    assert pdf.mime_type == "application/pdf"
    assert pdf.hash == hashlib.sha1(documents[1][1]).hexdigest()
    entry = ebrim.read_entry(raw[0])
    assert entry.hash == hashlib.sha1(cda).hexdigest() and entry.size == len(cda)
    assert entry.patient_id == "110101199003070011^^^&2.16.156.10011.1.3&ISO"
    assert entry.format_code.code == "urn:oid:2.16.156.10011.2.1.1.26"  # WS/T 500.6
    assert entry.mime_type == "application/xml"
    assert ebrim.slot_values(raw[2], "submissionTime")
    task = _tasks(client)[0]
    assert task["status"] == "completed", task
    assert task["output"][0]["valueString"].startswith("Success")
    assert status(core) == {"requested": 0, "completed": 1, "failed": 0}
    assert sender.send_due() == 0  # nothing is sent twice
    assert len(peer.received) == 1


def test_retry_then_give_up_on_refusal(client, core, peer):
    _seed(client)
    _final(client)
    _pdf(core)
    now = datetime.now(UTC)
    clock = [now]
    sender = XdsSender(core, clock=lambda: clock[0])
    peer.answers = ["500", "busy", "failure"]
    assert sender.send_due() == 1
    task = _tasks(client)[0]
    assert task["status"] == "requested"  # the network: try again later
    assert task["input"][0]["valueInteger"] == 1
    assert "HTTP 500" in task["businessStatus"]["text"]
    assert sender.send_due() == 0  # not due yet (5 s back-off)
    clock[0] = now + timedelta(seconds=6)
    assert sender.send_due() == 1
    task = _tasks(client)[0]
    assert task["status"] == "requested" and "XDSRepositoryBusy" in \
        task["businessStatus"]["text"]
    clock[0] = now + timedelta(seconds=30)
    assert sender.send_due() == 1
    task = _tasks(client)[0]
    assert task["status"] == "failed"  # refused metadata does not change by retrying
    assert "XDSUnknownPatientId" in task["businessStatus"]["text"]
    assert len(peer.received) == 3


def test_patient_without_affinity_id_fails_without_sending(client, core, peer):
    _seed(client)
    r = client.get("/fhir/Patient/pt1")
    patient = body(r)
    patient["identifier"] = [i for i in patient["identifier"]
                             if i["system"] != "urn:oid:2.16.156.10011.1.3"]
    assert client.put("/fhir/Patient/pt1", json=patient).status_code == 200
    _final(client)
    tasks = _tasks(client)
    if not tasks:  # the document itself needs the 身份证号: nothing to send
        return
    XdsSender(core).send_due()
    task = _tasks(client)[0]
    assert task["status"] == "failed"
    assert "affinity domain" in task["businessStatus"]["text"]
    assert peer.received == []


def test_rad68_manifest_of_the_reported_study(client, core, peer):
    import io

    from pydicom import dcmread

    from sonobridge.hie.xds.peers import Peers
    from tests.dicom_data import cine
    from tests.dicomweb.helpers import stow

    _seed(client)
    ds = cine("jpeg", frames=2, patient_id="MZ-001")
    assert stow(client, [ds]).status_code == 200
    study = str(ds.StudyInstanceUID)
    _final(client, imagingStudy=[{"reference": f"ImagingStudy/{study}"}])
    _pdf(core)
    tasks = _tasks(client)
    assert sorted(t["code"]["coding"][0]["code"] for t in tasks) == ["ITI-41"]
    rad = client.get(f"/fhir/Task?code={QUEUE_SYSTEM}|RAD-68").json()["entry"]
    assert rad[0]["resource"]["focus"]["reference"] == f"ImagingStudy/{study}"
    assert XdsSender(core).send_due() == 2
    assert len(peer.received) == 2
    manifests = [r for r in peer.received
                 if b"application/dicom" in etree.tostring(
                     r.request.SubmitObjectsRequest.RegistryObjectList._raw_elements[0])]
    assert len(manifests) == 1
    entry = ebrim.read_entry(manifests[0].request.SubmitObjectsRequest
                             .RegistryObjectList._raw_elements[0])
    assert entry.format_code.code == "1.2.840.10008.5.1.4.1.1.88.59"
    assert entry.reference_ids == [f"{study}^^^^urn:ihe:iti:xds:2016:studyInstanceUID"]
    kos = dcmread(io.BytesIO(manifests[0].request.Document[0]._value_1))
    assert kos.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"
    assert kos.SOPInstanceUID == entry.unique_id
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113030"
    assert kos.PatientID == "MZ-001" and kos.StudyInstanceUID == study
    series = kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ds.SeriesInstanceUID
    assert series.RetrieveLocationUID == Peers.of(core.settings).repository_unique_id
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert [i.ValueType for i in kos.ContentSequence] == ["IMAGE"]
    assert status(core) == {"requested": 0, "completed": 2, "failed": 0}
