"""zeep as the SOAP peer: the published WSDL loaded by zeep (its schemas from the package's
folder, so no network), and a small XDS repository over real HTTP that reads what it
receives with zeep's own XML Schema objects and answers a RegistryResponse."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

from sonobridge.hie.xds import ebrim, soap
from sonobridge.hie.xds.xml import SCHEMA_DIR, q

ITI41_RESPONSE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"


def wsdl_file(tmp: Path, base: str | None = None) -> Path:
    """The published WSDL with ``{base}`` such that its schema imports are the package's
    files (``<base>/xds/schema/rim.xsd``)."""
    base = base or str(SCHEMA_DIR.parent.parent)
    target = tmp / "sonobridge-xds.wsdl"
    target.write_text((SCHEMA_DIR / "sonobridge-xds.wsdl").read_text("utf-8")
                      .replace("{base}", base), "utf-8")
    return target


def zeep_client(wsdl: str, **kwargs: Any) -> Any:
    """zeep with WS-Addressing. Not strict: zeep does not follow the ebRIM substitution
    groups (``rim:Identifiable`` -> ExtrinsicObject…), which it then keeps as raw elements
    (``_raw_elements``) instead of refusing; the schemas themselves are checked with lxml."""
    from zeep import Client, Settings
    from zeep.wsa import WsAddressingPlugin

    return Client(wsdl, plugins=[WsAddressingPlugin()],
                  settings=Settings(strict=False, forbid_dtd=True, forbid_entities=True,
                                    forbid_external=False), **kwargs)


@dataclass
class Received:
    action: str
    request: Any  # what zeep parsed
    documents: dict[str, bytes]
    content_type: str


@dataclass
class Repository:
    url: str
    received: list[Received] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # "success", "failure", "busy", "500"


@contextmanager
def repository(tmp: Path, tls: ssl.SSLContext | None = None) -> Iterator[Repository]:
    """The repository on 127.0.0.1; over TLS with ``tls`` (a server context that may
    require client certificates: ITI-19 node authentication)."""
    client = zeep_client(str(wsdl_file(tmp)))
    element = client.get_element("{urn:ihe:iti:xds-b:2007}ProvideAndRegisterDocumentSetRequest")
    state = Repository("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(length)
            content_type = self.headers.get("Content-Type", "")
            message = soap.read(content_type, data)
            parsed = element.parse(message.inline(), client.wsdl.types)
            documents = {d.get("id"): message.binary(d)
                         for d in message.body.findall(q("xds", "Document"))}
            state.received.append(Received(message.action, parsed, documents, content_type))
            answer = state.answers.pop(0) if state.answers else "success"
            if answer == "500":
                self.send_response(500)
                self.end_headers()
                return
            errors = {"failure": [ebrim.MetadataError("XDSUnknownPatientId", "unknown")],
                      "busy": [ebrim.MetadataError("XDSRepositoryBusy", "busy")]}.get(answer, [])
            ctype, body, _ = soap.write(ITI41_RESPONSE, ebrim.registry_response(errors),
                                        attachments={}, relates_to=message.message_id)
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/xds/repository"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def rim_tag(name: str) -> str:
    return q("rim", name)


__all__ = ["Repository", "etree", "repository", "wsdl_file", "zeep_client"]
