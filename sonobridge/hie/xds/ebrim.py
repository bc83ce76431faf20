"""XDS.b metadata in ebRIM 3.0 (IHE ITI TF-3 4.2.3 and 4.2.5 tables): DocumentEntry
(ExtrinsicObject), SubmissionSet (RegistryPackage), HasMember associations, and the
RegistryResponse / AdhocQueryResponse with their errors. Built and read with lxml; what is
built is checked against the schemas before it leaves (``xml.schema_errors``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

from sonobridge.hie.xds.xml import NS, q

# ITI TF-3 Table 4.2.5-1: classification schemes and identification schemes.
DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"  # stable DocumentEntry
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DE_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_FORMAT = "urn:uuid:a09d5840-386f-4d6b-a73b-37b6d2d8e78f"
DE_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_EVENT = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
EXTERNAL_ID = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
ASSOCIATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"
PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"

OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
UNIQUE_ID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+(\^[A-Za-z0-9.\-]{1,16})?$")
DTM = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2})?)?)?)?)?$")
CX = re.compile(r"^([^\^&]+)\^\^\^&([0-2](\.(0|[1-9][0-9]*))+)&ISO$")


class MetadataError(Exception):
    """An ebRIM rule broken: answered in a RegistryResponse with this IHE error code and
    the location (an object id and attribute)."""

    def __init__(self, code: str, message: str, location: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.location = location


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str
    display: str


@dataclass
class DocEntry:
    """The DocumentEntry attributes SonoBridge sends and keeps (ITI TF-3 4.2.3.2)."""

    entry_uuid: str
    unique_id: str
    patient_id: str  # CX in the affinity domain: id^^^&OID&ISO
    mime_type: str
    creation_time: str  # DTM, UTC
    class_code: Code
    type_code: Code
    format_code: Code
    confidentiality: Code
    facility_type: Code
    practice_setting: Code
    language: str = "zh-CN"
    title: str = ""
    hash: str = ""  # hex SHA-1
    size: int | None = None
    repository_unique_id: str = ""
    source_patient_id: str = ""
    author_person: str = ""
    author_institution: str = ""
    status: str = APPROVED
    service_start: str = ""
    reference_ids: list[str] = field(default_factory=list)  # referenceIdList (CXi)
    home: str = ""


@dataclass
class SubmissionSet:
    entry_uuid: str
    unique_id: str
    source_id: str
    patient_id: str
    submission_time: str
    content_type: Code
    title: str = ""
    author_institution: str = ""


def _sub(parent: etree._Element, prefix: str, local: str, **attrs: str) -> etree._Element:
    return etree.SubElement(parent, q(prefix, local), {k: v for k, v in attrs.items() if v})


def slot(parent: etree._Element, name: str, values: list[str]) -> None:
    node = _sub(parent, "rim", "Slot", name=name)
    value_list = _sub(node, "rim", "ValueList")
    for value in values:
        _sub(value_list, "rim", "Value").text = value


def _localized(parent: etree._Element, tag: str, text: str) -> None:
    if text:
        holder = _sub(parent, "rim", tag)
        _sub(holder, "rim", "LocalizedString", value=text)


def classification(parent: etree._Element, scheme: str, obj: str, code: Code,
                   number: int) -> None:
    node = _sub(parent, "rim", "Classification", id=f"{obj}-c{number}",
                objectType=CLASSIFICATION, classificationScheme=scheme,
                classifiedObject=obj)
    node.set("nodeRepresentation", code.code)
    slot(node, "codingScheme", [code.scheme])
    _localized(node, "Name", code.display or code.code)


def _author(parent: etree._Element, scheme: str, obj: str, person: str, institution: str,
            number: int) -> None:
    node = _sub(parent, "rim", "Classification", id=f"{obj}-c{number}",
                objectType=CLASSIFICATION, classificationScheme=scheme,
                classifiedObject=obj)
    node.set("nodeRepresentation", "")
    if person:
        slot(node, "authorPerson", [person])
    if institution:
        slot(node, "authorInstitution", [institution])


def external_id(parent: etree._Element, scheme: str, obj: str, value: str, name: str,
                number: int) -> None:
    node = _sub(parent, "rim", "ExternalIdentifier", id=f"{obj}-e{number}",
                objectType=EXTERNAL_ID, registryObject=obj, identificationScheme=scheme,
                value=value)
    _localized(node, "Name", name)


def extrinsic(entry: DocEntry) -> etree._Element:
    """A DocumentEntry as an ExtrinsicObject (LeafClass)."""
    obj = entry.entry_uuid
    node = etree.Element(q("rim", "ExtrinsicObject"), nsmap={"rim": NS["rim"]})
    for key, value in (("id", obj), ("mimeType", entry.mime_type),
                       ("objectType", DOCUMENT_ENTRY), ("status", entry.status),
                       ("home", entry.home)):
        if value:
            node.set(key, value)
    slot(node, "creationTime", [entry.creation_time])
    if entry.hash:
        slot(node, "hash", [entry.hash])
    slot(node, "languageCode", [entry.language])
    if entry.repository_unique_id:
        slot(node, "repositoryUniqueId", [entry.repository_unique_id])
    if entry.service_start:
        slot(node, "serviceStartTime", [entry.service_start])
    if entry.size is not None:
        slot(node, "size", [str(entry.size)])
    slot(node, "sourcePatientId", [entry.source_patient_id or entry.patient_id])
    if entry.reference_ids:
        slot(node, "urn:ihe:iti:xds:2013:referenceIdList", entry.reference_ids)
    _localized(node, "Name", entry.title)
    number = 0
    if entry.author_person or entry.author_institution:
        number += 1
        _author(node, DE_AUTHOR, obj, entry.author_person, entry.author_institution, number)
    for scheme, code in ((DE_CLASS, entry.class_code),
                         (DE_CONFIDENTIALITY, entry.confidentiality),
                         (DE_FORMAT, entry.format_code), (DE_FACILITY, entry.facility_type),
                         (DE_PRACTICE, entry.practice_setting), (DE_TYPE, entry.type_code)):
        number += 1
        classification(node, scheme, obj, code, number)
    external_id(node, DE_PATIENT_ID, obj, entry.patient_id, "XDSDocumentEntry.patientId", 1)
    external_id(node, DE_UNIQUE_ID, obj, entry.unique_id, "XDSDocumentEntry.uniqueId", 2)
    return node


def registry_package(sset: SubmissionSet) -> etree._Element:
    obj = sset.entry_uuid
    node = etree.Element(q("rim", "RegistryPackage"), {"id": obj, "objectType": PACKAGE},
                         nsmap={"rim": NS["rim"]})
    slot(node, "submissionTime", [sset.submission_time])
    _localized(node, "Name", sset.title)
    if sset.author_institution:
        _author(node, SS_AUTHOR, obj, "", sset.author_institution, 1)
    classification(node, SS_CONTENT_TYPE, obj, sset.content_type, 2)
    external_id(node, SS_UNIQUE_ID, obj, sset.unique_id, "XDSSubmissionSet.uniqueId", 1)
    external_id(node, SS_SOURCE_ID, obj, sset.source_id, "XDSSubmissionSet.sourceId", 2)
    external_id(node, SS_PATIENT_ID, obj, sset.patient_id, "XDSSubmissionSet.patientId", 3)
    return node


def package_classification(sset: SubmissionSet) -> etree._Element:
    return etree.Element(q("rim", "Classification"), {
        "id": f"{sset.entry_uuid}-ss", "objectType": CLASSIFICATION,
        "classifiedObject": sset.entry_uuid, "classificationNode": SUBMISSION_SET_NODE},
        nsmap={"rim": NS["rim"]})


def association(source: str, target: str, number: int, status: str | None = "Original"
                ) -> etree._Element:
    node = etree.Element(q("rim", "Association"), {
        "id": f"urn:uuid:{_uuid_for(source, target, number)}", "objectType": ASSOCIATION,
        "associationType": HAS_MEMBER, "sourceObject": source, "targetObject": target},
        nsmap={"rim": NS["rim"]})
    if status:
        slot(node, "SubmissionSetStatus", [status])
    return node


def _uuid_for(*parts: object) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(map(str, parts))))


def submit_objects(sset: SubmissionSet, entries: list[DocEntry]) -> etree._Element:
    """lcm:SubmitObjectsRequest: the entries, the submission set, its classification and a
    HasMember association per entry."""
    request = etree.Element(q("lcm", "SubmitObjectsRequest"),
                            nsmap={"lcm": NS["lcm"], "rim": NS["rim"]})
    objects = _sub(request, "rim", "RegistryObjectList")
    for entry in entries:
        objects.append(extrinsic(entry))
    objects.append(registry_package(sset))
    objects.append(package_classification(sset))
    for number, entry in enumerate(entries, 1):
        objects.append(association(sset.entry_uuid, entry.entry_uuid, number))
    return request


def errors_list(parent: etree._Element, errors: list[MetadataError]) -> None:
    if not errors:
        return
    holder = _sub(parent, "rs", "RegistryErrorList")
    for error in errors:
        node = _sub(holder, "rs", "RegistryError", errorCode=error.code,
                    codeContext=error.message[:1000], severity=ERROR,
                    location=error.location)
        node.text = None


def registry_response(errors: list[MetadataError]) -> etree._Element:
    node = etree.Element(q("rs", "RegistryResponse"),
                         {"status": FAILURE if errors else SUCCESS}, nsmap={"rs": NS["rs"]})
    errors_list(node, errors)
    return node


def response_errors(response: etree._Element) -> list[MetadataError]:
    """The errors a RegistryResponse (or a query/retrieve response) reports."""
    return [MetadataError(e.get("errorCode", ""), e.get("codeContext", ""),
                          e.get("location", ""))
            for e in response.iter(q("rs", "RegistryError"))]


def response_status(response: etree._Element) -> str:
    node = response if response.tag == q("rs", "RegistryResponse") else \
        response.find(f".//{q('rs', 'RegistryResponse')}")
    return (node if node is not None else response).get("status", "")


# --------------------------------------------------------------------------- reading


def slot_values(node: etree._Element, name: str) -> list[str]:
    for item in node.findall(q("rim", "Slot")):
        if item.get("name") == name:
            return [v.text or "" for v in item.iter(q("rim", "Value"))]
    return []


def _one(node: etree._Element, name: str, obj: str, required: bool = True) -> str:
    values = slot_values(node, name)
    if len(values) > 1:
        raise MetadataError("XDSRegistryMetadataError", f"slot {name} has more than one value",
                            f"{obj} {name}")
    if not values or not values[0].strip():
        if required:
            raise MetadataError("XDSRegistryMetadataError", f"slot {name} is missing", obj)
        return ""
    return values[0].strip()


def _name(node: etree._Element) -> str:
    found = node.find(f"{q('rim', 'Name')}/{q('rim', 'LocalizedString')}")
    return found.get("value", "") if found is not None else ""


def _code(node: etree._Element, scheme: str, obj: str, label: str) -> Code:
    found = [c for c in node.findall(q("rim", "Classification"))
             if c.get("classificationScheme") == scheme]
    if len(found) != 1:
        raise MetadataError("XDSRegistryMetadataError",
                            f"{label} must be given once (found {len(found)})", f"{obj} {label}")
    node = found[0]
    code = node.get("nodeRepresentation", "")
    schemes = slot_values(node, "codingScheme")
    if not code or len(schemes) != 1 or not schemes[0]:
        raise MetadataError("XDSRegistryMetadataError",
                            f"{label} needs a nodeRepresentation and one codingScheme",
                            f"{obj} {label}")
    return Code(code, schemes[0], _name(node))


def _external(node: etree._Element, scheme: str, obj: str, label: str) -> str:
    found = [e.get("value", "") for e in node.findall(q("rim", "ExternalIdentifier"))
             if e.get("identificationScheme") == scheme]
    if len(found) != 1 or not found[0]:
        raise MetadataError("XDSRegistryMetadataError",
                            f"{label} must be given once (found {len(found)})", f"{obj} {label}")
    return found[0].strip()


def _check_dtm(value: str, obj: str, label: str) -> str:
    if value and not DTM.match(value):
        raise MetadataError("XDSRegistryMetadataError",
                            f"{label} {value!r} is not a DTM (YYYY[MM[DD[hh[mm[ss]]]]])",
                            f"{obj} {label}")
    return value


def _check_cx(value: str, obj: str, label: str) -> str:
    if not CX.match(value):
        raise MetadataError("XDSRegistryMetadataError",
                            f"{label} {value!r} is not a CX id^^^&OID&ISO", f"{obj} {label}")
    return value


def read_entry(node: etree._Element) -> DocEntry:
    """A submitted ExtrinsicObject as a DocEntry, each ITI TF-3 rule checked."""
    obj = node.get("id", "")
    if node.get("objectType") != DOCUMENT_ENTRY:
        raise MetadataError("XDSRegistryMetadataError",
                            f"objectType {node.get('objectType')!r} is not a stable "
                            "DocumentEntry", obj)
    mime = node.get("mimeType", "")
    if not mime:
        raise MetadataError("XDSRegistryMetadataError", "mimeType is missing", obj)
    unique_id = _external(node, DE_UNIQUE_ID, obj, "XDSDocumentEntry.uniqueId")
    if len(unique_id) > 128 or not UNIQUE_ID.match(unique_id):
        raise MetadataError("XDSRegistryMetadataError",
                            f"uniqueId {unique_id!r} is not an OID (with an optional ^ext)",
                            f"{obj} XDSDocumentEntry.uniqueId")
    size = _one(node, "size", obj, required=False)
    if size and not size.isdecimal():
        raise MetadataError("XDSRegistryMetadataError", f"size {size!r} is not a number",
                            f"{obj} size")
    digest = _one(node, "hash", obj, required=False)
    if digest and not re.fullmatch(r"[0-9a-fA-F]{40}", digest):
        raise MetadataError("XDSRegistryMetadataError", "hash is not a hex SHA-1",
                            f"{obj} hash")
    authors = [c for c in node.findall(q("rim", "Classification"))
               if c.get("classificationScheme") == DE_AUTHOR]
    return DocEntry(
        entry_uuid=obj, unique_id=unique_id,
        patient_id=_check_cx(_external(node, DE_PATIENT_ID, obj, "XDSDocumentEntry.patientId"),
                             obj, "XDSDocumentEntry.patientId"),
        mime_type=mime,
        creation_time=_check_dtm(_one(node, "creationTime", obj), obj, "creationTime"),
        class_code=_code(node, DE_CLASS, obj, "classCode"),
        type_code=_code(node, DE_TYPE, obj, "typeCode"),
        format_code=_code(node, DE_FORMAT, obj, "formatCode"),
        confidentiality=_code(node, DE_CONFIDENTIALITY, obj, "confidentialityCode"),
        facility_type=_code(node, DE_FACILITY, obj, "healthcareFacilityTypeCode"),
        practice_setting=_code(node, DE_PRACTICE, obj, "practiceSettingCode"),
        language=_one(node, "languageCode", obj),
        title=_name(node), hash=digest.lower(), size=int(size) if size else None,
        repository_unique_id=_one(node, "repositoryUniqueId", obj, required=False),
        source_patient_id=_one(node, "sourcePatientId", obj),
        author_person=(slot_values(authors[0], "authorPerson") or [""])[0] if authors else "",
        author_institution=(slot_values(authors[0], "authorInstitution") or [""])[0]
        if authors else "",
        service_start=_check_dtm(_one(node, "serviceStartTime", obj, required=False), obj,
                                 "serviceStartTime"),
        reference_ids=slot_values(node, "urn:ihe:iti:xds:2013:referenceIdList"))


def read_submission(request: etree._Element
                    ) -> tuple[SubmissionSet, list[DocEntry], list[tuple[str, str]]]:
    """(the submission set, its document entries, HasMember (source, target) pairs) of a
    SubmitObjectsRequest, with the rules that tie them together checked."""
    objects = request.find(q("rim", "RegistryObjectList"))
    if objects is None:
        raise MetadataError("XDSRegistryMetadataError", "no RegistryObjectList")
    packages = objects.findall(q("rim", "RegistryPackage"))
    marked = {c.get("classifiedObject") for c in objects.findall(q("rim", "Classification"))
              if c.get("classificationNode") == SUBMISSION_SET_NODE}
    sets = [p for p in packages if p.get("id") in marked]
    if len(sets) != 1:
        raise MetadataError("XDSRegistryMetadataError",
                            f"a submission needs exactly one SubmissionSet (found {len(sets)})")
    package = sets[0]
    obj = package.get("id", "")
    sset = SubmissionSet(
        entry_uuid=obj,
        unique_id=_external(package, SS_UNIQUE_ID, obj, "XDSSubmissionSet.uniqueId"),
        source_id=_external(package, SS_SOURCE_ID, obj, "XDSSubmissionSet.sourceId"),
        patient_id=_check_cx(_external(package, SS_PATIENT_ID, obj,
                                       "XDSSubmissionSet.patientId"),
                             obj, "XDSSubmissionSet.patientId"),
        submission_time=_check_dtm(_one(package, "submissionTime", obj), obj,
                                   "submissionTime"),
        content_type=_code(package, SS_CONTENT_TYPE, obj, "contentTypeCode"),
        title=_name(package))
    entries = [read_entry(node) for node in objects.findall(q("rim", "ExtrinsicObject"))]
    members = [(a.get("sourceObject", ""), a.get("targetObject", ""))
               for a in objects.findall(q("rim", "Association"))
               if a.get("associationType") == HAS_MEMBER]
    ids = [e.entry_uuid for e in entries]
    if len(set(ids)) != len(ids):
        raise MetadataError("XDSRegistryMetadataError", "two DocumentEntries share an id")
    linked = {target for source, target in members if source == obj}
    for entry in entries:
        if entry.entry_uuid not in linked:
            raise MetadataError("XDSRegistryMetadataError",
                                "the DocumentEntry is not a member of the SubmissionSet "
                                "(no HasMember association)", entry.entry_uuid)
        if entry.patient_id != sset.patient_id:
            raise MetadataError("XDSPatientIdDoesNotMatch",
                                "the DocumentEntry's patientId is not the SubmissionSet's",
                                f"{entry.entry_uuid} XDSDocumentEntry.patientId")
    return sset, entries, members


def cx(value: str, oid: str) -> str:
    return f"{value}^^^&{oid}&ISO"


def cx_parts(value: str) -> tuple[str, str] | None:
    match = CX.match(value.strip())
    return (match.group(1), match.group(2)) if match else None
