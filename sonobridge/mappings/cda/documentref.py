"""The DocumentReference that indexes a WS/T 500 document (MHD/XDS metadata in FHIR)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sonobridge.mappings.cda import codes as C

CONTENT_TYPE = "application/xml"
LOINC_IMAGING = {"system": "http://loinc.org", "code": "18748-4",
                 "display": "Diagnostic imaging study"}
LOINC_CONSULT = {"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}
CONFIDENTIALITY_N = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                     "code": "N", "display": "normal"}
VERSION_EXT = "http://sonobridge.org/fhir/StructureDefinition/cda-version"
URI = "urn:ietf:rfc:3986"
OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
UUID_OID = re.compile(r"^2\.25\.(0|[1-9][0-9]{0,38})$")


@dataclass
class DocumentInfo:
    """What the index says about one version of a document."""

    set_id: str
    version: int
    document_id: str
    kind: str  # "report" (WS/T 500.6) or "consultation" (WS/T 500.45)
    date: str | None = None  # FHIR instant
    authors: list[dict[str, Any]] = field(default_factory=list)  # References
    custodian: dict[str, Any] | None = None
    doc_status: str = "final"


def document_reference(info: DocumentInfo, *, subject: dict[str, Any],
                       related: list[dict[str, Any]], attachment: dict[str, Any],
                       replaces: str | None = None) -> dict[str, Any]:
    """A current DocumentReference: masterIdentifier the document id, the set id as an
    identifier, ``format`` the template id as a URI code, ``relatesTo`` replaces the
    DocumentReference of the previous version."""
    report = info.kind == "report"
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "extension": [{"url": VERSION_EXT, "valueInteger": info.version}],
        "masterIdentifier": {"system": f"urn:oid:{C.DOCUMENT_ID}", "value": info.document_id},
        "identifier": [{"use": "secondary", "system": "urn:sonobridge:cda:set",
                        "value": info.set_id}],
        "status": "current",
        "docStatus": info.doc_status,
        "type": {"coding": [
            LOINC_IMAGING if report else LOINC_CONSULT,
            {"system": f"urn:oid:{C.DOC_TYPE_SYSTEM}",
             "code": C.REPORT_CODE if report else C.CONSULT_CODE,
             "display": C.REPORT_TITLE if report else C.CONSULT_TITLE}],
            "text": C.REPORT_TITLE if report else C.CONSULT_TITLE},
        "subject": subject,
        "securityLabel": [{"coding": [CONFIDENTIALITY_N]}],
        "content": [{"attachment": {"contentType": CONTENT_TYPE, "language": "zh-CN",
                                    "title": C.REPORT_TITLE if report else C.CONSULT_TITLE,
                                    **attachment},
                     "format": {"system": C.FORMAT_SYSTEM,
                                "code": C.REPORT_FORMAT if report else C.CONSULT_FORMAT,
                                "display": "WS/T 500.6 检查报告" if report
                                else "WS/T 500.45 会诊记录"}}],
        "context": {"related": related},
    }
    if info.date:
        doc["date"] = info.date
    if info.authors:
        doc["author"] = info.authors
    if info.custodian:
        doc["custodian"] = info.custodian
    if replaces:
        doc["relatesTo"] = [{"code": "replaces", "target": {"reference": replaces}}]
    return doc


def version_of(doc: dict[str, Any]) -> int:
    for ext in doc.get("extension") or []:
        if ext.get("url") == VERSION_EXT and isinstance(ext.get("valueInteger"), int):
            return int(ext["valueInteger"])
    return 1


def set_id_of(doc: dict[str, Any]) -> str | None:
    for ident in doc.get("identifier") or []:
        if ident.get("system") == "urn:sonobridge:cda:set":
            return str(ident.get("value"))
    return None


def xds_unique_id(doc: dict[str, Any]) -> str:
    """The XDS ``DocumentEntry.uniqueId`` of a DocumentReference (the MHD mapping): the
    ``masterIdentifier`` when it is an OID (``urn:oid:`` or bare, at most 64 characters); a
    ``urn:uuid:`` master as its 2.25 OID (ITU-T X.667, so it maps back); else a 2.25 OID
    derived from the master's system and value — a WS/T 500 document id
    (``DiagnosticReport-….1``) is no OID, and a repository needs one. The derived kind cannot
    be mapped back, so ``with_unique_id`` keeps it as an identifier for ITI-43 to find."""
    master = doc.get("masterIdentifier") or {}
    value = str(master.get("value") or "")
    if value.startswith("urn:oid:"):
        value = value[8:]
    if OID.match(value) and len(value) <= 64:
        return value
    if value.startswith("urn:uuid:"):
        try:
            return f"2.25.{uuid.UUID(value[9:]).int}"
        except ValueError:
            pass
    name = "/".join(("sonobridge-document", str(master.get("system") or ""),
                     value or str(doc.get("id"))))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"


def uuid_of_unique_id(unique_id: str) -> str | None:
    """``urn:uuid:…`` for a 2.25 OID made from a UUID, else None."""
    if not UUID_OID.match(unique_id) or int(unique_id[5:]) >= 1 << 128:
        return None
    return f"urn:uuid:{uuid.UUID(int=int(unique_id[5:]))}"


def with_unique_id(doc: dict[str, Any]) -> dict[str, Any]:
    """The DocumentReference with its derived XDS uniqueId as an identifier
    (``urn:ietf:rfc:3986`` | ``urn:oid:2.25.…``, use ``secondary``) when the master identifier
    is neither an OID nor a UUID: so ITI-43 and GetDocuments, which are given the uniqueId
    ITI-18 returned, find the document by an indexed identifier search."""
    if not doc.get("masterIdentifier"):
        return doc
    unique_id = xds_unique_id(doc)
    value = f"urn:oid:{unique_id}"
    master = str((doc.get("masterIdentifier") or {}).get("value") or "")
    if master in (value, unique_id) or master.lower() == uuid_of_unique_id(unique_id):
        return doc
    identifiers = list(doc.get("identifier") or [])
    if not any(i.get("system") == URI and i.get("value") == value for i in identifiers):
        identifiers.append({"use": "secondary", "system": URI, "value": value})
    return {**doc, "identifier": identifiers}
