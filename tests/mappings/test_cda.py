"""WS/T 500 CDA documents: made from the IG's example report and consultation, valid against
the CDA R2 schema with the WS/T 500 overlay, each of our rules failing on a document broken
for it, read back into FHIR, amendments as RPLC versions, unsafe XML refused."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from sonobridge.conformance.ig.content import examples
from sonobridge.mappings.cda import CdaError, DocumentVersion, MappingError
from sonobridge.mappings.cda.consultation import ConsultationSources, consultation_document
from sonobridge.mappings.cda.parse import read_report
from sonobridge.mappings.cda.report import ReportSources, report_document
from sonobridge.mappings.cda.rules import CONSULTATION_RULES, REPORT_RULES
from sonobridge.mappings.cda.schema import SCHEMA_DIR
from sonobridge.mappings.cda.validate import problems
from sonobridge.mappings.cda.xml import NS, V3

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def _examples() -> dict[str, dict[str, Any]]:
    return {r["id"]: copy.deepcopy(r) for r in examples()}


def _sources(**changes: Any) -> ReportSources:
    ex = _examples()
    patient = ex["example-patient"]
    patient["identifier"].append({"system": "urn:oid:2.16.156.10011.1.11", "value": "MZ-77"})
    findings = {"resourceType": "Observation", "id": "findings", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "59776-5"}]},
                "valueString": "肝右叶见一低回声结节，大小约23mm，边界清。"}  # noqa: RUF001
    report = ex["example-ultrasound-report"]
    report["conclusionCode"] = [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                             "code": "K76.8", "display": "肝的其他特指疾病"}]}]
    second = copy.deepcopy(ex["example-liver-lesion-size"])
    second.update(id="cbd", code={"coding": [{"system": "http://snomed.info/sct",
                                              "code": "79741001", "display": "Bile duct"}],
                                  "text": "胆总管内径"},
                  valueQuantity={"value": 5.5, "unit": "mm",
                                 "system": "http://unitsofmeasure.org", "code": "mm"})
    second.pop("bodySite")
    values: dict[str, Any] = {
        "report": report, "patient": patient, "organization": ex["example-hospital"],
        "author": ex["example-gp"], "verifier": ex["example-expert"],
        "request": ex["example-consultation-request"],
        "department": {"resourceType": "Organization", "id": "us-dept", "name": "超声科"},
        "observations": [findings, ex["example-liver-lesion-size"], second]}
    values.update(changes)
    return ReportSources(**values)


def _report(version: DocumentVersion | None = None, **changes: Any) -> bytes:
    return report_document(_sources(**changes), version or DocumentVersion("rpt-1"), NOW)


def _one(node: etree._Element, path: str) -> etree._Element:
    return node.xpath(path, namespaces=NS)[0]


def _rules(data: bytes) -> set[str]:
    return {p.rule for p in problems(data)}


def test_report_is_schema_and_rule_valid() -> None:
    data = _report()
    assert problems(data) == []
    root = etree.fromstring(data)
    assert root.find("v3:templateId", NS).get("root") == "2.16.156.10011.2.1.1.26"
    code = root.find("v3:code", NS)
    assert (code.get("code"), code.get("codeSystem")) == ("C0006", "2.16.156.10011.2.4")
    assert root.findtext("v3:title", namespaces=NS) == "检查报告"
    patient = root.find("v3:recordTarget/v3:patientRole/v3:patient", NS)
    assert patient.find("v3:id", NS).attrib == {"root": "2.16.156.10011.1.3",
                                                "extension": "example-0001"}
    assert patient.find("v3:administrativeGenderCode", NS).get("code") == "2"
    assert patient.find("v3:age", NS).attrib == {"unit": "岁", "value": "36"}
    role_ids = {i.get("root"): i.get("extension")
                for i in root.findall("v3:recordTarget/v3:patientRole/v3:id", NS)}
    assert role_ids == {"2.16.156.10011.1.11": "MZ-77",
                        "2.16.156.10011.1.32": "example-ultrasound-report",
                        "2.16.156.10011.1.24": "HZ-2026-0001"}
    # author = 报告医师 (the GP here), legalAuthenticator = 审核医师, 检查医师 as authenticator
    assert root.findtext("v3:author/v3:assignedAuthor/v3:assignedPerson/v3:name",
                         namespaces=NS) == "李医生"
    assert root.findtext("v3:legalAuthenticator/v3:assignedEntity/v3:assignedPerson/v3:name",
                         namespaces=NS) == "王主任"
    assert root.find("v3:author/v3:time", NS).get("value") == "20261201100500+0800"
    dept = _one(root, ".//v3:wholeOrganization[v3:id/@root='2.16.156.10011.1.26']")
    assert dept.findtext("v3:name", namespaces=NS) == "超声科"
    diag = _one(root, ".//v3:observation[v3:code/@code='DE05.01.024.00']/v3:value")
    assert (diag.get("code"), diag.get("codeSystem")) == ("K76.8", "2.16.156.10011.2.3.3.11.3")
    assert root.find(".//v3:relatedDocument", NS) is None
    assert root.find("v3:versionNumber", NS).get("value") == "1"


def test_consultation_record_is_valid() -> None:
    ex = _examples()
    task = dict(ex["example-consultation-task"], status="completed")
    sources = ConsultationSources(task=task, request=ex["example-consultation-request"],
                                  patient=ex["example-patient"],
                                  consultant=ex["example-expert"], requester=ex["example-gp"],
                                  consulting_org=ex["example-hospital"],
                                  requesting_org=ex["example-clinic"],
                                  report=ex["example-ultrasound-report"])
    data = consultation_document(sources, DocumentVersion("hz-1"), NOW)
    assert problems(data) == []
    root = etree.fromstring(data)
    assert root.find("v3:templateId", NS).get("root") == "2.16.156.10011.2.1.1.65"
    assert root.find("v3:code", NS).get("code") == "C0045"
    opinion = _one(root, ".//v3:observation[v3:code/@code='DE06.00.018.00']/v3:value").text
    assert opinion.startswith("肝右叶实性结节")
    # The 500.45 rules: the opinion is required.
    broken = data.replace(b"DE06.00.018.00", b"DE06.00.999.00")
    assert "WST500.45-B10" in _rules(broken)
    assert _rules(data.replace(b"DE06.00.214.00", b"DE06.00.998.00")) == {"WST500.45-B11"}
    assert _rules(data.replace(b"C0045", b"C0006")) == {"WST500.45-H04"}
    with pytest.raises(MappingError) as err:
        consultation_document(ConsultationSources(**{**sources.__dict__, "task": ex[
            "example-consultation-task"]}), DocumentVersion("hz-1"), NOW)
    assert err.value.expression == "Task.status"


def test_overlay_is_what_admits_the_china_extensions() -> None:
    data = _report()
    normative = etree.XMLSchema(etree.parse(str(SCHEMA_DIR / "infrastructure" / "cda" /
                                                 "CDA.xsd")))
    assert not normative.validate(etree.fromstring(data))
    assert "age" in str(normative.error_log)
    with_type = data.replace(b"<patient classCode", b"<patientType><patienttypeCode code=\"1\" "
                             b"codeSystem=\"2.16.156.10011.2.3.1.271\"/></patientType>"
                             b"<patient classCode")
    assert problems(with_type) == []
    misplaced = data.replace(b"<age unit", b"<patientType/><age unit")
    found = problems(misplaced)
    assert [p.rule for p in found] == ["CDA-XSD"] and found[0].line is not None
    assert "patientType" in found[0].message


Mutation = Callable[[etree._Element], None]


def _drop(path: str) -> Mutation:
    def run(root: etree._Element) -> None:
        for node in root.xpath(path, namespaces=NS):
            node.getparent().remove(node)
    return run


def _set(path: str, name: str, value: str) -> Mutation:
    def run(root: etree._Element) -> None:
        for node in root.xpath(path, namespaces=NS):
            node.set(name, value)
    return run


def _text(path: str, value: str) -> Mutation:
    def run(root: etree._Element) -> None:
        for node in root.xpath(path, namespaces=NS):
            for child in list(node):
                node.remove(child)
            node.text = value
    return run


def _replace_body(root: etree._Element) -> None:
    """A nonXMLBody instead of the structuredBody (valid CDA R2, not WS/T 500.6)."""
    component = root.find("v3:component", NS)
    for child in list(component):
        component.remove(child)
    body = etree.SubElement(component, V3 + "nonXMLBody")
    etree.SubElement(body, V3 + "text").text = "see attachment"


PATIENT = "v3:recordTarget/v3:patientRole/v3:patient"
RULE_BREAKS: list[tuple[str, Mutation]] = [
    ("WST500.6-H01", _set("v3:realmCode", "code", "US")),
    ("WST500.6-H02", _set("v3:typeId", "extension", "POCD_HD000040")),
    ("WST500.6-H03", _set("v3:templateId", "root", "2.16.156.10011.2.1.1.27")),
    ("WST500.6-H04", _set("v3:code", "code", "C0007")),
    ("WST500.6-H05", _text("v3:title", "超声报告")),
    ("WST500.6-H06", _set("v3:confidentialityCode", "code", "R")),
    ("WST500.6-H07", _set("v3:languageCode", "code", "en-US")),
    ("WST500.6-H08", _set("v3:versionNumber", "value", "0")),
    ("WST500.6-H09", _set("v3:versionNumber", "value", "2")),
    ("WST500.6-H10", _set(f"{PATIENT}/v3:id", "root", "2.16.156.10011.1.99")),
    ("WST500.6-H11", _text(f"{PATIENT}/v3:name", " ")),
    ("WST500.6-H12", _set(f"{PATIENT}/v3:administrativeGenderCode", "code", "M")),
    ("WST500.6-H13", _drop("v3:recordTarget/v3:patientRole/v3:id[@root="
                           "'2.16.156.10011.1.32']")),
    ("WST500.6-H14", _drop("v3:author/v3:assignedAuthor/v3:assignedPerson")),
    ("WST500.6-H15", _set("v3:custodian//v3:id", "root", "2.16.156.10011.1.1")),
    ("WST500.6-H16", _set("v3:legalAuthenticator/v3:signatureCode", "code", "X")),
    ("WST500.6-H17", _set("v3:effectiveTime", "value", "2026")),
    ("WST500.6-B01", _replace_body),
    ("WST500.6-B02", _set(".//v3:section/v3:code[@code='29545-1']", "code", "29545-2")),
    ("WST500.6-B03", _text(".//v3:observation[v3:code/@code='DE04.50.131.00']/v3:value", "")),
    ("WST500.6-B04", _set(".//v3:code[@code='DE04.50.132.00']", "code", "DE04.50.131.00")),
    ("WST500.6-B05", _set(".//v3:code[@code='DE04.30.018.00']", "codeSystem", "2.16.156.1")),
    ("WST500.6-B06", _set(".//v3:observation[v3:code/@code='DE05.01.024.00']/v3:value",
                          "codeSystem", "2.16.840.1.113883.6.90")),
    ("WST500.6-B07", _drop(".//v3:observation[v3:code/@code='DE04.30.016.00']/..")),
    ("WST500.6-B08", _set(".//v3:section/v3:code[@code='29548-5']", "codeSystem", "2.16.1")),
    ("WST500.6-B09", _text(".//v3:section[v3:code/@code='11450-4']/v3:text", "")),
]


@pytest.mark.parametrize(("rule", "mutation"), RULE_BREAKS, ids=[r for r, _ in RULE_BREAKS])
def test_each_rule_fails_on_a_document_broken_for_it(rule: str, mutation: Mutation) -> None:
    root = etree.fromstring(_report())
    mutation(root)
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    found = problems(data)
    assert rule in {p.rule for p in found}, found
    assert all(p.rule.startswith("WST500.6-") for p in found), found
    hit = next(p for p in found if p.rule == rule)
    assert hit.line is not None and hit.path.startswith("/v3:ClinicalDocument")


def test_every_rule_has_a_breaking_test_and_is_documented() -> None:
    assert {r for r, _ in RULE_BREAKS} == {rule.id for rule in REPORT_RULES}
    docs = (Path(__file__).parents[2] / "docs" / "exchange.md").read_text()
    for rule in REPORT_RULES:
        assert f"`{rule.id}`" in docs, rule.id
    for rule in CONSULTATION_RULES:
        assert rule.id.split("-")[1] in docs


def test_a_measurement_must_be_a_finite_number() -> None:
    for odd in (b"NaN", b"INF", b"-INF"):
        data = _report().replace(b'<value value="23" xsi:type="REAL"/>',
                                 b'<value value="' + odd + b'" xsi:type="REAL"/>')
        assert odd in data
        assert _rules(data) == {"WST500.6-B07"}


def test_schema_failure_names_the_line() -> None:
    data = _report().replace(b"<title>\xe6\xa3\x80", b"<titel/><title>\xe6\xa3\x80")
    found = problems(data)
    assert found[0].rule == "CDA-XSD" and "titel" in found[0].message
    line = next(i for i, text in enumerate(data.splitlines(), 1) if b"<titel/>" in text)
    assert found[0].line == line
    assert found[0].path == "/v3:ClinicalDocument/v3:titel[1]"
    with pytest.raises(CdaError) as err:
        read_report(data)
    assert "CDA-XSD" in str(err.value)


@pytest.mark.parametrize("payload", [
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
    b'<ClinicalDocument xmlns="urn:hl7-org:v3">&b;</ClinicalDocument>',
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<ClinicalDocument xmlns="urn:hl7-org:v3">&x;</ClinicalDocument>',
    b'<?xml version="1.0"?><!DOCTYPE d SYSTEM "http://127.0.0.1:9/x.dtd">'
    b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>',
])
def test_entities_and_doctypes_are_refused(payload: bytes) -> None:
    found = problems(payload)
    assert [p.rule for p in found] == ["CDA-XML"]
    assert "DOCTYPE" in found[0].message


def test_not_xml_and_not_cda() -> None:
    found = problems(b"<ClinicalDocument xmlns='urn:hl7-org:v3'>\n<id>")
    assert found[0].rule == "CDA-XML" and found[0].line == 2
    assert problems(b"<html/>")[0].message.startswith("the root element is html")


def test_round_trip_keeps_findings_impression_codes_and_measurements() -> None:
    sources = _sources()
    parsed = read_report(report_document(sources, DocumentVersion("rpt-1"), NOW))
    report = parsed.report
    assert parsed.identifiers[0] == {"system": "urn:oid:2.16.156.10011.1.3",
                                     "value": "example-0001"}
    assert {"system": "urn:oid:2.16.156.10011.1.11", "value": "MZ-77"} in parsed.identifiers
    assert (parsed.patient_name, parsed.gender, parsed.birth_date) == ("张三", "female",
                                                                       "1990-05-01")
    assert report["status"] == "final"
    assert report["conclusion"] == sources.report["conclusion"]
    assert report["conclusionCode"][0]["coding"] == [
        {"system": "http://hl7.org/fhir/sid/icd-10", "code": "K76.8",
         "display": "肝的其他特指疾病"}]
    assert report["code"]["coding"][0] == {"system": "http://loinc.org", "code": "24558-9",
                                           "display": "US Abdomen"}
    assert report["effectiveDateTime"] == "2026-12-01T09:10:00+08:00"
    assert report["issued"] == "2026-12-01T10:05:00+08:00"
    contained = {o["id"]: o for o in report["contained"]}
    assert contained["findings"]["valueString"] == sources.observations[0]["valueString"]
    measured = [o for o in report["contained"] if "valueQuantity" in o]
    original = sources.observations[1:]
    assert [(m["code"]["coding"], m["valueQuantity"]["value"], m["valueQuantity"]["code"])
            for m in measured] == [(o["code"]["coding"], o["valueQuantity"]["value"], "mm")
                                   for o in original]
    assert measured[0]["bodySite"] == original[0]["bodySite"]
    assert measured[0]["code"]["text"] == original[0]["code"]["text"]
    assert isinstance(measured[1]["valueQuantity"]["value"], float)
    assert report["result"] == [{"reference": f"#{o['id']}"} for o in report["contained"]]


def test_amendment_is_a_new_version_replacing_the_last() -> None:
    first = DocumentVersion("rpt-1")
    amended = _sources()
    amended.report["status"] = "amended"
    amended.report["conclusion"] = "肝右叶血管瘤可能。"
    data = report_document(amended, DocumentVersion("rpt-1", 2, first), NOW)
    assert problems(data) == []
    root = etree.fromstring(data)
    assert root.find("v3:setId", NS).get("extension") == "rpt-1"
    assert root.find("v3:id", NS).get("extension") == "rpt-1.2"
    assert root.find("v3:versionNumber", NS).get("value") == "2"
    parent = root.find("v3:relatedDocument[@typeCode='RPLC']/v3:parentDocument", NS)
    assert parent.find("v3:id", NS).get("extension") == "rpt-1.1"
    assert parent.find("v3:setId", NS).get("extension") == "rpt-1"
    assert parent.find("v3:versionNumber", NS).get("value") == "1"
    parsed = read_report(data)
    assert parsed.replaces == ("rpt-1", 1)
    assert (parsed.info.version, parsed.info.doc_status) == (2, "amended")
    assert parsed.report["status"] == "amended"
    # The parent's set must be the same.
    other = data.replace(b'<setId root="2.16.156.10011.1.1" extension="rpt-1"/>\n      '
                         b'<versionNumber value="1"/>',
                         b'<setId root="2.16.156.10011.1.1" extension="rpt-9"/>\n      '
                         b'<versionNumber value="1"/>')
    assert other != data and "WST500.6-H09" in _rules(other)


def test_what_a_document_cannot_be_made_from() -> None:
    ex = _examples()
    with pytest.raises(MappingError) as err:
        _report(report={**ex["example-ultrasound-report"], "status": "preliminary"})
    assert err.value.expression == "DiagnosticReport.status"
    with pytest.raises(MappingError) as err:
        _report(organization=None)
    assert err.value.expression == "DiagnosticReport.performer"
    with pytest.raises(MappingError) as err:
        _report(author=None, verifier=None)
    assert err.value.expression == "DiagnosticReport.performer"
    with pytest.raises(MappingError) as err:
        _report(patient={**ex["example-patient"], "name": []})
    assert err.value.expression == "Patient.name"


def test_patient_without_id_card_says_unknown_and_is_matched_by_other_ids() -> None:
    ex = _examples()
    patient = ex["example-patient"]
    patient["identifier"] = [{"system": "urn:oid:2.16.156.10011.1.19", "value": "HC-5"}]
    data = _report(patient=patient)
    assert problems(data) == []
    root = etree.fromstring(data)
    assert root.find(f"{PATIENT}/v3:id", NS).get("nullFlavor") == "UNK"
    assert read_report(data).identifiers == [{"system": "urn:oid:2.16.156.10011.1.19",
                                              "value": "HC-5"}]


def test_measurements_without_narrative_become_the_findings() -> None:
    sources = _sources()
    sources.observations = sources.observations[1:]
    data = report_document(sources, DocumentVersion("x"), NOW)
    text = _one(etree.fromstring(data),
                ".//v3:observation[v3:code/@code='DE04.50.131.00']/v3:value").text
    assert "23 mm" in text and "5.5 mm" in text


def test_schema_files_and_licence_are_packaged() -> None:
    assert (SCHEMA_DIR / "LICENSE").read_text().count("Health Level Seven") >= 2
    assert (SCHEMA_DIR / "wst500-overlay.xsd").exists()
    assert Path(SCHEMA_DIR / "infrastructure" / "cda" / "POCD_MT000040.xsd").exists()
    assert V3 == "{urn:hl7-org:v3}"
