"""Narrative (``text.div``): XHTML that a browser will render, checked on every write.

Untrusted XML is parsed with entities, DTDs and network access off, so that a narrative (or
an XML resource: ``fhir/xml.py`` uses the same parser) cannot expand or fetch anything.
"""

from __future__ import annotations

from lxml import etree

from sonobridge.core.errors import Issue

XHTML_NS = "http://www.w3.org/1999/xhtml"


def safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True,
                           remove_pis=True)


def check_narrative(div: str, where: str, issues: list[Issue]) -> None:
    """Well-formed XHTML in a ``div``, with no active content (R4 narrative rules)."""
    if "<!DOCTYPE" in div.upper() or "<!ENTITY" in div.upper():
        issues.append(Issue("security", f"{where}: DOCTYPE or entities in narrative",
                            expression=[where]))
        return
    try:
        root = etree.fromstring(div.encode("utf-8"), safe_parser())
    except etree.XMLSyntaxError as exc:
        issues.append(Issue("value", f"{where}: narrative is not well-formed XHTML: {exc}",
                            expression=[where]))
        return
    if root.tag != f"{{{XHTML_NS}}}div":
        issues.append(Issue("value", f"{where}: narrative must be an XHTML <div> in the "
                                     f"{XHTML_NS} namespace", expression=[where]))
        return
    for node in root.iter():
        tag = node.tag if isinstance(node.tag, str) else ""
        local = tag.rsplit("}", 1)[-1].lower()
        if local in ("script", "object", "applet", "iframe", "embed", "form", "input",
                     "style", "base", "link", "meta") or any(
                a.lower().startswith("on") for a in node.attrib):
            issues.append(Issue("value", f"{where}: active content (<{local}> or event "
                                         "handlers) is not allowed in narrative",
                                expression=[where]))
            return
