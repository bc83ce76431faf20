"""A WS/T 500 document checked in three steps: safe XML, the CDA R2 schema with the WS/T 500
overlay, then our header and section rules (only on a schema-valid document, whose shape
the rules can rely on)."""

from __future__ import annotations

from lxml import etree

from sonobridge.mappings.cda import codes as C
from sonobridge.mappings.cda.problems import CdaError, Problem
from sonobridge.mappings.cda.rules import CONSULTATION_RULES, REPORT_RULES, check
from sonobridge.mappings.cda.schema import schema_problems
from sonobridge.mappings.cda.xml import NS, V3, parse

RULES_BY_TEMPLATE = {C.REPORT_TEMPLATE: REPORT_RULES, C.CONSULT_TEMPLATE: CONSULTATION_RULES}


def problems(data: bytes | etree._ElementTree) -> list[Problem]:
    """Everything wrong with the document (empty: valid)."""
    try:
        tree = parse(data) if isinstance(data, bytes) else data
    except CdaError as exc:
        return exc.problems
    root = tree.getroot()
    if root.tag != V3 + "ClinicalDocument":
        return [Problem("CDA-XML", f"the root element is {root.tag}, not ClinicalDocument in "
                                   f"{C.HL7_V3}", root.sourceline)]
    found = schema_problems(tree)
    if found:
        return found
    templates = {str(t.get("root")) for t in root.xpath("v3:templateId", namespaces=NS)}
    rules = next((RULES_BY_TEMPLATE[t] for t in RULES_BY_TEMPLATE if t in templates),
                 REPORT_RULES)
    return check(tree, rules)


def validated(data: bytes) -> etree._ElementTree:
    """The parsed document, or ``CdaError`` with every problem."""
    tree = parse(data)
    found = problems(tree)
    if found:
        raise CdaError(found)
    return tree
