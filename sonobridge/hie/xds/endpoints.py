"""The SOAP endpoints (``/xds/registry``, ``/xds/repository``, ``/xds/imaging``), the WSDL
(``/xds/wsdl``) and its schemas (``/xds/schema/…``).

A request is read (SOAP 1.2, WS-Addressing, MTOM), dispatched on its ``wsa:Action`` to the
registry, repository or imaging source, and answered with the transaction's response action,
``RelatesTo`` the request's MessageID. What is wrong with the envelope is a SOAP Fault (an
action this endpoint does not offer: ``wsa:ActionNotSupported``; no Action or MessageID:
``wsa:MessageAddressingHeaderRequired``); what is wrong with the submission or query is a
RegistryResponse with IHE error codes (HTTP 200, as the profiles say).

Who may call: node authentication (ITI-19) is the TLS layer's; on top, when the
authorization server is on, a Bearer token is required as on ``/fhir`` and its rights bound
every read and write (``core/access.py``), so an XDS peer is a SMART backend-services client
like any other system. With authorization off (a closed test bed) the peer is unrestricted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sonobridge.core.events import Answered
from sonobridge.core.policy import Caller, Policy
from sonobridge.hie.xds import ebrim, soap
from sonobridge.hie.xds.ebrim import MetadataError
from sonobridge.hie.xds.imaging import ImagingSource
from sonobridge.hie.xds.peers import Peers
from sonobridge.hie.xds.registry import Registry, Retrieved
from sonobridge.hie.xds.xml import NS, SCHEMA_DIR, q

if TYPE_CHECKING:
    from sonobridge.core.services import Core

ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI43 = "urn:ihe:iti:2007:RetrieveDocumentSet"
RAD69 = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
RESPONSE = {ITI41: f"{ITI41}Response", ITI18: f"{ITI18}Response", ITI43: f"{ITI43}Response",
            RAD69: f"{RAD69}Response"}
OFFERED = {"registry": (ITI18,), "repository": (ITI41, ITI43), "imaging": (RAD69,)}
SCHEMAS = {p.name for p in SCHEMA_DIR.glob("*.xsd")}
# transaction -> (audit trail kind, action) on this side of it, as the IHE audit messages
# have them (core/audit.py KINDS; the transaction itself is the subtype, in
# urn:ihe:event-type-code): the repository imports what ITI-41 provides (DCM 110107), the
# registry answers a query (110112), the repository and the imaging source export what is
# retrieved (110106)
AUDIT_KINDS = {"ITI-41": ("import", "C"), "ITI-18": ("query", "E"),
               "ITI-43": ("export", "R"), "RAD-69": ("export", "R")}
log = logging.getLogger("sonobridge.hie.xds")


@dataclass(frozen=True)
class _Site:
    """What the authorization server checks a token's audience against."""

    root: str
    ip: str = ""

    @property
    def fhir_base(self) -> str:
        return f"{self.root}/fhir"


