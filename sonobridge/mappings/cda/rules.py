"""Our own checks of the WS/T 500 header and section rules, beyond what the schema can say
(Schematron-like: each rule an id, a message and an XPath test, reported with the line).

The rule ids are stable (``WST500.6-H03``): tests break a document for each one, the
OperationOutcome of a refused upload names them, docs/exchange.md lists them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from lxml import etree

from sonobridge.mappings.cda import codes as C
from sonobridge.mappings.cda.problems import Problem
from sonobridge.mappings.cda.xml import XSI_TYPE, select, xpath_of

Node: TypeAlias = etree._Element
# A rule's test: the elements it finds wrong (the root when the thing is missing).
Test = Callable[[Node], list[Node]]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    message: str
    test: Test


def _x(node: Node, path: str) -> list[Node]:
    return select(node, path)


def _missing(path: str) -> Test:
    """Wrong when nothing matches ``path``."""
    return lambda root: [] if _x(root, path) else [root]


def _each_bad(path: str) -> Test:
    """Wrong for every element ``path`` matches."""
    return lambda root: _x(root, path)


def _entry(code: str) -> str:
    return f".//v3:observation[v3:code/@code='{code}']"


def _nonempty_st(code: str) -> Test:
    def test(root: Node) -> list[Node]:
        found = _x(root, _entry(code))
        if not found:
            return [root]
        return [o for o in found
                if not "".join(_x(o, "v3:value")[0].itertext() if _x(o, "v3:value") else "")
                .strip()]
    return test


def _version(root: Node) -> list[Node]:
    nodes = _x(root, "v3:versionNumber")
    if not nodes or not (nodes[0].get("value") or "").isdigit() or int(nodes[0].get("value")
                                                                         or 0) < 1:
        return nodes or [root]
    return []


def _replacement(root: Node) -> list[Node]:
    """Version N > 1 replaces version N-1 of the same set (relatedDocument RPLC)."""
    nodes = _x(root, "v3:versionNumber")
    value = nodes[0].get("value") if nodes else None
    if not value or not value.isdigit() or int(value) <= 1:
        return []
    set_ids = _x(root, "v3:setId")
    set_ext = set_ids[0].get("extension") if set_ids else None
    for parent in _x(root, "v3:relatedDocument[@typeCode='RPLC']/v3:parentDocument"):
        p_set = _x(parent, "v3:setId")
        p_ver = _x(parent, "v3:versionNumber")
        if p_set and p_ver and p_set[0].get("extension") == set_ext and \
                p_ver[0].get("value") == str(int(value) - 1):
            return []
    return _x(root, "v3:relatedDocument") or [root]


def _data_element_systems(root: Node) -> list[Node]:
    return [c for c in _x(root, ".//v3:entry//v3:code[starts-with(@code, 'DE')]")
            if c.get("codeSystem") != C.DATA_ELEMENTS]


def _quantities(root: Node) -> list[Node]:
    """定量结果: a number (REAL/PQ/INT) and its unit (DE04.30.016.00 or a PQ unit)."""
    bad = []
    for obs in _x(root, _entry(C.DE_QUANTITY)):
        values = _x(obs, "v3:value")
        kind = values[0].get(XSI_TYPE) if values else None
        number = values[0].get("value") if values else None
        try:
            finite = math.isfinite(float(number or ""))
        except ValueError:
            finite = False
        if not finite:  # xs:double admits NaN and INF; a measurement does not
            bad.append(obs)
            continue
        has_unit = (kind == "PQ" and values[0].get("unit")) or _x(obs, _entry(C.DE_UNIT))
        if kind not in ("REAL", "PQ", "INT") or not has_unit:
            bad.append(obs)
    return bad


def _diagnosis_codes(root: Node) -> list[Node]:
    return [v for v in _x(root, _entry(C.DE_DIAGNOSIS) + "/v3:value[not(@nullFlavor)]")
            if v.get("codeSystem") != C.ICD10_CN or not v.get("code")]


def _narrative(root: Node) -> list[Node]:
    return [s for s in _x(root, ".//v3:section")
            if not "".join(t for n in _x(s, "v3:text") for t in n.itertext()).strip()]


HEADER_COMMON = [
    ("H01", "realmCode must be CN", _missing("v3:realmCode[@code='CN']")),
    ("H02", "typeId must be 2.16.840.1.113883.1.3 / POCD_MT000040",
     _missing("v3:typeId[@root='2.16.840.1.113883.1.3' and @extension='POCD_MT000040']")),
    ("H06", "confidentialityCode must be N (2.16.840.1.113883.5.25)",
     _missing(f"v3:confidentialityCode[@code='N' and @codeSystem='{C.CONFIDENTIALITY}']")),
    ("H07", "languageCode must be zh-CN", _missing("v3:languageCode[@code='zh-CN']")),
    ("H08", "setId (with extension) and a versionNumber of 1 or more are required",
     lambda r: _missing("v3:setId[@extension]")(r) + _version(r)),
    ("H09", "a versionNumber above 1 needs relatedDocument typeCode=RPLC naming the same setId "
            "and the previous version", _replacement),
    ("H10", "patient/id must be the 身份证号 (root 2.16.156.10011.1.3 with an extension) or "
            "say it is unknown (nullFlavor)",
     _missing(f"v3:recordTarget/v3:patientRole/v3:patient/v3:id[(@root='{C.ID_CARD}' and "
              "@extension != '') or @nullFlavor]")),
    ("H11", "the patient's name is required",
     _missing("v3:recordTarget/v3:patientRole/v3:patient/v3:name[normalize-space(.) != '']")),
    ("H12", "administrativeGenderCode must be GB/T 2261.1 (2.16.156.10011.2.3.3.4: 0, 1, 2, 9)",
     _missing(f"v3:recordTarget/v3:patientRole/v3:patient/v3:administrativeGenderCode["
              f"@codeSystem='{C.GENDER_SYSTEM}' and (@code='0' or @code='1' or @code='2' or "
              "@code='9')]")),
    ("H14", "author needs a time and an assignedAuthor with an id and a person's name",
     _missing("v3:author[v3:time[@value]]/v3:assignedAuthor[v3:id[@root]]/v3:assignedPerson/"
              "v3:name[normalize-space(.) != '']")),
    ("H15", "custodian must be an organisation with an id under 2.16.156.10011.1.5 and a name",
     _missing(f"v3:custodian/v3:assignedCustodian/v3:representedCustodianOrganization["
              f"v3:id[@root='{C.ORGANIZATION_ID}' and @extension]]/v3:name")),
    ("H16", "legalAuthenticator (审核医师) needs a time, signatureCode S and an id under "
            "2.16.156.10011.1.4 with a name",
     _missing(f"v3:legalAuthenticator[v3:time and v3:signatureCode[@code='S']]/"
              f"v3:assignedEntity[v3:id[@root='{C.PRACTITIONER_ID}' and @extension]]/"
              "v3:assignedPerson/v3:name[normalize-space(.) != '']")),
    ("H17", "effectiveTime (文档机器生成时间) must be a timestamp",
     _missing("v3:effectiveTime[string-length(@value) >= 8]")),
    ("B01", "the body must be a structuredBody", _missing("v3:component/v3:structuredBody")),
    ("B05", "an entry's DE data element code must be in 2.16.156.10011.2.2.1",
     _data_element_systems),
    ("B08", "a LOINC section code must use 2.16.840.1.113883.6.1",
     _each_bad(".//v3:section/v3:code[contains(@code, '-') and not(starts-with(@code, 'DE'))"
               f" and @codeSystem != '{C.LOINC_OID}']")),
    ("B09", "every section needs its human-readable text", _narrative),
]

REPORT_RULES = [Rule(f"WST500.6-{rid}", msg, test) for rid, msg, test in [
    ("H03", "templateId must be 2.16.156.10011.2.1.1.26 (WS/T 500.6)",
     _missing(f"v3:templateId[@root='{C.REPORT_TEMPLATE}']")),
    ("H04", "code must be C0006 in 2.16.156.10011.2.4",
     _missing(f"v3:code[@code='{C.REPORT_CODE}' and @codeSystem='{C.DOC_TYPE_SYSTEM}']")),
    ("H05", "title must be 检查报告", _missing(f"v3:title[normalize-space(.)='{C.REPORT_TITLE}']")),
    ("H13", "patientRole needs the 检查报告单号 (2.16.156.10011.1.32)",
     _missing(f"v3:recordTarget/v3:patientRole/v3:id[@root='{C.REPORT_NO}' and @extension]")),
    *HEADER_COMMON,
    ("B02", "the 体格检查 section (29545-1) is required",
     _missing(f".//v3:section[v3:code/@code='{C.SEC_EXAM}']")),
    ("B03", "the 检查报告 section needs 客观所见 (DE04.50.131.00) with text",
     _nonempty_st(C.DE_FINDINGS)),
    ("B04", "the 检查报告 section needs 主观提示 (DE04.50.132.00) with text",
     _nonempty_st(C.DE_IMPRESSION)),
    ("B06", "a 诊断代码 (DE05.01.024.00) must be ICD-10 (2.16.156.10011.2.3.3.11.3)",
     _diagnosis_codes),
    ("B07", "a 检查定量结果 (DE04.30.015.00) needs a finite number and its unit "
            "(DE04.30.016.00)",
     _quantities),
]]

CONSULTATION_RULES = [Rule(f"WST500.45-{rid}", msg, test) for rid, msg, test in [
    ("H03", "templateId must be 2.16.156.10011.2.1.1.65 (WS/T 500.45)",
     _missing(f"v3:templateId[@root='{C.CONSULT_TEMPLATE}']")),
    ("H04", "code must be C0045 in 2.16.156.10011.2.4",
     _missing(f"v3:code[@code='{C.CONSULT_CODE}' and @codeSystem='{C.DOC_TYPE_SYSTEM}']")),
    ("H05", "title must be 会诊记录",
     _missing(f"v3:title[normalize-space(.)='{C.CONSULT_TITLE}']")),
    *HEADER_COMMON,
    ("B10", "会诊意见 (DE06.00.018.00) with text is required", _nonempty_st(C.DE_OPINION)),
    ("B11", "会诊目的 (DE06.00.214.00) with text is required", _nonempty_st(C.DE_PURPOSE)),
]]


def check(tree: etree._ElementTree, rules: list[Rule]) -> list[Problem]:
    """Every broken rule, once per offending element, with its line and path."""
    root = tree.getroot()
    problems = []
    for rule in rules:
        for node in rule.test(root):
            problems.append(Problem(rule.id, rule.message, node.sourceline, xpath_of(node)))
    return problems
