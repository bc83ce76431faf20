"""The reverse: a WS/T 500.6 检查报告 read back into FHIR (a referring hospital's earlier
reports, sent to the consultation).

``read_report`` validates (XML safety, schema + overlay, our rules) and returns what the
document says: the patient's identifiers in matching order (身份证号, 健康卡号, 门(急)诊号,
住院号, each as ``urn:oid:<root>``), the document's identity (id, setId, version, what it
replaces) and a DiagnosticReport whose findings (LOINC 59776-5) and measurements are
contained Observations, so the report travels as one resource with its subject set by
whoever matched the patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

from lxml import etree

from sonobridge.mappings.cda import codes as C
from sonobridge.mappings.cda.documentref import DocumentInfo
from sonobridge.mappings.cda.header import fhir_dt
from sonobridge.mappings.cda.problems import CdaError, Problem
from sonobridge.mappings.cda.validate import validated
from sonobridge.mappings.cda.xml import select

Node: TypeAlias = etree._Element


@dataclass
class ParsedReport:
    identifiers: list[dict[str, str]]  # the patient's, in matching order
    patient_name: str | None
    gender: str | None
    birth_date: str | None
    info: DocumentInfo
    replaces: tuple[str, int] | None  # (setId, version) of the replaced document
    report: dict[str, Any]  # DiagnosticReport without subject
    warnings: list[str] = field(default_factory=list)


def _x(node: Node, path: str) -> list[Node]:
    return select(node, path)


def _first(node: Node, path: str) -> Node | None:
    found = _x(node, path)
    return found[0] if found else None


def _attr(node: Node, path: str, name: str) -> str | None:
    found = _first(node, path)
    value = found.get(name) if found is not None else None
    return str(value) if value else None


def _text(node: Node | None) -> str | None:
    if node is None:
        return None
    text = "".join(node.itertext()).strip()
    return text or None


def _entry_value(root: Node, code: str) -> Node | None:
    return _first(root, f".//v3:observation[v3:code/@code='{code}']/v3:value")


def _concept(node: Node | None) -> dict[str, Any] | None:
    """A CD/CE back to a CodeableConcept (OIDs back to FHIR systems)."""
    if node is None:
        return None
    concept: dict[str, Any] = {}
    if node.get("code") and node.get("codeSystem"):
        coding = {"system": C.system_of(node.get("codeSystem")), "code": node.get("code")}
        if node.get("displayName"):
            coding["display"] = node.get("displayName")
        concept["coding"] = [coding]
    original = _text(_first(node, "v3:originalText"))
    if original:
        concept["text"] = original
    return concept or None


def _instant(ts: str | None) -> str | None:
    """A FHIR instant from a CDA TS with seconds and a zone (else None: not an instant)."""
    value = fhir_dt(ts)
    return value if value and len(value) >= 25 else None


def _measurement(organizer: Node, index: int, when: str | None) -> dict[str, Any] | None:
    item = _first(organizer, f"v3:component/v3:observation[v3:code/@code='{C.DE_ITEM}']")
    if item is None:
        return None
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": f"m{index}", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "observation-category", "code": "imaging"}]}],
        "code": _concept(_first(item, "v3:value")) or {"text": "检查项目"},
    }
    effective = fhir_dt(_attr(item, "v3:effectiveTime", "value")) or when
    if effective:
        obs["effectiveDateTime"] = effective
    site = _concept(_first(item, "v3:targetSiteCode"))
    if site:
        obs["bodySite"] = site
    quantity = _first(organizer, f"v3:component/v3:observation[v3:code/@code='{C.DE_QUANTITY}']")
    result = _first(organizer, f"v3:component/v3:observation[v3:code/@code='{C.DE_RESULT}']")
    if quantity is not None:
        value_el = _first(quantity, "v3:value")
        raw = value_el.get("value") if value_el is not None else None
        try:
            number: float | int = float(raw or "")
        except ValueError:
            return None
        if isinstance(number, float) and number.is_integer() and "." not in (raw or ""):
            number = int(number)
        unit = (value_el.get("unit") if value_el is not None else None) or _text(
            _entry_value(quantity, C.DE_UNIT)) or "1"
        obs["valueQuantity"] = {"value": number, "unit": unit,
                                "system": "http://unitsofmeasure.org", "code": unit}
    elif result is not None:
        value_el = _first(result, "v3:value")
        if value_el is not None and value_el.get("code"):
            obs["valueCodeableConcept"] = _concept(value_el)
        elif _text(value_el):
            obs["valueString"] = _text(value_el)
    return obs


def read_report(data: bytes) -> ParsedReport:
    """A WS/T 500.6 document read into FHIR; ``CdaError`` when it is not a valid one."""
    tree = validated(data)
    root = tree.getroot()
    if _first(root, f"v3:templateId[@root='{C.REPORT_TEMPLATE}']") is None:
        raise CdaError([Problem("WST500.6-H03", "not a WS/T 500.6 检查报告 (templateId "
                                f"{C.REPORT_TEMPLATE})", root.sourceline)])
    role = _first(root, "v3:recordTarget/v3:patientRole")
    assert role is not None  # the schema requires it
    person = _first(role, "v3:patient")
    ids: dict[str, str] = {}
    if person is not None and _attr(person, "v3:id", "root") == C.ID_CARD:
        ids[C.ID_CARD] = str(_attr(person, "v3:id", "extension"))
    for node in _x(role, "v3:id[@root and @extension]"):
        ids.setdefault(str(node.get("root")), str(node.get("extension")))
    identifiers = [{"system": f"urn:oid:{oid}", "value": ids[oid]}
                   for oid in C.MATCHING_IDS if ids.get(oid)]

    set_id = _attr(root, "v3:setId", "extension") or _attr(root, "v3:id", "extension") or ""
    version = int(_attr(root, "v3:versionNumber", "value") or "1")
    document_id = _attr(root, "v3:id", "extension") or f"{set_id}.{version}"
    replaces = None
    parent = _first(root, "v3:relatedDocument[@typeCode='RPLC']/v3:parentDocument")
    if parent is not None:
        replaces = (_attr(parent, "v3:setId", "extension") or set_id,
                    int(_attr(parent, "v3:versionNumber", "value") or version - 1))

    author_name = _text(_first(root, "v3:author/v3:assignedAuthor/v3:assignedPerson/v3:name"))
    signer_name = _text(_first(root, "v3:legalAuthenticator/v3:assignedEntity/"
                                     "v3:assignedPerson/v3:name"))
    custodian = _text(_first(root, "v3:custodian//v3:representedCustodianOrganization/v3:name"))
    issued = _instant(_attr(root, "v3:author/v3:time", "value"))
    effective = fhir_dt(_attr(root, "v3:componentOf/v3:encompassingEncounter/v3:effectiveTime",
                              "value"))

    findings = _text(_entry_value(root, C.DE_FINDINGS))
    conclusion = _text(_entry_value(root, C.DE_IMPRESSION)) or ""
    contained: list[dict[str, Any]] = []
    if findings:
        contained.append({
            "resourceType": "Observation", "id": "findings", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": C.FINDINGS_LOINC,
                                 "display": "Procedure findings Narrative"}],
                     "text": "检查所见"},
            "valueString": findings})
    exam = _first(root, f".//v3:section[v3:code/@code='{C.SEC_EXAM}']")
    if exam is not None:
        for index, organizer in enumerate(_x(exam, "v3:entry/v3:organizer"), start=1):
            obs = _measurement(organizer, index, effective)
            if obs is not None:
                contained.append(obs)

    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": f"urn:oid:{C.DOCUMENT_ID}", "value": document_id}],
        "status": "amended" if version > 1 else "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                  "code": "RUS", "display": "Radiology Ultrasound"}]}],
        "code": (_concept(_first(root, f".//v3:section[v3:code/@code='{C.SEC_EXAM}']/v3:entry/"
                                       f"v3:observation[v3:code/@code='{C.DE_ITEM}']/v3:value"))
                 or {"text": _text(_entry_value(root, C.DE_METHOD)) or "超声检查"}),
        "conclusion": conclusion,
    }
    report_no = _attr(role, f"v3:id[@root='{C.REPORT_NO}']", "extension")
    if report_no:
        report["identifier"].append({"system": f"urn:oid:{C.REPORT_NO}", "value": report_no})
    if effective:
        report["effectiveDateTime"] = effective
    if issued:
        report["issued"] = issued
    performers = [{"display": n} for n in (signer_name, custodian) if n]
    if performers:
        report["performer"] = performers
    if author_name:
        report["resultsInterpreter"] = [{"display": author_name}]
    codes = [c for c in (_concept(v) for v in _x(
        root, f".//v3:observation[v3:code/@code='{C.DE_DIAGNOSIS}']/v3:value[@code]")) if c]
    if codes:
        report["conclusionCode"] = codes
    if contained:
        report["contained"] = contained
        report["result"] = [{"reference": f"#{o['id']}"} for o in contained]

    gender_code = _attr(role, "v3:patient/v3:administrativeGenderCode", "code")
    info = DocumentInfo(set_id=set_id, version=version, document_id=document_id,
                        kind="report", date=_instant(_attr(root, "v3:effectiveTime", "value")),
                        authors=[{"display": n} for n in (author_name,) if n],
                        custodian={"display": custodian} if custodian else None,
                        doc_status="amended" if version > 1 else "final")
    return ParsedReport(identifiers=identifiers,
                        patient_name=_text(_first(role, "v3:patient/v3:name")),
                        gender=C.GENDER_FROM_CDA.get(gender_code or ""),
                        birth_date=fhir_dt(_attr(role, "v3:patient/v3:birthTime", "value")),
                        info=info, replaces=replaces, report=report)
