"""The CDA R2 normative schema with the WS/T 500 overlay, compiled once per process.

``schema/wst500-overlay.xsd`` names the China extension elements and where they go; they are
inserted in memory into ``POCD_MT000040.xsd`` (whose includes still resolve next to it), so
the normative files stay as HL7 published them. Compiling takes a few hundred milliseconds:
it happens on first use and the compiled ``XMLSchema`` is shared (lxml validation with one
schema object reports into that object's error log, so validations take a lock).
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

from lxml import etree

from sonobridge.mappings.cda.problems import Problem
from sonobridge.mappings.cda.xml import xpath_of

SCHEMA_DIR = Path(__file__).parent / "schema"
POCD = SCHEMA_DIR / "infrastructure" / "cda" / "POCD_MT000040.xsd"
OVERLAY = SCHEMA_DIR / "wst500-overlay.xsd"
XS = "http://www.w3.org/2001/XMLSchema"
SB = "urn:sonobridge:cda-overlay"
MAX_REPORTED = 20

_lock = threading.RLock()
_compiled: etree.XMLSchema | None = None


def _overlaid() -> etree._ElementTree:
    """POCD_MT000040.xsd with the overlay applied, plus the ClinicalDocument element."""
    safe = etree.XMLParser(resolve_entities=False, no_network=True)
    tree = etree.parse(str(POCD), safe)
    root = tree.getroot()
    overlay = etree.parse(str(OVERLAY), safe).getroot()
    ns = {"xs": XS, "sb": SB}
    for insert in overlay.iterfind(".//sb:insert", ns):
        into, after = insert.get("into"), insert.get("after")
        seq = root.find(f"xs:complexType[@name='{into}']/xs:sequence", ns)
        if seq is None:
            raise RuntimeError(f"overlay: no complex type {into} in {POCD.name}")
        anchor = seq.find(f"xs:element[@name='{after}']", ns)
        if anchor is None:
            raise RuntimeError(f"overlay: {into} has no element {after}")
        for offset, decl in enumerate(insert.iterfind("xs:element", ns), start=1):
            seq.insert(seq.index(anchor) + offset, copy.deepcopy(decl))
    for declared in overlay.iterfind("xs:complexType", ns):
        root.append(copy.deepcopy(declared))
    etree.SubElement(root, f"{{{XS}}}element", name="ClinicalDocument",
                     type="POCD_MT000040.ClinicalDocument")
    return tree


def cda_schema() -> etree.XMLSchema:
    global _compiled
    if _compiled is None:
        with _lock:
            if _compiled is None:
                _compiled = etree.XMLSchema(_overlaid())
    return _compiled


def schema_problems(tree: etree._ElementTree) -> list[Problem]:
    """Every schema violation (the first ``MAX_REPORTED``), each with its line."""
    schema = cda_schema()
    with _lock:  # the error log belongs to the schema object: one validation at a time
        if schema.validate(tree):
            return []
        entries = list(schema.error_log)[:MAX_REPORTED]
    return [Problem("CDA-XSD", entry.message, entry.line or None, _readable(tree, entry.path))
            for entry in entries]


def _readable(tree: etree._ElementTree, path: str | None) -> str:
    """libxml2's ``/*/*[7]`` as ``/v3:ClinicalDocument/v3:title[1]``."""
    if not path:
        return ""
    try:
        found = tree.xpath(path)
    except etree.XPathError:
        return path
    if isinstance(found, list) and found and isinstance(found[0], etree._Element):
        return xpath_of(found[0])
    return path
