"""SOAP 1.2 with WS-Addressing 1.0 and MTOM/XOP, as the IHE ITI TF-2 Appendix V web services
profile asks: requests and responses are ``multipart/related; type="application/xop+xml"``
with the envelope as the root part and documents as binary parts the body points at with
``xop:Include`` (a plain ``application/soap+xml`` envelope with inline base64 is read as
well). Faults are SOAP 1.2 faults with a WS-Addressing subcode where the addressing is at
fault."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field

from lxml import etree

from sonobridge.hie.xds.xml import NS, XmlRefused, parse, q, tostring

SOAP_CT = "application/soap+xml"
XOP_CT = "application/xop+xml"
MAX_PARTS = 1000  # MIME parts of one message


class SoapFault(Exception):
    """Answered as a SOAP 1.2 Fault: ``code`` Sender or Receiver, an optional qualified
    subcode (``wsa:ActionNotSupported``…), the reason text."""

    def __init__(self, reason: str, code: str = "Sender", subcode: str | None = None,
                 status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.subcode = subcode
        self.status = status


@dataclass
class Message:
    """A received SOAP message: its WS-Addressing action and id, the body's first element,
    and the MTOM parts by Content-ID (without the angle brackets)."""

    action: str
    message_id: str
    body: etree._Element
    parts: dict[str, bytes] = field(default_factory=dict)
    reply_to: str | None = None
    patient: str | None = None  # Patient/id the exchange concerned, once known (the audit)

    def binary(self, element: etree._Element) -> bytes:
        """The bytes of a base64Binary element: its xop:Include part, or its inline text.
        A missing part is a ``KeyError`` naming the Content-ID."""
        include = element.find(q("xop", "Include"))
        if include is not None:
            href = include.get("href", "")
            cid = _unquote_cid(href[4:] if href.startswith("cid:") else href)
            if cid not in self.parts:
                raise KeyError(cid)
            return self.parts[cid]
        try:
            return base64.b64decode("".join((element.text or "").split()), validate=True)
        except ValueError as exc:
            raise KeyError(f"inline base64 of {element.get('id') or element.tag}") from exc

    def inline(self) -> etree._Element:
        """The body with every xop:Include replaced by its part in base64 (the XOP infoset,
        which is what the schemas describe); an unresolved part stays a reference."""
        copy = etree.fromstring(tostring(self.body))
        for include in copy.iter(q("xop", "Include")):
            parent = include.getparent()
            href = include.get("href", "")
            cid = _unquote_cid(href[4:] if href.startswith("cid:") else href)
            if parent is not None and cid in self.parts:
                parent.remove(include)
                parent.text = base64.b64encode(self.parts[cid]).decode()
        return copy


def _unquote_cid(value: str) -> str:
    from urllib.parse import unquote

    return unquote(value).strip().strip("<>")


def _params(content_type: str) -> tuple[str, dict[str, str]]:
    main, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for match in re.finditer(r'\s*([\w-]+)\s*=\s*("([^"]*)"|[^;]*)\s*;?', rest):
        params[match.group(1).lower()] = match.group(3) if match.group(3) is not None \
            else match.group(2).strip()
    return main.strip().lower(), params


def _split_multipart(data: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    delimiter = b"--" + boundary.encode("latin-1")
    pieces = data.split(delimiter)
    if len(pieces) < 3:
        raise SoapFault("the multipart message has no parts for its boundary")
    out: list[tuple[dict[str, str], bytes]] = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        if len(out) >= MAX_PARTS:
            raise SoapFault(f"more than {MAX_PARTS} MIME parts")
        piece = piece[2:] if piece.startswith(b"\r\n") else piece.lstrip(b"\n")
        head, sep, body = piece.partition(b"\r\n\r\n")
        if not sep:
            head, sep, body = piece.partition(b"\n\n")
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        if body.endswith(b"\r\n"):
            body = body[:-2]
        elif body.endswith(b"\n"):
            body = body[:-1]
        if headers.get("content-transfer-encoding", "binary").lower() == "base64":
            body = base64.b64decode(body)
        out.append((headers, body))
    return out


def read(content_type: str, data: bytes) -> Message:
    """A received request or response. Refused with a SoapFault: not SOAP 1.2, not XML, a
    DOCTYPE, no WS-Addressing Action or MessageID (the Web Services profile requires both)."""
    main, params = _params(content_type)
    parts: dict[str, bytes] = {}
    if main == "multipart/related":
        boundary = params.get("boundary")
        if not boundary:
            raise SoapFault("multipart/related without a boundary")
        split = _split_multipart(data, boundary)
        start = _unquote_cid(params.get("start", ""))
        root: bytes | None = None
        for headers, body in split:
            cid = _unquote_cid(headers.get("content-id", ""))
            if root is None and (not start or cid == start):
                root = body
            elif cid:
                parts[cid] = body
        if root is None:
            raise SoapFault(f"no MIME part has the start Content-ID <{start}>")
        envelope_bytes = root
    elif main == SOAP_CT:
        envelope_bytes = data
    else:
        raise SoapFault(f"Content-Type {main or '(none)'} is not SOAP 1.2 "
                        f"(application/soap+xml, or multipart/related for MTOM)", status=415)
    try:
        envelope = parse(envelope_bytes)
    except XmlRefused as exc:
        raise SoapFault(str(exc)) from exc
    if envelope.tag != q("soap", "Envelope"):
        raise SoapFault(f"the root element is {envelope.tag}, not a SOAP 1.2 Envelope",
                        subcode="soap:VersionMismatch" if envelope.tag.endswith("Envelope")
                        else None)
    header = envelope.find(q("soap", "Header"))
    body = envelope.find(q("soap", "Body"))
    if body is None or len(body) == 0:
        raise SoapFault("the SOAP Body is empty")
    action = header.findtext(q("wsa", "Action")) if header is not None else None
    message_id = header.findtext(q("wsa", "MessageID")) if header is not None else None
    if not action or not message_id:
        missing = "wsa:Action" if not action else "wsa:MessageID"
        raise SoapFault(f"the WS-Addressing header {missing} is required",
                        subcode="wsa:MessageAddressingHeaderRequired")
    reply_to = header.findtext(f"{q('wsa', 'ReplyTo')}/{q('wsa', 'Address')}") \
        if header is not None else None
    return Message(action.strip(), message_id.strip(), body[0], parts, reply_to)


def _envelope(action: str, body: etree._Element, relates_to: str | None,
              to: str | None) -> tuple[etree._Element, str]:
    env = etree.Element(q("soap", "Envelope"), nsmap={"soap": NS["soap"], "wsa": NS["wsa"]})
    header = etree.SubElement(env, q("soap", "Header"))
    must = {q("soap", "mustUnderstand"): "true"}
    etree.SubElement(header, q("wsa", "Action"), must).text = action
    message_id = f"urn:uuid:{uuid.uuid4()}"
    etree.SubElement(header, q("wsa", "MessageID")).text = message_id
    if relates_to:
        etree.SubElement(header, q("wsa", "RelatesTo")).text = relates_to
    else:
        reply = etree.SubElement(header, q("wsa", "ReplyTo"))
        etree.SubElement(reply, q("wsa", "Address")).text = \
            "http://www.w3.org/2005/08/addressing/anonymous"
    if to:
        etree.SubElement(header, q("wsa", "To"), must).text = to
    etree.SubElement(env, q("soap", "Body")).append(body)
    return env, message_id


def write(action: str, body: etree._Element, *, attachments: dict[str, bytes] | None = None,
          relates_to: str | None = None, to: str | None = None
          ) -> tuple[str, bytes, str]:
    """(Content-Type, bytes, MessageID) of a message. With ``attachments`` (Content-ID ->
    bytes, referenced from the body by ``xop:Include href="cid:…"``) it is MTOM: a
    multipart/related with the envelope as the root part."""
    env, message_id = _envelope(action, body, relates_to, to)
    xml = b'<?xml version="1.0" encoding="UTF-8"?>' + tostring(env)
    if attachments is None:
        return f'{SOAP_CT}; charset=UTF-8; action="{action}"', xml, message_id
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_id = f"root.message@{uuid.uuid4().hex}.sonobridge"
    chunks = [f"--{boundary}\r\nContent-Type: {XOP_CT}; charset=UTF-8; "
              f'type="{SOAP_CT}"; action="{action}"\r\nContent-Transfer-Encoding: binary\r\n'
              f"Content-ID: <{root_id}>\r\n\r\n".encode(), xml, b"\r\n"]
    for cid, data in attachments.items():
        chunks += [f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                   f"Content-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n\r\n"
                   .encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = (f'multipart/related; boundary="{boundary}"; type="{XOP_CT}"; '
                    f'start="<{root_id}>"; start-info="{SOAP_CT}"; action="{action}"')
    return content_type, b"".join(chunks), message_id


def xop_include(element: etree._Element, cid: str) -> None:
    """Make ``element``'s content a reference to the MTOM part ``cid``."""
    element.text = None
    etree.SubElement(element, q("xop", "Include"), href=f"cid:{cid}",
                     nsmap={"xop": NS["xop"]})


def fault_body(fault: SoapFault) -> etree._Element:
    node = etree.Element(q("soap", "Fault"), nsmap={"soap": NS["soap"], "wsa": NS["wsa"]})
    code = etree.SubElement(node, q("soap", "Code"))
    etree.SubElement(code, q("soap", "Value")).text = f"soap:{fault.code}"
    if fault.subcode:
        sub = etree.SubElement(code, q("soap", "Subcode"))
        etree.SubElement(sub, q("soap", "Value")).text = fault.subcode
    reason = etree.SubElement(node, q("soap", "Reason"))
    etree.SubElement(reason, q("soap", "Text"),
                     {"{http://www.w3.org/XML/1998/namespace}lang": "en"}).text = fault.reason
    return node


FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"
