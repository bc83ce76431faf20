"""The parts of a WS/T 500 header every document shares: times, names, identifiers, the
patient, the people and the organisations, made from FHIR resources (dicts)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from lxml import etree

from sonobridge.mappings.cda import codes as C
from sonobridge.mappings.cda.problems import MappingError
from sonobridge.mappings.cda.xml import V3, el

Resource = dict[str, Any]
_FHIR_DT = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
                      r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")
_CDA_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    """Which version of which document: ``set_id`` stays the same across amendments,
    ``version`` counts from 1, ``replaces`` is the version this one replaces (RPLC)."""

    set_id: str
    version: int = 1
    replaces: DocumentVersion | None = None

    @property
    def document_id(self) -> str:
        return f"{self.set_id}.{self.version}"


def cda_ts(value: str | None) -> str | None:
    """A FHIR date/dateTime as a CDA TS
    (``2026-12-01T09:10:00+08:00`` -> ``20261201091000+0800``)."""
    if not value:
        return None
    m = _FHIR_DT.match(value)
    if not m:
        return None
    year, month, day, hh, mm, ss, zone = m.groups()
    out = year + (month or "") + (day or "") + (hh or "") + (mm or "") + (ss or "")
    if hh and zone:
        out += "+0000" if zone == "Z" else zone.replace(":", "")
    return out


def fhir_dt(value: str | None) -> str | None:
    """A CDA TS as a FHIR date or dateTime (the precision it has; seconds added when a
    time without them is given, as FHIR dateTime requires)."""
    if not value:
        return None
    m = _CDA_TS.match(value)
    if not m:
        return None
    year, month, day, hh, mm, ss, zone = m.groups()
    if not hh:
        return "-".join(p for p in (year, month, day) if p)
    out = f"{year}-{month}-{day}T{hh}:{mm or '00'}:{ss or '00'}"
    if zone:
        out += f"{zone[:3]}:{zone[3:]}"
    return out


def clock_ts(now: datetime) -> str:
    """The document's creation time from the clock value given (UTC if naive)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.strftime("%Y%m%d%H%M%S%z")


def age_years(birth: str | None, at: str | None) -> int | None:
    """Whole years between a birth date and a date(time), or None when either is unknown."""
    if not birth or not at or len(birth) < 10 or len(at) < 10:
        return None
    try:
        born, when = date.fromisoformat(birth[:10]), date.fromisoformat(at[:10])
    except ValueError:
        return None
    years = when.year - born.year - ((when.month, when.day) < (born.month, born.day))
    return years if years >= 0 else None


def name_text(resource: Resource | None) -> str | None:
    """A person's name as written in Chinese documents: ``text``, else family + given."""
    if not resource:
        return None
    names = resource.get("name")
    if isinstance(names, str):
        return names
    for name in names or []:
        if name.get("text"):
            return str(name["text"])
        joined = (name.get("family") or "") + "".join(name.get("given") or [])
        if joined:
            return joined
    return None


def identifier(resource: Resource | None, root: str) -> str | None:
    """The value of the identifier whose system is ``urn:oid:<root>``."""
    for ident in (resource or {}).get("identifier") or []:
        if ident.get("system") == f"urn:oid:{root}" and ident.get("value"):
            return str(ident["value"])
    return None


def any_identifier(resource: Resource, root: str) -> str:
    """The identifier under ``root``, else the first identifier's value, else the id."""
    found = identifier(resource, root)
    if found:
        return found
    for ident in resource.get("identifier") or []:
        if ident.get("value"):
            return str(ident["value"])
    return str(resource.get("id") or "")


def reference_id(ref: Any, res_type: str) -> str | None:
    """The id in a ``{"reference": "Type/id"}`` of that type (relative or absolute)."""
    if not isinstance(ref, dict):
        return None
    value = str(ref.get("reference") or "")
    parts = value.split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == res_type:
        return parts[-1]
    return None


