"""FHIR XML <-> FHIR JSON, driven by the element tables in ``schema``.

Written by hand because ``fhir.resources``' own XML round trip changes decimals (``42`` comes back
as the string ``"42.0"``) and re-escapes narrative. Parsing is defensive: no DTD, no entities, no
network, no huge trees; a DOCTYPE is refused outright (XXE and billion-laughs).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree

from sonobridge.core.errors import CoreError
from sonobridge.core.narrative import XHTML_NS, safe_parser
from sonobridge.core.schema import (
    BOOLEAN,
    DECIMAL,
    INTEGER,
    XHTML,
    Element,
    TypeInfo,
    resource_info,
    type_info,
)

FHIR_NS = "http://hl7.org/fhir"
_F = "{%s}" % FHIR_NS  # noqa: UP031 - lxml's Clark notation


def parse_xml_document(data: bytes) -> etree._Element:
    """Parse untrusted XML, refusing DTDs and entity declarations."""
    head = data[:4096].upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in data.upper():
        raise CoreError(400, "security", "XML with a DOCTYPE or entity declarations is refused")
    try:
        root = etree.fromstring(data, safe_parser())
    except etree.XMLSyntaxError as exc:
        raise CoreError(400, "structure", f"malformed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise CoreError(400, "security", "XML with a DOCTYPE is refused")
    return root


# --------------------------------------------------------------------------- XML -> JSON

def xml_to_resource(data: bytes) -> dict[str, Any]:
    """Parse a FHIR XML resource into its JSON form (decimals as ``Decimal``)."""
    root = parse_xml_document(data)
    return _read_resource(root, root.tag if isinstance(root.tag, str) else "")


def _local(element: etree._Element, where: str) -> str:
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith(_F):
        raise CoreError(400, "structure", f"{where}: element {tag!r} is not in the FHIR namespace",
                        expression=[where])
    return tag[len(_F):]


def _read_resource(element: etree._Element, where: str) -> dict[str, Any]:
    res_type = _local(element, where or "resource")
    info = resource_info(res_type)
    if info is None:
        raise CoreError(415 if not where.startswith("{") else 400, "not-supported",
                        f"XML is not supported for resource type {res_type!r}; send JSON")
    out: dict[str, Any] = {"resourceType": res_type}
    _read_children(element, info, out, res_type, resource=True)
    return out


def _read_children(element: etree._Element, info: TypeInfo, out: dict[str, Any], path: str,
                   resource: bool) -> None:
    if not resource:
        for attr, value in element.attrib.items():
            if attr in ("id", "url"):
                out[attr] = value
            elif attr != "value":
                raise CoreError(400, "structure", f"{path}: unexpected attribute {attr!r}",
                                expression=[path])
    lists: dict[str, tuple[list[Any], list[Any]]] = {}
    for child in element:
        if child.tag is etree.Comment:
            continue
        name = "div" if child.tag == f"{{{XHTML_NS}}}div" else _local(child, path)
        spec = info.element(name)
        child_path = f"{path}.{name}"
        if spec is None:
            raise CoreError(400, "structure", f"{child_path}: unknown element {name!r}",
                            expression=[child_path])
        if spec.kind == "primitive":
            value, extra = _read_primitive(child, spec, child_path)
            if spec.is_list:
                values, extras = lists.setdefault(name, ([], []))
                values.append(value)
                extras.append(extra)
            else:
                if value is not None:
                    out[name] = value
                if extra:
                    out["_" + name] = extra
            continue
        if spec.kind == "resource":
            inner = [c for c in child if c.tag is not etree.Comment]
            if len(inner) != 1:
                raise CoreError(400, "structure", f"{child_path}: expected one resource",
                                expression=[child_path])
            value = _read_resource(inner[0], child_path)
        else:
            value = {}
            _read_children(child, type_info(spec.model), value, child_path, resource=False)
        if spec.is_list:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    for name, (values, extras) in lists.items():
        if any(v is not None for v in values):
            out[name] = values
        if any(extras):
            out["_" + name] = [e or None for e in extras]


def _read_primitive(element: etree._Element, spec: Element, path: str
                    ) -> tuple[Any, dict[str, Any] | None]:
    if spec.json_type == XHTML:
        return etree.tostring(element, encoding="unicode", with_tail=False), None
    raw = element.get("value")
    extra: dict[str, Any] = {}
    if element.get("id") is not None:
        extra["id"] = element.get("id")
    extensions = []
    for child in element:
        if child.tag is etree.Comment:
            continue
        if _local(child, path) != "extension":
            raise CoreError(400, "structure", f"{path}: a primitive may only hold extensions",
                            expression=[path])
        ext: dict[str, Any] = {}
        _read_children(child, type_info(spec_model_extension()), ext, f"{path}.extension",
                       resource=False)
        extensions.append(ext)
    if extensions:
        extra["extension"] = extensions
    value = None if raw is None else _convert(raw, spec.json_type, path)
    return value, extra or None


def spec_model_extension() -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class("Extension")


def _convert(raw: str, json_type: str, path: str) -> Any:
    try:
        if json_type == BOOLEAN:
            if raw not in ("true", "false"):
                raise ValueError(raw)
            return raw == "true"
        if json_type == INTEGER:
            return int(raw)
        if json_type == DECIMAL:
            value = Decimal(raw)
            if not value.is_finite():
                raise ValueError(raw)
            return value
    except (ValueError, InvalidOperation):
        raise CoreError(400, "value", f"{path}: {raw!r} is not a valid {json_type}",
                        expression=[path]) from None
    return raw


# --------------------------------------------------------------------------- JSON -> XML

def resource_to_xml(resource: dict[str, Any], *, pretty: bool = False) -> bytes:
    root = _write_resource(resource)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True, pretty_print=pretty)


def _write_resource(resource: dict[str, Any]) -> etree._Element:
    res_type = resource.get("resourceType", "")
    info = resource_info(res_type)
    if info is None:
        raise CoreError(406, "not-supported",
                        f"XML is not available for resource type {res_type!r}; ask for JSON")
    element = etree.Element(_F + res_type, nsmap={None: FHIR_NS})
    _write_children(element, resource, info, resource=True)
    return element


def _write_children(parent: etree._Element, obj: dict[str, Any], info: TypeInfo,
                    resource: bool) -> None:
    if not resource:
        if "id" in obj:
            parent.set("id", str(obj["id"]))
        if "url" in obj and info.name == "Extension":
            parent.set("url", str(obj["url"]))
    for name, spec in info.elements.items():
        if not resource and (name == "id" or (name == "url" and info.name == "Extension")):
            continue
        value: Any = obj.get(name)  # any JSON value (a list when ``spec.is_list``)
        extra = obj.get("_" + name)
        if value is None and extra is None:
            continue
        if spec.kind == "primitive":
            if spec.is_list:
                values = value if isinstance(value, list) else []
                extras = extra if isinstance(extra, list) else []
                for i in range(max(len(values), len(extras))):
                    _write_primitive(parent, name, spec,
                                     values[i] if i < len(values) else None,
                                     extras[i] if i < len(extras) else None)
            else:
                _write_primitive(parent, name, spec, value, extra)
            continue
        for item in (value if spec.is_list else [value]):
            child = etree.SubElement(parent, _F + name)
            if spec.kind == "resource":
                child.append(_write_resource(item))
            else:
                _write_children(child, item, type_info(spec.model), resource=False)


def _write_primitive(parent: etree._Element, name: str, spec: Element, value: Any,
                     extra: dict[str, Any] | None) -> None:
    if spec.json_type == XHTML:
        try:
            parent.append(etree.fromstring(value.encode("utf-8"), safe_parser()))
        except etree.XMLSyntaxError as exc:
            raise CoreError(500, "exception", f"stored narrative is not XHTML: {exc}") from None
        return
    child = etree.SubElement(parent, _F + name)
    if extra and extra.get("id") is not None:
        child.set("id", str(extra["id"]))
    if value is not None:
        child.set("value", _text(value))
    for ext in (extra or {}).get("extension", []):
        node = etree.SubElement(child, _F + "extension")
        _write_children(node, ext, type_info(spec_model_extension()), resource=False)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