class XdsEndpoints:
    def __init__(self, core: Core, configured_base: str | None = None) -> None:
        self.core = core
        self.peers = Peers.of(core.settings)
        self.registry = Registry(core, self.peers)
        self.imaging = ImagingSource(core, self.peers)
        self.configured_base = configured_base

    def routes(self) -> list[Route]:
        return [Route("/xds/wsdl", self.wsdl, methods=["GET"]),
                Route("/xds/schema/{name}", self.schema, methods=["GET"]),
                *(Route(f"/xds/{name}", self.endpoint(name), methods=["POST", "GET"])
                  for name in OFFERED)]

    def _base(self, request: Request) -> str:
        return (self.configured_base or str(request.base_url)).rstrip("/")

    async def wsdl(self, request: Request) -> Response:
        text = (SCHEMA_DIR / "sonobridge-xds.wsdl").read_text("utf-8")
        return Response(text.replace("{base}", self._base(request)),
                        media_type="text/xml; charset=utf-8")

    async def schema(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in SCHEMAS:  # only the files of the folder, never a path
            return Response("not found", 404, media_type="text/plain")
        return Response((SCHEMA_DIR / name).read_bytes(), media_type="text/xml")

    def endpoint(self, name: str) -> Any:
        async def handle(request: Request) -> Response:
            if request.method == "GET":  # ``?wsdl``, as SOAP toolkits ask
                return await self.wsdl(request)
            policy = await self._policy(request)
            if policy is None:
                return _fault(soap.SoapFault("an access token is required (Authorization: "
                                             "Bearer …)", status=401), None)
            body = await request.body()
            caller = Caller(policy, self._base(request),
                            request.client.host if request.client else "")
            return await run_in_threadpool(self.answer, name, caller,
                                           request.headers.get("content-type", ""), body)
        return handle

    async def _policy(self, request: Request) -> Policy | None:
        auth = getattr(request.app.state, "auth", None)
        if auth is None or not auth.enabled:
            return Policy.open()
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            site = _Site(self._base(request), request.client.host if request.client else "")
            return await run_in_threadpool(auth.policy, token.strip(), site)
        except Exception:  # InvalidToken (an auth type this edge may not import)
            return None

    def answer(self, name: str, caller: Caller, content_type: str, body: bytes) -> Response:
        """One SOAP exchange, in a worker thread."""
        try:
            message = soap.read(content_type, body)
        except soap.SoapFault as fault:
            return _fault(fault, None)
        if message.action not in OFFERED[name]:
            return _fault(soap.SoapFault(
                f"{message.action} is not an action of the {name} endpoint (offered: "
                + ", ".join(OFFERED[name]) + ")", subcode="wsa:ActionNotSupported"),
                message.message_id)
        try:
            return self._answer(caller, message)
        except Exception:  # a database away, a bug: a Receiver fault, no stack trace out
            log.exception("XDS %s failed", message.action)
            return _fault(soap.SoapFault("the server could not process the message",
                                         code="Receiver", status=500), message.message_id)

    def _answer(self, caller: Caller, message: soap.Message) -> Response:
        action = message.action
        if action == ITI41:
            errors = self.registry.provide_and_register(caller, message)
            self._audit(caller, "ITI-41", errors, message.patient)
            return _reply(action, ebrim.registry_response(errors), message.message_id, {})
        if action == ITI18:
            answer = self.registry.stored_query(caller, message)
            self._audit(caller, "ITI-18", ebrim.response_errors(answer), None)
            return _reply(action, answer, message.message_id, None)
        found, errors = (self.registry.retrieve(caller, message) if action == ITI43
                         else self.imaging.retrieve(caller, message))
        self._audit(caller, "ITI-43" if action == ITI43 else "RAD-69",
                    errors if not found else [], None,
                    ", ".join(d.unique_id for d in found))
        body_el, parts = retrieve_response(found, errors, self.peers.repository_unique_id,
                                           self.peers.home_community_id)
        return _reply(action, body_el, message.message_id, parts)

    def _audit(self, caller: Caller, transaction: str, errors: list[MetadataError],
               patient: str | None, detail: str = "") -> None:
        """One audit record per transaction, its DICOM event ID the IHE one (ITI-41 Import
        110107, ITI-18 Query 110112, ITI-43/RAD-69 Export 110106: the audit trail's kinds
        of those IDs), the transaction as the subtype; refused: outcome 4 with the codes."""
        events = self.core.events
        if not events.wants(Answered):
            return
        kind, verb = AUDIT_KINDS[transaction]
        codes = ", ".join(sorted({e.code for e in errors}))
        events.emit(Answered(caller, kind, verb, transaction, outcome="4" if errors else "0",
                             patient=patient, detail=(codes or detail)[:500]))


def retrieve_response(found: list[Retrieved], errors: list[MetadataError], repository: str,
                      home: str = "") -> tuple[etree._Element, dict[str, bytes]]:
    """RetrieveDocumentSetResponse (ITI-43 and RAD-69): the status (Success, PartialSuccess,
    Failure), the errors, each document as an MTOM part."""
    status = ebrim.SUCCESS if not errors else ebrim.PARTIAL if found else ebrim.FAILURE
    node = etree.Element(q("xds", "RetrieveDocumentSetResponse"),
                         nsmap={"xds": NS["xds"], "rs": NS["rs"]})
    response = etree.SubElement(node, q("rs", "RegistryResponse"), status=status)
    ebrim.errors_list(response, errors)
    parts: dict[str, bytes] = {}
    for number, doc in enumerate(found, 1):
        item = etree.SubElement(node, q("xds", "DocumentResponse"))
        if home:
            etree.SubElement(item, q("xds", "HomeCommunityId")).text = \
                home if home.startswith("urn:oid:") else f"urn:oid:{home}"
        etree.SubElement(item, q("xds", "RepositoryUniqueId")).text = repository
        etree.SubElement(item, q("xds", "DocumentUniqueId")).text = doc.unique_id
        etree.SubElement(item, q("xds", "mimeType")).text = doc.mime_type
        cid = f"doc{number}@sonobridge"
        soap.xop_include(etree.SubElement(item, q("xds", "Document")), cid)
        parts[cid] = doc.data
    return node, parts


def _reply(action: str, body: etree._Element, relates_to: str,
           parts: dict[str, bytes] | None) -> Response:
    content_type, data, _ = soap.write(RESPONSE[action], body, attachments=parts,
                                       relates_to=relates_to)
    return Response(data, 200, media_type=content_type)


def _fault(fault: soap.SoapFault, relates_to: str | None) -> Response:
    content_type, data, _ = soap.write(soap.FAULT_ACTION, soap.fault_body(fault),
                                       relates_to=relates_to)
    return Response(data, fault.status, media_type=content_type)


def routes(core: Core) -> list[Route]:
    """The XDS routes for ``app/server.py``."""
    return XdsEndpoints(core, core.settings.base_url).routes()
