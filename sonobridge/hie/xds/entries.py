"""DocumentReference <-> XDS DocumentEntry, following the MHD mapping (ITI TF-3 4.5.1): one
document store serves FHIR, MHD and XDS, so a document submitted one way is found the other.

- entryUUID: a DocumentReference identifier ``urn:ietf:rfc:3986|urn:uuid:…`` (kept from an
  ITI-41), else a UUID derived from the resource id;
- uniqueId: ``masterIdentifier`` ``urn:ietf:rfc:3986|urn:oid:…`` or an OID value, a
  ``urn:uuid:`` one as its 2.25 OID, else a 2.25 OID derived from the masterIdentifier (WS/T
  500 document ids are not OIDs), which every DocumentReference written carries as an
  identifier so that the lookups by uniqueId (ITI-43, GetDocuments) find it;
- patientId: the subject Patient's identifier in the affinity domain (``urn:oid:<domain>``);
- codes: ``category``/``type``/``content.format``/``securityLabel``/``context.facilityType``/
  ``context.practiceSetting`` with ``urn:oid:`` systems written as bare OIDs; defaults for a
  remote-ultrasound report where the resource says nothing;
- hash and size: the attachment's (base64 SHA-1 in FHIR, hex in XDS).
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sonobridge.hie.xds.ebrim import APPROVED, DEPRECATED, OID, Code, DocEntry, cx
from sonobridge.mappings.cda.documentref import xds_unique_id

Resource = dict[str, Any]
URI = "urn:ietf:rfc:3986"

# What a report says nothing about (ITI TF-3 4.2.3.2: required in every DocumentEntry).
DEFAULT_CLASS = Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study")
DEFAULT_FACILITY = Code("22232009", "2.16.840.1.113883.6.96", "Hospital")
DEFAULT_PRACTICE = Code("394914008", "2.16.840.1.113883.6.96", "Radiology")
DEFAULT_CONFIDENTIALITY = Code("N", "2.16.840.1.113883.5.25", "normal")
DEFAULT_FORMAT = Code("urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3",
                      "mimeType Sufficient")


def scheme_of(system: str) -> str:
    return system[8:] if system.startswith("urn:oid:") else system


def system_of(scheme: str) -> str:
    return f"urn:oid:{scheme}" if OID.match(scheme) else scheme


def code_of(concept: Resource | None, default: Code) -> Code:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("code") and coding.get("system"):
            return Code(str(coding["code"]), scheme_of(str(coding["system"])),
                        str(coding.get("display") or coding["code"]))
    return default


def coding_of(code: Code) -> Resource:
    return {"system": system_of(code.scheme), "code": code.code, "display": code.display}


def entry_uuid_of(doc: Resource) -> str:
    for ident in doc.get("identifier") or []:
        value = str(ident.get("value") or "")
        if ident.get("system") == URI and value.startswith("urn:uuid:"):
            return value
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'DocumentReference/' + str(doc['id']))}"


def unique_id_of(doc: Resource) -> str:
    """The DocumentEntry uniqueId (``mappings/cda/documentref.xds_unique_id``: the master
    identifier as an OID, a ``urn:uuid:`` one as its 2.25 OID, else a derived 2.25 OID that
    the DocumentReference also carries as an identifier)."""
    return xds_unique_id(doc)


def dtm(instant: str | None) -> str:
    """FHIR dateTime -> XDS DTM in UTC (YYYYMMDDhhmmss), or as precise as given."""
    if not instant:
        return ""
    if "T" not in instant:
        return instant.replace("-", "")
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def instant(value: str) -> str:
    """XDS DTM (UTC) -> FHIR dateTime."""
    digits = re.sub(r"\D", "", value)
    if len(digits) >= 12:
        seconds = digits[12:14] or "00"
        return (f"{digits[0:4]}-{digits[4:6]}-{digits[6:8]}T{digits[8:10]}:{digits[10:12]}:"
                f"{seconds}Z")
    return "-".join(p for p in (digits[0:4], digits[4:6], digits[6:8]) if p)


def hex_hash(attachment: Resource) -> str:
    value = attachment.get("hash")
    return base64.b64decode(value).hex() if value else ""


def document_entry(doc: Resource, patient_cx: str, repository: str, home: str = ""
                   ) -> DocEntry:
    """The DocumentEntry of a stored DocumentReference."""
    content = (doc.get("content") or [{}])[0]
    attachment = content.get("attachment") or {}
    context = doc.get("context") or {}
    created = attachment.get("creation") or doc.get("date") or ""
    period = context.get("period") or {}
    authors = doc.get("author") or []
    return DocEntry(
        entry_uuid=entry_uuid_of(doc), unique_id=unique_id_of(doc), patient_id=patient_cx,
        mime_type=str(attachment.get("contentType") or "application/octet-stream"),
        creation_time=dtm(created) or dtm(datetime.now(UTC).isoformat()),
        class_code=code_of((doc.get("category") or [None])[0],
                           code_of(doc.get("type"), DEFAULT_CLASS)),
        type_code=code_of(doc.get("type"), DEFAULT_CLASS),
        format_code=code_of({"coding": [content.get("format")]} if content.get("format")
                            else None, DEFAULT_FORMAT),
        confidentiality=code_of((doc.get("securityLabel") or [None])[0],
                                DEFAULT_CONFIDENTIALITY),
        facility_type=code_of(context.get("facilityType"), DEFAULT_FACILITY),
        practice_setting=code_of(context.get("practiceSetting"), DEFAULT_PRACTICE),
        language=str(attachment.get("language") or "zh-CN"),
        title=str(attachment.get("title") or (doc.get("type") or {}).get("text") or ""),
        hash=hex_hash(attachment),
        size=int(attachment["size"]) if isinstance(attachment.get("size"), int) else None,
        repository_unique_id=repository, source_patient_id=patient_cx,
        author_person=str(authors[0].get("display") or authors[0].get("reference") or "")
        if authors else "",
        status=APPROVED if doc.get("status") == "current" else DEPRECATED,
        service_start=dtm(period.get("start")), home=home)


def document_reference(entry: DocEntry, patient_id: str, binary_id: str, affinity: str
                       ) -> Resource:
    """A DocumentReference for a DocumentEntry received by ITI-41, its bytes in
    ``Binary/binary_id``."""
    attachment: Resource = {"contentType": entry.mime_type, "url": f"Binary/{binary_id}",
                            "language": entry.language, "creation": instant(entry.creation_time)}
    if entry.title:
        attachment["title"] = entry.title
    if entry.size is not None:
        attachment["size"] = entry.size
    if entry.hash:
        attachment["hash"] = base64.b64encode(bytes.fromhex(entry.hash)).decode()
    context: Resource = {"facilityType": {"coding": [coding_of(entry.facility_type)]},
                         "practiceSetting": {"coding": [coding_of(entry.practice_setting)]},
                         "sourcePatientInfo": {"reference": f"Patient/{patient_id}"}}
    if entry.service_start:
        context["period"] = {"start": instant(entry.service_start)}
    doc: Resource = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": URI, "value": f"urn:oid:{entry.unique_id}"},
        "identifier": [{"use": "official", "system": URI, "value": entry.entry_uuid}],
        "status": "current" if entry.status == APPROVED else "superseded",
        "type": {"coding": [coding_of(entry.type_code)]},
        "category": [{"coding": [coding_of(entry.class_code)]}],
        "subject": {"reference": f"Patient/{patient_id}",
                    "identifier": {"system": f"urn:oid:{affinity}",
                                   "value": entry.patient_id.split("^", 1)[0]}},
        "date": instant(entry.creation_time) if len(entry.creation_time) >= 12 else None,
        "securityLabel": [{"coding": [coding_of(entry.confidentiality)]}],
        "content": [{"attachment": attachment, "format": coding_of(entry.format_code)}],
        "context": context,
    }
    if entry.author_person:
        doc["author"] = [{"display": entry.author_person}]
    return {k: v for k, v in doc.items() if v is not None}


def patient_cx(patient: Resource | None, affinity: str) -> str | None:
    """The patient's id in the affinity domain (its identifier with system
    ``urn:oid:<affinity>``) as a CX, or None."""
    for ident in (patient or {}).get("identifier") or []:
        if ident.get("system") == f"urn:oid:{affinity}" and ident.get("value"):
            return cx(str(ident["value"]), affinity)
    return None
