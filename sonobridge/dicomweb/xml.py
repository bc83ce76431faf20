"""DICOM JSON -> the Native DICOM Model XML (PS3.19 A.1), for ``application/dicom+xml``.

No library writes it (pydicom reads and writes JSON only), and it is a direct walk of the JSON.
"""

from __future__ import annotations

from typing import Any

from lxml import etree
from pydicom.datadict import keyword_for_tag

NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_PN_PARTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def dataset_xml(data: dict[str, Any]) -> bytes:
    root = etree.Element("NativeDicomModel", nsmap={None: NS})
    _attributes(root, data)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _attributes(parent: etree._Element, data: dict[str, Any]) -> None:
    for tag, element in data.items():
        vr = element.get("vr", "UN")
        node = etree.SubElement(parent, "DicomAttribute", tag=tag, vr=vr)
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            node.set("keyword", keyword)
        if "BulkDataURI" in element:
            etree.SubElement(node, "BulkData", uri=element["BulkDataURI"])
        elif "InlineBinary" in element:
            etree.SubElement(node, "InlineBinary").text = element["InlineBinary"]
        for number, value in enumerate(element.get("Value") or [], start=1):
            if vr == "SQ":
                item = etree.SubElement(node, "Item", number=str(number))
                _attributes(item, value or {})
            elif vr == "PN":
                person = etree.SubElement(node, "PersonName", number=str(number))
                for group in ("Alphabetic", "Ideographic", "Phonetic"):
                    text = (value or {}).get(group)
                    if text:
                        group_node = etree.SubElement(person, group)
                        for name, part in zip(_PN_PARTS, text.split("^"), strict=False):
                            if part:
                                etree.SubElement(group_node, name).text = part
            else:
                etree.SubElement(node, "Value", number=str(number)).text = \
                    "" if value is None else str(value)
