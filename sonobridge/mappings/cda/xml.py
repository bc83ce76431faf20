"""Safe parsing and small building helpers for CDA documents (lxml).

Documents arrive from other systems (a regional platform, a referring hospital): parsing
never resolves entities, never loads a DTD or anything over the network, refuses a document
that declares a DOCTYPE at all (entity expansion "billion laughs" and external entities XXE
live there), and bounds the size before parsing.
"""

from __future__ import annotations

from functools import lru_cache

from lxml import etree

from sonobridge.mappings.cda.codes import HL7_V3, XSI
from sonobridge.mappings.cda.problems import CdaError, Problem

MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
NS = {"v3": HL7_V3, "xsi": XSI}
V3 = f"{{{HL7_V3}}}"
XSI_TYPE = f"{{{XSI}}}type"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          dtd_validation=False, huge_tree=False, remove_blank_text=False)


def parse(data: bytes) -> etree._ElementTree:
    """The document tree, or ``CdaError`` (rule ``CDA-XML``) naming the line."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CdaError([Problem("CDA-XML", f"the document is {len(data)} bytes; at most "
                                           f"{MAX_DOCUMENT_BYTES} are accepted")])
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if isinstance(exc.lineno, int) else None
        raise CdaError([Problem("CDA-XML", f"not well-formed XML: {exc.msg}", line)]) from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise CdaError([Problem("CDA-XML", "a DOCTYPE is not accepted in a CDA document "
                                           "(entities are never expanded or fetched)", 1)])
    return tree


def el(parent: etree._Element, tag: str, text: str | None = None,
       **attrs: str | None) -> etree._Element:
    """A child in the HL7 v3 namespace with the attributes that are not None."""
    child = etree.SubElement(parent, V3 + tag)
    for name, value in attrs.items():
        if value is not None:
            child.set(name.rstrip("_"), value)
    if text is not None:
        child.text = text
    return child


def typed(parent: etree._Element, tag: str, xsi_type: str, text: str | None = None,
          **attrs: str | None) -> etree._Element:
    child = el(parent, tag, text, **attrs)
    child.set(XSI_TYPE, xsi_type)
    return child


def xpath_of(node: etree._Element) -> str:
    """An XPath to the element with ``v3:`` names and positions (``/v3:ClinicalDocument/
    v3:recordTarget[1]/...``), readable in an OperationOutcome."""
    steps = []
    current: etree._Element | None = node
    while current is not None:
        tag = etree.QName(current).localname if isinstance(current.tag, str) else "node()"
        parent = current.getparent()
        if parent is None:
            steps.append(f"v3:{tag}")
        else:
            same = [c for c in parent if c.tag == current.tag]
            steps.append(f"v3:{tag}[{same.index(current) + 1}]")
        current = parent
    return "/" + "/".join(reversed(steps))


@lru_cache(maxsize=1024)
def compiled(path: str) -> etree.XPath:
    """An XPath compiled once (with the ``v3``/``xsi`` prefixes): the checks and the reader
    ask the same few hundred paths of every document."""
    return etree.XPath(path, namespaces=NS)


def select(node: etree._Element, path: str) -> list[etree._Element]:
    """The elements ``path`` selects from ``node``."""
    found = compiled(path)(node)
    return [n for n in found if isinstance(n, etree._Element)] if isinstance(found, list) else []
