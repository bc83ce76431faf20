"""SonoBridge as XDS.b Document Consumer: ITI-18 FindDocuments to the platform's registry and
ITI-43 Retrieve Document Set from its repository (``sonobridge hie query``). Every answer is
checked against the schemas before it is read."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from lxml import etree

from sonobridge.hie.xds import ebrim, soap
from sonobridge.hie.xds.ebrim import DocEntry, MetadataError
from sonobridge.hie.xds.xml import NS, q, schema_errors

ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"


class ConsumerError(Exception):
    """The peer answered with errors, a fault, or something that is not a valid answer."""


@dataclass
class Document:
    unique_id: str
    mime_type: str
    data: bytes


def _exchange(http: httpx.Client, url: str, action: str, body: etree._Element
              ) -> soap.Message:
    content_type, data, _ = soap.write(action, body, to=url)
    response = http.post(url, content=data, headers={"Content-Type": content_type})
    try:
        answer = soap.read(response.headers.get("content-type", ""), response.content)
    except soap.SoapFault as exc:
        raise ConsumerError(f"HTTP {response.status_code}: {exc.reason}") from exc
    if answer.body.tag == q("soap", "Fault"):
        raise ConsumerError(answer.body.findtext(f".//{q('soap', 'Text')}") or "SOAP Fault")
    problems = schema_errors(answer.inline())
    if problems:
        raise ConsumerError("the answer fails the schemas: " + "; ".join(problems))
    return answer


def _raise_errors(errors: list[MetadataError]) -> None:
    if errors:
        raise ConsumerError("; ".join(f"{e.code}: {e.message}" for e in errors))


def find_documents(http: httpx.Client, url: str, patient_cx: str,
                   statuses: tuple[str, ...] = (ebrim.APPROVED,)) -> list[DocEntry]:
    request = etree.Element(q("query", "AdhocQueryRequest"),
                            nsmap={"query": NS["query"], "rim": NS["rim"]})
    etree.SubElement(request, q("query", "ResponseOption"), returnType="LeafClass",
                     returnComposedObjects="true")
    query = etree.SubElement(request, q("rim", "AdhocQuery"), id=FIND_DOCUMENTS)
    ebrim.slot(query, "$XDSDocumentEntryPatientId", [f"'{patient_cx}'"])
    ebrim.slot(query, "$XDSDocumentEntryStatus",
               ["(" + ",".join(f"'{s}'" for s in statuses) + ")"])
    answer = _exchange(http, url, ITI18, request)
    _raise_errors(ebrim.response_errors(answer.body))
    return [ebrim.read_entry(node)
            for node in answer.body.iter(q("rim", "ExtrinsicObject"))]


def retrieve(http: httpx.Client, url: str, repository: str, unique_id: str) -> Document:
    request = etree.Element(q("xds", "RetrieveDocumentSetRequest"), nsmap={"xds": NS["xds"]})
    item = etree.SubElement(request, q("xds", "DocumentRequest"))
    etree.SubElement(item, q("xds", "RepositoryUniqueId")).text = repository
    etree.SubElement(item, q("xds", "DocumentUniqueId")).text = unique_id
    answer = _exchange(http, url, ITI43, request)
    _raise_errors(ebrim.response_errors(answer.body))
    found = answer.body.find(q("xds", "DocumentResponse"))
    if found is None:
        raise ConsumerError(f"no document {unique_id} in the answer")
    document = found.find(q("xds", "Document"))
    assert document is not None  # the schema requires it
    try:
        data = answer.binary(document)
    except KeyError as exc:
        raise ConsumerError(f"the answer's MTOM part {exc.args[0]} is missing") from exc
    return Document(found.findtext(q("xds", "DocumentUniqueId")) or unique_id,
                    found.findtext(q("xds", "mimeType")) or "", data)
