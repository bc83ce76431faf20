"""XML in and out of the XDS edge: a parser that never resolves entities, DTDs or network
references, and the ebRIM/ebRS 3.0 + IHE XDS.b/XDS-I.b schemas every message is checked
against (kept in ``schema/``, loaded once, offline)."""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree

SCHEMA_DIR = Path(__file__).parent / "schema"

NS = {
    "soap": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "xop": "http://www.w3.org/2004/08/xop/include",
    "rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0",
    "rs": "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0",
    "lcm": "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0",
    "query": "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0",
    "xds": "urn:ihe:iti:xds-b:2007",
    "xdsi": "urn:ihe:rad:xdsi-b:2009",
}

MAX_XML = 64 * 1024 * 1024  # bytes of one SOAP envelope (documents travel as MTOM parts)


class XmlRefused(ValueError):
    """XML that is not parsed: a DOCTYPE or entity declaration, not well-formed, too large."""


def q(prefix: str, name: str) -> str:
    """Clark notation: ``q("rim", "Slot")`` -> ``{urn:…rim:3.0}Slot``."""
    return f"{{{NS[prefix]}}}{name}"


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True)


def parse(data: bytes) -> etree._Element:
    """Parse untrusted XML. A DOCTYPE (and so any entity declaration: external entities,
    entity expansion) is refused outright, before and after parsing (an encoding the byte
    check cannot read is caught by the parsed document's DTD)."""
    if len(data) > MAX_XML:
        raise XmlRefused(f"the XML is over {MAX_XML} bytes")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XmlRefused("a DOCTYPE or entity declaration is not accepted (XXE)")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise XmlRefused(f"not well-formed XML: {exc}") from exc
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise XmlRefused("a DOCTYPE or entity declaration is not accepted (XXE)")
    return root


_lock = threading.Lock()
_validating = threading.Lock()
_schema: etree.XMLSchema | None = None


def schema() -> etree.XMLSchema:
    """ebRIM/ebRS 3.0 (rim, rs, lcm, query), IHE XDS.b and XDS-I.b in one compiled schema."""
    global _schema
    with _lock:
        if _schema is None:
            doc = etree.parse(str(SCHEMA_DIR / "XDSI.b_ImagingDocumentSource.xsd"), _parser())
            _schema = etree.XMLSchema(doc)
        return _schema


def schema_errors(element: etree._Element, limit: int = 10) -> list[str]:
    """Schema problems of one message body element ([] when valid): 'line N: message'."""
    checker = schema()
    doc = etree.ElementTree(etree.fromstring(etree.tostring(element), _parser()))
    with _validating:  # one compiled schema: its error log is per validation
        if checker.validate(doc):
            return []
        return [f"line {e.line}: {e.message}" for e in list(checker.error_log)[:limit]]


def tostring(element: etree._Element) -> bytes:
    return etree.tostring(element, encoding="UTF-8", xml_declaration=False)
