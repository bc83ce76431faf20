"""IHE XDS.b / XDS-I.b with real peers over HTTP: one SonoBridge process (the hospital's)
submits a final report's WS/T 500.6 CDA by ITI-41 to a second SonoBridge process acting as
the regional platform (registry + repository + imaging document source), and zeep — a real
SOAP client, loading the platform's published WSDL — queries (ITI-18), retrieves the
document (ITI-43) and retrieves a DICOM instance (RAD-69) from it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from lxml import etree
from pydicom import dcmread

from sonobridge.hie.xds import ebrim
from sonobridge.hie.xds.xml import NS, q, schema_errors
from tests.core.test_documents import (
    DEPT,
    EXPERT,
    FINDINGS,
    HOSPITAL,
    PATIENT,
    REPORT,
    REQUEST,
    SIZE,
    SONOGRAPHER,
)
from tests.hie.xds.zeep_peer import zeep_client
from tests.live import serve

FIND = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
PLATFORM_REPOSITORY = "2.25.314159265358979323846"
CARD = "110101199003070011^^^&2.16.156.10011.1.3&ISO"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _put(base: str, resource: dict[str, Any]) -> None:
    r = httpx.put(f"{base}/fhir/{resource['resourceType']}/{resource['id']}", json=resource,
                  headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert r.status_code in (200, 201), r.text


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonobridge", *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env={**os.environ, **env})


def _values(*values: str) -> dict[str, Any]:
    """A rim:ValueList as zeep builds it (a repeated sequence of Value)."""
    return {"_value_1": [{"Value": v} for v in values]}


def test_report_to_platform_then_zeep(tmp_path: Path, us_files: dict[str, Path]) -> None:
    (tmp_path / "platform").mkdir()
    (tmp_path / "hospital").mkdir()
    with serve(f"sqlite:///{tmp_path}/platform.db", tmp_path / "platform", "--no-sample",
               SONOBRIDGE_XDS_REPOSITORY_UNIQUE_ID=PLATFORM_REPOSITORY) as (platform, _):
        _put(platform, PATIENT)  # the platform knows the resident by 身份证号
        with serve(f"sqlite:///{tmp_path}/hospital.db", tmp_path / "hospital", "--no-sample",
                   SONOBRIDGE_XDS_REPOSITORY_URL=f"{platform}/xds/repository",
                   SONOBRIDGE_XDS_SOURCE_OID="2.25.2718281828") as (hospital, log):
            for resource in (PATIENT, HOSPITAL, DEPT, EXPERT, SONOGRAPHER, REQUEST, FINDINGS,
                             SIZE, REPORT):
                _put(hospital, resource)
            _put(hospital, {**REPORT, "status": "final"})
            cda = httpx.get(f"{hospital}/fhir/DiagnosticReport/rep1/$cda", timeout=30).content
            deadline = time.monotonic() + 30
            found: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not found:
                time.sleep(0.5)
                bundle = httpx.get(f"{platform}/fhir/DocumentReference", timeout=30).json()
                found = [e["resource"] for e in bundle.get("entry", [])
                         if e["resource"]["content"][0]["attachment"].get("url")]
            assert found, log.read_text()[-3000:]
            task = httpx.get(f"{hospital}/fhir/Task?code=urn:sonobridge:xds|ITI-41",
                             timeout=30).json()["entry"][0]["resource"]
            deadline = time.monotonic() + 10
            while task["status"] == "requested" and time.monotonic() < deadline:
                time.sleep(0.5)
                task = httpx.get(f"{hospital}/fhir/Task/{task['id']}", timeout=30).json()
            assert task["status"] == "completed", task

        # sonobridge hie status, on the hospital's database: one ITI-41 completed.
        done = _cli(tmp_path, "hie", "status",
                    SONOBRIDGE_DATABASE_URL=f"sqlite:///{tmp_path}/hospital.db",
                    SONOBRIDGE_DATA_DIR=str(tmp_path / "hospital" / "data"))
        assert "completed 1" in done.stdout and "failed 0" in done.stdout, done

        # The platform filed the CDA for its own patient (core/documents, through XDS).
        reports = httpx.get(f"{platform}/fhir/DiagnosticReport?subject=Patient/pt1",
                            timeout=30).json()
        assert reports.get("entry"), reports

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = zeep_client(f"{platform}/xds/wsdl")
        registry = client.bind("SonoBridgeXDS", "DocumentRegistry_Port_Soap12")
        answer = registry.DocumentRegistry_RegistryStoredQuery(
            ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
            AdhocQuery={"id": FIND, "Slot": [
                {"name": "$XDSDocumentEntryPatientId", "ValueList": _values(f"'{CARD}'")},
                {"name": "$XDSDocumentEntryStatus",
                 "ValueList": _values(f"('{ebrim.APPROVED}')")}]})
        assert answer.status == ebrim.SUCCESS
        objects = list(answer.RegistryObjectList._raw_elements)
        entries = {e.mime_type: e for e in map(ebrim.read_entry, objects)}
        assert sorted(entries) == ["application/pdf", "application/xml"]  # the CDA, the PDF
        entry = entries["application/xml"]
        assert entry.hash == hashlib.sha1(cda).hexdigest()
        assert entry.repository_unique_id == PLATFORM_REPOSITORY
        assert entry.format_code.code == "urn:oid:2.16.156.10011.2.1.1.26"

        repository = client.bind("SonoBridgeXDS", "DocumentRepository_Port_Soap12")
        got = repository.DocumentRepository_RetrieveDocumentSet(DocumentRequest=[
            {"RepositoryUniqueId": PLATFORM_REPOSITORY, "DocumentUniqueId": entry.unique_id}])
        assert got.RegistryResponse.status == ebrim.SUCCESS
        assert got.DocumentResponse[0].mimeType == "application/xml"
        # zeep strips CR/LF from both ends of a "binary" MIME part (zeep/wsdl/attachments.py,
        # Attachment.content); the exact bytes are checked with our own reader in
        # tests/hie/xds/test_inbound.py.
        assert got.DocumentResponse[0].Document == cda.strip(b"\r\n")

        # sonobridge hie query: the Document Consumer (ITI-18, then ITI-43 into a folder).
        found = _cli(tmp_path, "hie", "query", "--patient", "110101199003070011", "--out",
                     str(tmp_path / "got"),
                     SONOBRIDGE_XDS_REGISTRY_URL=f"{platform}/xds/registry",
                     SONOBRIDGE_XDS_REPOSITORY_URL=f"{platform}/xds/repository",
                     SONOBRIDGE_DATA_DIR=str(tmp_path / "cli"))
        assert found.returncode == 0, found.stderr
        assert (tmp_path / "got" / f"{entry.unique_id}.xml").read_bytes() == cda
        pdf = (tmp_path / "got" / f"{entries['application/pdf'].unique_id}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF")

        # RAD-69: a stored ultrasound image, as the platform's imaging document source.
        dataset = dcmread(us_files["US1_UNCR"])
        DICOMwebClient(f"{platform}/dicomweb").store_instances([dataset])
        request = etree.Element(q("xds", "DocumentRequest"), nsmap={"xds": NS["xds"]})
        etree.SubElement(request, q("xds", "RepositoryUniqueId")).text = PLATFORM_REPOSITORY
        etree.SubElement(request, q("xds", "DocumentUniqueId")).text = str(
            dataset.SOPInstanceUID)
        imaging = client.bind("SonoBridgeXDS", "ImagingDocumentSource_Port_Soap12")
        got = imaging.ImagingDocumentSource_RetrieveImagingDocumentSet(
            StudyRequest=[{"studyInstanceUID": str(dataset.StudyInstanceUID), "SeriesRequest": [
                {"seriesInstanceUID": str(dataset.SeriesInstanceUID), "_value_1": [request]}]}],
            TransferSyntaxUIDList={"TransferSyntaxUID": [
                str(dataset.file_meta.TransferSyntaxUID)]})
        assert got.RegistryResponse.status == ebrim.SUCCESS, got
        assert got.DocumentResponse[0].mimeType == "application/dicom"
        assert got.DocumentResponse[0].Document == \
            us_files["US1_UNCR"].read_bytes().strip(b"\r\n")

        # A transfer syntax the requester cannot take: an error for that instance.
        got = imaging.ImagingDocumentSource_RetrieveImagingDocumentSet(
            StudyRequest=[{"studyInstanceUID": str(dataset.StudyInstanceUID), "SeriesRequest": [
                {"seriesInstanceUID": str(dataset.SeriesInstanceUID), "_value_1": [request]}]}],
            TransferSyntaxUIDList={"TransferSyntaxUID": ["1.2.840.10008.1.2.4.50"]})
        assert got.RegistryResponse.status == ebrim.FAILURE
        assert got.RegistryResponse.RegistryErrorList.RegistryError[0].errorCode == \
            "XDSRetrieveDocumentTransferSyntaxUnavailable"
        assert schema_errors  # every message above was also checked by the server
