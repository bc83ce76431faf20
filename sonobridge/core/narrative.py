"""Narrative (``text.div``): XHTML that a browser will render, checked on every write.

FHIR R4 narrative rules (txt-1, txt-2): only the basic formatting elements and attributes of
HTML 4.0 chapters 7-11 and 15, ``<a>`` (``name`` or ``href``), ``<img>`` and inline ``style``;
no scripts, forms, frames, objects, event handlers, or stylesheets; and some text. Beyond the
element list, a URL is only inert when it cannot run: ``javascript:``, ``vbscript:`` and
``data:`` URLs (but a PNG, JPEG, GIF or WebP image's) are refused wherever an attribute can
hold a URL, and ``url(…)`` or
``expression(…)`` inside a style.

Untrusted XML is parsed with entities, DTDs and network access off, so that a narrative (or
an XML resource: ``fhir/xml.py`` uses the same parser) cannot expand or fetch anything.
"""

from __future__ import annotations

import re

from lxml import etree

from sonobridge.core.errors import Issue

XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"

# HTML 4.0 ch. 7-11 and 15 (text, lists, tables, links, images, font styles, rules)
ELEMENTS = frozenset({
    "a", "abbr", "acronym", "address", "b", "big", "blockquote", "br", "caption", "cite",
    "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre", "q", "samp",
    "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
    "tr", "tt", "ul", "var"})
COMMON = frozenset({"id", "class", "style", "title", "lang", "dir"})
ATTRIBUTES = {
    "a": frozenset({"href", "name", "hreflang", "rel", "rev", "type", "charset"}),
    "img": frozenset({"src", "alt", "width", "height", "border", "longdesc", "align"}),
    "table": frozenset({"border", "cellpadding", "cellspacing", "summary", "width", "frame",
                        "rules", "align"}),
    "td": frozenset({"colspan", "rowspan", "align", "valign", "headers", "scope", "abbr",
                     "axis", "width", "height", "char", "charoff", "nowrap"}),
    "col": frozenset({"span", "width", "align", "valign", "char", "charoff"}),
    "ol": frozenset({"start", "type", "compact"}),
    "li": frozenset({"value", "type"}),
    "blockquote": frozenset({"cite"}), "q": frozenset({"cite"}),
    "del": frozenset({"cite", "datetime"}), "ins": frozenset({"cite", "datetime"}),
}
ATTRIBUTES["th"] = ATTRIBUTES["td"]
ATTRIBUTES["colgroup"] = ATTRIBUTES["col"]
for _part in ("tr", "thead", "tbody", "tfoot"):
    ATTRIBUTES[_part] = frozenset({"align", "valign", "char", "charoff"})
for _block in ("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "caption", "hr"):
    ATTRIBUTES[_block] = frozenset({"align", "noshade", "size", "width"})
URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc"})
_ACTIVE_URL = re.compile(r"^(javascript|vbscript|livescript|data):", re.IGNORECASE)
_IMAGE_DATA = re.compile(r"^data:image/(png|jpe?g|gif|webp)[;,]", re.IGNORECASE)
_ACTIVE_STYLE = re.compile(r"url\s*\(|expression\s*\(|@import|behavior\s*:|javascript:",
                           re.IGNORECASE)


def safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True,
                           remove_pis=True)


def _url(value: str) -> str:
    """The URL as a browser reads it: control characters and whitespace inside a scheme do
    not hide it (``java\\tscript:``)."""
    return re.sub(r"[\x00-\x20]+", "", value)


def check_narrative(div: str, where: str, issues: list[Issue]) -> None:
    """Well-formed XHTML in a ``div``, with the R4 narrative's elements and attributes only,
    and no active URL or style. (txt-2, "some content", is not enforced: HL7's own examples
    break it, and an empty narrative harms nobody.)"""
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
    problem = _problem(root)
    if problem is not None:
        issues.append(Issue("value", f"{where}: narrative {problem} (FHIR R4 narrative rules, "
                                     "txt-1)", expression=[where]))
        return


def _problem(root: etree._Element) -> str | None:
    for node in root.iter():
        if not isinstance(node.tag, str):
            continue
        namespace, _, local = node.tag[1:].partition("}") if node.tag.startswith("{") \
            else ("", "", node.tag)
        if namespace != XHTML_NS or local not in ELEMENTS:
            return f"may not hold <{local}> (only HTML 4.0 formatting, lists, tables, links " \
                   "and images)"
        allowed = COMMON | ATTRIBUTES.get(local, frozenset())
        for name, value in node.attrib.items():
            attr = name
            if name.startswith("{"):
                space, _, attr = name[1:].partition("}")
                if space != XML_NS or attr != "lang":
                    return f"may not have the attribute {name} on <{local}>"
                continue
            if attr.lower().startswith("on") or attr not in allowed:
                return f"may not have the attribute {attr!r} on <{local}>"
            url = _url(value)
            if attr in URL_ATTRIBUTES and _ACTIVE_URL.match(url) and not (
                    local == "img" and attr == "src" and _IMAGE_DATA.match(url)):
                return f"may not hold an active URL ({value[:40]!r} in {attr} of <{local}>)"
            if attr == "style" and _ACTIVE_STYLE.search(value):
                return f"may not load or run anything from a style (<{local}>)"
    return None
