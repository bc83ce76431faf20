"""Building XDS messages for the tests (with the package's own builders, whose output is
schema-checked before it is returned, so a test message is a valid one unless a test breaks
it on purpose)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from lxml import etree

from sonobridge.hie.xds import ebrim, soap
from sonobridge.hie.xds.ebrim import Code, DocEntry, SubmissionSet
from sonobridge.hie.xds.outbound import Submission, provide_and_register
from sonobridge.hie.xds.xml import NS, q

AFFINITY = "2.16.156.10011.1.3"
ID_CARD = "110101199003071234"
PATIENT_CX = f"{ID_CARD}^^^&{AFFINITY}&ISO"


def patient(client: Any, card: str = ID_CARD) -> str:
    response = client.post("/fhir/Patient", json={
        "resourceType": "Patient", "name": [{"text": "张三"}], "gender": "male",
        "identifier": [{"system": f"urn:oid:{AFFINITY}", "value": card}]})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def new_oid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def entry(data: bytes, *, patient_cx: str = PATIENT_CX, unique_id: str | None = None,
          mime: str = "text/plain", entry_id: str = "Document01", **changes: Any) -> DocEntry:
    made = DocEntry(
        entry_uuid=entry_id, unique_id=unique_id or new_oid(), patient_id=patient_cx,
        mime_type=mime, creation_time="20261203101500",
        class_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"),
        type_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"),
        format_code=Code("urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3",
                         "mimeType Sufficient"),
        confidentiality=Code("N", "2.16.840.1.113883.5.25", "normal"),
        facility_type=Code("22232009", "2.16.840.1.113883.6.96", "Hospital"),
        practice_setting=Code("394914008", "2.16.840.1.113883.6.96", "Radiology"),
        title="超声检查报告", hash=hashlib.sha1(data).hexdigest(), size=len(data),
        source_patient_id=patient_cx)
    for key, value in changes.items():
        setattr(made, key, value)
    return made


def submission_set(patient_cx: str = PATIENT_CX) -> SubmissionSet:
    return SubmissionSet(entry_uuid="SubmissionSet01", unique_id=new_oid(),
                         source_id="2.25.1234", patient_id=patient_cx,
                         submission_time="20261203101600",
                         content_type=Code("18748-4", "2.16.840.1.113883.6.1", "Imaging"),
                         title="submission")


def iti41(*docs: tuple[DocEntry, bytes], sset: SubmissionSet | None = None) -> Submission:
    return provide_and_register(sset or submission_set(), [d for d, _ in docs],
                                {d.entry_uuid: data for d, data in docs})


def post(client: Any, path: str, content_type: str, body: bytes) -> tuple[int, etree._Element]:
    response = client.post(path, content=body, headers={"Content-Type": content_type})
    message = soap.read(response.headers["content-type"], response.content)
    return response.status_code, message.body


def post_message(client: Any, path: str, action: str, body: etree._Element
                 ) -> tuple[int, soap.Message]:
    content_type, data, _ = soap.write(action, body)
    response = client.post(path, content=data, headers={"Content-Type": content_type})
    return response.status_code, soap.read(response.headers["content-type"], response.content)


def find_documents(patient_cx: str = PATIENT_CX, return_type: str = "LeafClass",
                   query_id: str = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d",
                   **slots: list[str]) -> etree._Element:
    request = etree.Element(q("query", "AdhocQueryRequest"),
                            nsmap={"query": NS["query"], "rim": NS["rim"]})
    etree.SubElement(request, q("query", "ResponseOption"), returnType=return_type,
                     returnComposedObjects="true")
    query = etree.SubElement(request, q("rim", "AdhocQuery"), id=query_id)
    values = {"$XDSDocumentEntryPatientId": [f"'{patient_cx}'"],
              "$XDSDocumentEntryStatus": [f"('{ebrim.APPROVED}')"], **slots}
    for name, items in values.items():
        if items:
            ebrim.slot(query, name, items)
    return request


def retrieve(repository: str, *unique_ids: str) -> etree._Element:
    request = etree.Element(q("xds", "RetrieveDocumentSetRequest"), nsmap={"xds": NS["xds"]})
    for unique_id in unique_ids:
        item = etree.SubElement(request, q("xds", "DocumentRequest"))
        etree.SubElement(item, q("xds", "RepositoryUniqueId")).text = repository
        etree.SubElement(item, q("xds", "DocumentUniqueId")).text = unique_id
    return request


def errors(body: etree._Element) -> list[str]:
    return [e.get("errorCode", "") for e in body.iter(q("rs", "RegistryError"))]