def coding_of(concept: Any, preferred: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The coding of a CodeableConcept in a preferred system, else the first with a code."""
    codings = [c for c in (concept or {}).get("coding") or [] if c.get("code")]
    for system in preferred:
        for coding in codings:
            if coding.get("system") == system:
                return dict(coding)
    return dict(codings[0]) if codings else None


def concept_text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if coding.get("display"):
            return str(coding["display"])
    return None


def code_el(parent: etree._Element, tag: str, coding: dict[str, Any] | None,
            text: str | None = None, xsi_type: str | None = None) -> etree._Element:
    """A CD/CE element from a FHIR coding (its system as an OID); a coding with no known OID
    keeps the code as ``originalText`` under nullFlavor OTH."""
    node = el(parent, tag)
    if xsi_type:
        node.set("{http://www.w3.org/2001/XMLSchema-instance}type", xsi_type)
    oid = C.oid_of(coding.get("system")) if coding else None
    if coding and oid:
        node.set("code", str(coding["code"]))
        node.set("codeSystem", oid)
        if coding.get("display"):
            node.set("displayName", str(coding["display"]))
    else:
        node.set("nullFlavor", "OTH" if coding else "NI")
    if text:
        el(node, "originalText", text)
    return node


def de_code(parent: etree._Element, code: str, display: str) -> etree._Element:
    return el(parent, "code", code=code, displayName=display, codeSystem=C.DATA_ELEMENTS,
              codeSystemName="卫生信息数据元目录")


def loinc_code(parent: etree._Element, code: str, display: str) -> etree._Element:
    return el(parent, "code", code=code, displayName=display, codeSystem=C.LOINC_OID,
              codeSystemName="LOINC")


def document_head(root: etree._Element, *, template: str, code: str, title: str,
                  version: DocumentVersion, now: datetime) -> None:
    """realmCode … versionNumber, in the CDA R2 order."""
    el(root, "realmCode", code="CN")
    el(root, "typeId", root=C.CDA_TYPE_ID[0], extension=C.CDA_TYPE_ID[1])
    el(root, "templateId", root=template)
    el(root, "id", root=C.DOCUMENT_ID, extension=version.document_id)
    el(root, "code", code=code, codeSystem=C.DOC_TYPE_SYSTEM,
       codeSystemName="卫生信息共享文档规范编码体系")
    el(root, "title", title)
    el(root, "effectiveTime", value=clock_ts(now))
    el(root, "confidentialityCode", code="N", codeSystem=C.CONFIDENTIALITY,
       codeSystemName="Confidentiality", displayName="正常访问保密级别")
    el(root, "languageCode", code="zh-CN")
    el(root, "setId", root=C.DOCUMENT_ID, extension=version.set_id)
    el(root, "versionNumber", value=str(version.version))


def record_target(root: etree._Element, patient: Resource, role_ids: list[tuple[str, str]],
                  at: str | None) -> None:
    """recordTarget/patientRole: the role ids (root, extension), then the patient with the
    身份证号 (or nullFlavor UNK when the record has none), name, gender, birth time, age."""
    target = el(root, "recordTarget", typeCode="RCT", contextControlCode="OP")
    role = el(target, "patientRole", classCode="PAT")
    for oid, value in role_ids:
        el(role, "id", root=oid, extension=value)
    if not role_ids:
        el(role, "id", nullFlavor="NI")
    person = el(role, "patient", classCode="PSN", determinerCode="INSTANCE")
    card = identifier(patient, C.ID_CARD)
    if card:
        el(person, "id", root=C.ID_CARD, extension=card)
    else:
        el(person, "id", nullFlavor="UNK")
    name = name_text(patient)
    if not name:
        raise MappingError("the patient has no name (patient/name is required)",
                           "Patient.name")
    el(person, "name", name)
    gender, gender_name = C.GENDER_TO_CDA.get(str(patient.get("gender")), ("0", "未知的性别"))
    el(person, "administrativeGenderCode", code=gender, codeSystem=C.GENDER_SYSTEM,
       codeSystemName="生理性别代码表(GB/T 2261.1)", displayName=gender_name)
    birth = cda_ts(patient.get("birthDate"))
    if birth:
        el(person, "birthTime", value=birth)
    else:
        el(person, "birthTime", nullFlavor="UNK")
    years = age_years(patient.get("birthDate"), at)
    if years is not None:
        el(person, "age", unit="岁", value=str(years))


def person_entity(parent: etree._Element, tag: str, practitioner: Resource,
                  role: str | None = None) -> etree._Element:
    """assignedAuthor / assignedEntity: the practitioner's id (root .1.4), role, name."""
    entity = el(parent, tag, classCode="ASSIGNED")
    el(entity, "id", root=C.PRACTITIONER_ID,
       extension=any_identifier(practitioner, C.PRACTITIONER_ID))
    if role:
        el(entity, "code", displayName=role)
    person = el(entity, "assignedPerson", classCode="PSN", determinerCode="INSTANCE")
    el(person, "name", name_text(practitioner) or "")
    return entity


def author(root: etree._Element, practitioner: Resource, time: str | None) -> None:
    node = el(root, "author", typeCode="AUT", contextControlCode="OP")
    el(node, "time", value=time) if time else el(node, "time", nullFlavor="UNK")
    person_entity(node, "assignedAuthor", practitioner)


def custodian(root: etree._Element, organization: Resource) -> None:
    node = el(root, "custodian", typeCode="CST")
    assigned = el(node, "assignedCustodian", classCode="ASSIGNED")
    org = el(assigned, "representedCustodianOrganization", classCode="ORG",
             determinerCode="INSTANCE")
    el(org, "id", root=C.ORGANIZATION_ID,
       extension=any_identifier(organization, C.ORGANIZATION_ID))
    el(org, "name", org_name(organization))


def org_name(organization: Resource | None) -> str:
    """An organisation's name, its Chinese alias first when it has one."""
    if not organization:
        return ""
    for alias in organization.get("alias") or []:
        if any("\u4e00" <= ch <= "\u9fff" for ch in str(alias)):
            return str(alias)
    return str(organization.get("name") or "")


def signer(root: etree._Element, tag: str, practitioner: Resource, role: str,
           time: str | None) -> None:
    """legalAuthenticator (审核医师) or authenticator (检查医师, 检查技师)."""
    node = el(root, tag)
    el(node, "time", value=time) if time else el(node, "time", nullFlavor="UNK")
    el(node, "signatureCode", code="S")
    person_entity(node, "assignedEntity", practitioner, role)


def related_document(root: etree._Element, version: DocumentVersion) -> None:
    """relatedDocument typeCode RPLC naming the version this one replaces."""
    if version.replaces is None:
        return
    old = version.replaces
    node = el(root, "relatedDocument", typeCode="RPLC")
    parent = el(node, "parentDocument")
    el(parent, "id", root=C.DOCUMENT_ID, extension=old.document_id)
    el(parent, "setId", root=C.DOCUMENT_ID, extension=old.set_id)
    el(parent, "versionNumber", value=str(old.version))


def encounter(root: etree._Element, time: str | None, organization: Resource,
              department: Resource | None) -> None:
    """componentOf/encompassingEncounter with the location chain 科室 (.1.26) -> 机构 (.1.5)."""
    comp = el(root, "componentOf")
    enc = el(comp, "encompassingEncounter")
    el(enc, "effectiveTime", value=time) if time else el(enc, "effectiveTime", nullFlavor="UNK")
    facility = el(el(enc, "location"), "healthCareFacility")
    provider = el(facility, "serviceProviderOrganization")
    holder = provider
    if department is not None:
        part = el(holder, "asOrganizationPartOf", classCode="PART")
        dept = el(part, "wholeOrganization", classCode="ORG", determinerCode="INSTANCE")
        el(dept, "id", root=C.DEPARTMENT_ID,
           extension=any_identifier(department, C.DEPARTMENT_ID))
        el(dept, "name", org_name(department))
        holder = dept
    part = el(holder, "asOrganizationPartOf", classCode="PART")
    whole = el(part, "wholeOrganization", classCode="ORG", determinerCode="INSTANCE")
    el(whole, "id", root=C.ORGANIZATION_ID,
       extension=any_identifier(organization, C.ORGANIZATION_ID))
    el(whole, "name", org_name(organization))


def section(body: etree._Element, code: tuple[str, str] | None, title: str,
            lines: list[str]) -> etree._Element:
    """A section with its LOINC code (or only a displayName, as the 检查报告 section), a
    title and the human-readable narrative CDA requires (one paragraph per line)."""
    sec = el(el(body, "component"), "section")
    if code is not None:
        loinc_code(sec, code[0], code[1])
    else:
        el(sec, "code", displayName=title)
    el(sec, "title", title)
    text = el(sec, "text")
    for line in lines or ["-"]:
        el(text, "paragraph", line)
    return sec


def entry_observation(section_el: etree._Element, code: str, display: str) -> etree._Element:
    obs = el(el(section_el, "entry"), "observation", classCode="OBS", moodCode="EVN")
    de_code(obs, code, display)
    return obs


def st_value(obs: etree._Element, text: str) -> etree._Element:
    node = el(obs, "value", text)
    node.set("{http://www.w3.org/2001/XMLSchema-instance}type", "ST")
    return node


def new_document() -> etree._Element:
    return etree.Element(V3 + "ClinicalDocument", nsmap={None: C.HL7_V3, "xsi": C.XSI})


def serialize(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8",
                                pretty_print=True))
