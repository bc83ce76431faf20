"""Batch and transaction bundles.

A transaction is all-or-nothing in one database transaction. Entries are processed in the order
FHIR gives (DELETE, POST, PUT/PATCH, GET/HEAD) after every ``urn:uuid:`` fullUrl has been given
its server id and every reference to it rewritten, wherever it appears in the bundle. A batch
runs each entry on its own and reports each outcome in its entry.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from sonobridge import jsonio
from sonobridge.core.errors import CoreError, Issue
from sonobridge.core.policy import Caller, Policy
from sonobridge.core.references import rewrite_references
from sonobridge.core.validation import check_type
from sonobridge.fhir.interactions import FhirRequest, FhirResponse, Interactions
from sonobridge.store.resources import Writer, new_id

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_HEADER_FIELDS = {"ifNoneMatch": "if-none-match", "ifModifiedSince": "if-modified-since",
                  "ifMatch": "if-match", "ifNoneExist": "if-none-exist"}


@dataclass
class Entry:
    index: int
    full_url: str | None
    req: FhirRequest


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def parse_url(url: str, base: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Split an entry URL (relative, or absolute on this server) into path parts and query."""
    if url.startswith(base + "/") or url == base:
        url = url[len(base):]
    elif "://" in url:
        raise CoreError(400, "not-supported", f"{url!r} is not on this server ({base})")
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    return path, parse_qsl(parts.query, keep_blank_values=True)


def request_from_url(method: str, url: str, base: str, headers: dict[str, str]) -> FhirRequest:
    path, query = parse_url(url, base)
    req = FhirRequest(method, query=query, headers=headers, base=base)
    if path[:1] == ["_history"] and len(path) == 1:
        req.history = True
        return req
    if not path:
        raise CoreError(400, "not-supported", f"entry URL {url!r} names no resource type")
    req.res_type = path[0]
    rest = path[1:]
    if rest == ["_history"]:
        req.history = True
    elif len(rest) == 1:
        req.res_id = rest[0]
    elif len(rest) == 2 and rest[1] == "_history":
        req.res_id, req.history = rest[0], True
    elif len(rest) == 3 and rest[1] == "_history":
        req.res_id, req.version_id = rest[0], rest[2]
    elif rest:
        raise CoreError(400, "not-supported", f"entry URL {url!r} is not a supported interaction")
    return req


def _patch_body(resource: Any, where: str) -> tuple[Any, str]:
    """A PATCH entry carries a Parameters (FHIRPath Patch) or a Binary holding a JSON Patch."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        if resource.get("contentType", "").split(";")[0].strip() != "application/json-patch+json":
            raise CoreError(400, "not-supported", f"{where}: a Binary patch must be a JSON Patch")
        try:
            return jsonio.loads(base64.b64decode(resource.get("data", ""), validate=True)), \
                "json-patch"
        except (binascii.Error, jsonio.JSONError) as exc:
            raise CoreError(400, "invalid", f"{where}: cannot read the JSON Patch: {exc}") from None
    return resource, "json"


def parse_entries(bundle: dict[str, Any], base: str, headers: dict[str, str],
                  max_entries: int) -> list[Entry]:
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise CoreError(400, "structure", "Bundle.entry must be an array",
                        expression=["Bundle.entry"])
    if len(entries) > max_entries:
        raise CoreError(413, "too-costly", f"a bundle may hold at most {max_entries} entries",
                        expression=["Bundle.entry"])
    out = []
    full_urls: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(full_url, str):
            if full_url in full_urls:  # which of the two would a reference to it mean?
                raise CoreError(400, "invalid", f"{where}: fullUrl {full_url!r} is the "
                                f"fullUrl of Bundle.entry[{full_urls[full_url]}] too",
                                expression=[f"{where}.fullUrl"])
            full_urls[full_url] = index
        if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
            raise CoreError(400, "required", f"{where}: every entry needs a request",
                            expression=[f"{where}.request"])
        request = entry["request"]
        method = str(request.get("method", "")).upper()
        url = request.get("url")
        if method not in _ORDER or not isinstance(url, str) or not url:
            raise CoreError(400, "required", f"{where}: request needs a method "
                            "(GET, HEAD, POST, PUT, PATCH, DELETE) and a url",
                            expression=[f"{where}.request"])
        entry_headers = dict(headers)
        for field_name, header in _HEADER_FIELDS.items():
            if request.get(field_name):
                entry_headers[header] = str(request[field_name])
        try:
            req = request_from_url(method, url, base, entry_headers)
        except CoreError as exc:
            raise _located(exc, where) from None
        resource = entry.get("resource")
        if method in ("POST", "PUT", "PATCH"):
            if resource is None:
                raise CoreError(400, "required", f"{where}: a {method} entry needs a resource",
                                expression=[f"{where}.resource"])
            if method == "PATCH":
                req.body, req.body_kind = _patch_body(resource, where)
            else:
                req.body = resource
        full_url = entry.get("fullUrl")
        out.append(Entry(index, full_url if isinstance(full_url, str) else None, req))
    return out


def _located(exc: CoreError, where: str) -> CoreError:
    """Prefix an error's issues with the entry they came from."""
    issues = []
    for issue in exc.issues:
        expression = [f"{where}.resource.{e.split('.', 1)[1]}" if "." in e else
                      f"{where}.{e}" for e in issue.expression] or [where]
        issues.append(Issue(issue.code, f"{where}: {issue.diagnostics}", issue.severity,
                            expression))
    return CoreError(exc.status, issues[0].code, issues[0].diagnostics, issues=issues)


_CONDITIONAL_REF = re.compile(r"^[A-Z][A-Za-z]+\?.+")


def resolve_conditional_references(service: Interactions, writer: Writer, value: Any, base: str,
                                   where: str, cache: dict[str, str],
                                   caller: Caller | None = None) -> Any:
    """Replace every ``"reference": "Type?criteria"`` by the one resource it matches."""
    if isinstance(value, list):
        return [resolve_conditional_references(service, writer, v, base, where, cache, caller)
                for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "reference" and isinstance(item, str) and _CONDITIONAL_REF.match(item):
            if item not in cache:
                res_type, _, criteria = item.partition("?")
                check_type(res_type)
                found = service.resources.find(writer, res_type, criteria, base, limit=2,
                                               caller=caller)
                if len(found) > 1:
                    raise CoreError(412, "multiple-matches", f"{where}: conditional reference "
                                    f"{item!r} matches more than one resource")
                if not found:
                    raise CoreError(400, "not-found", f"{where}: conditional reference "
                                    f"{item!r} matches no resource")
                cache[item] = f"{res_type}/{found[0]}"
            out[key] = cache[item]
        else:
            out[key] = resolve_conditional_references(service, writer, item, base, where, cache,
                                                      caller)
    return out


def _has_conditional_reference(value: Any) -> bool:
    if isinstance(value, dict):
        return any((k == "reference" and isinstance(v, str) and _CONDITIONAL_REF.match(v))
                   or _has_conditional_reference(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_conditional_reference(v) for v in value)
    return False


def _response_entry(resp: FhirResponse, base: str) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status_line(resp.status)}
    entry: dict[str, Any] = {}
    stored = resp.stored
    if stored is not None:
        entry["fullUrl"] = f"{base}/{stored.relative_url}"
        if resp.status == 201:
            response["location"] = f"{base}/{stored.version_url}"
        response["etag"] = stored.etag
        response["lastModified"] = stored.last_updated_instant
    if isinstance(resp.body, bytes):
        entry["resource"] = orjson.Fragment(resp.body)
    elif isinstance(resp.body, dict):
        if resp.body.get("resourceType") == "OperationOutcome" and resp.status != 200:
            response["outcome"] = resp.body
        else:
            entry["resource"] = resp.body
    entry["response"] = response
    return entry


def process_bundle(service: Interactions, bundle: Any, base: str, headers: dict[str, str],
                   max_entries: int, policy: Policy | None = None) -> FhirResponse:
    """A batch or transaction; each entry is checked against ``policy`` like a lone request."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise CoreError(400, "invalid", "POST to the base URL takes a batch or transaction Bundle",
                        expression=["Bundle"])
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise CoreError(400, "invalid", f"Bundle.type must be batch or transaction, not {kind!r}",
                        expression=["Bundle.type"])
    entries = parse_entries(bundle, base, headers, max_entries)
    if policy is not None:
        for entry in entries:
            entry.req.policy = policy
    if kind == "batch":
        return _batch(service, entries, base)
    return _transaction(service, entries, base)


def _batch(service: Interactions, entries: list[Entry], base: str) -> FhirResponse:
    out = []
    for entry in entries:
        try:
            if _has_conditional_reference(entry.req.body):
                with service.resources.store.write() as writer:
                    entry.req.body = resolve_conditional_references(
                        service, writer, entry.req.body, base, f"Bundle.entry[{entry.index}]",
                        {}, entry.req.caller)
                    resp = service.handle(entry.req, writer)
            else:
                resp = service.handle(entry.req)
        except CoreError as exc:
            resp = FhirResponse(exc.status, _located(exc, f"Bundle.entry[{entry.index}]").outcome())
        out.append(_response_entry(resp, base))
    return FhirResponse(200, {"resourceType": "Bundle", "type": "batch-response", "entry": out})


def _resolve_targets(service: Interactions, writer: Writer, entries: list[Entry], base: str
                     ) -> dict[str, str]:
    """Give every POST its id (an existing one when If-None-Exist matches) and every
    conditional PUT its target; returns fullUrl -> Type/id for reference rewriting."""
    mapping: dict[str, str] = {}
    targets: dict[str, int] = {}
    for entry in entries:
        req = entry.req
        where = f"Bundle.entry[{entry.index}]"
        try:
            if req.method == "POST" and req.res_id is None and not req.history:
                condition = req.headers.get("if-none-exist")
                found = service.resources.find(writer, req.res_type or "", condition, base,
                                               limit=2, caller=req.caller) if condition else []
                if len(found) > 1:
                    raise CoreError(412, "duplicate", f"ifNoneExist {condition!r} matches "
                                    "more than one resource")
                req.assigned_id = found[0] if found else new_id()
                if entry.full_url:
                    mapping[entry.full_url] = f"{req.res_type}/{req.assigned_id}"
            elif req.method == "PUT" and req.res_id is None and req.query:
                found = service.resources.find(writer, req.res_type or "", req.query, base,
                                               limit=2, caller=req.caller)
                if len(found) > 1:
                    raise CoreError(412, "duplicate", "the condition matches more than one "
                                    "resource")
                body_id = req.body.get("id") if isinstance(req.body, dict) else None
                req.res_id = found[0] if found else (body_id or new_id())
                req.query = []
                if isinstance(req.body, dict):
                    req.body = {**req.body, "id": req.res_id}
            if req.method == "PUT" and entry.full_url and entry.full_url.startswith("urn:"):
                mapping[entry.full_url] = f"{req.res_type}/{req.res_id}"
        except CoreError as exc:
            raise _located(exc, where) from None
        if req.method in ("PUT", "PATCH", "DELETE") and req.res_id is not None:
            key = f"{req.res_type}/{req.res_id}"
            if key in targets:
                raise CoreError(400, "invalid", f"Bundle.entry[{entry.index}] and "
                                f"Bundle.entry[{targets[key]}] both change {key}",
                                expression=[where])
            targets[key] = entry.index
    return mapping


def _transaction(service: Interactions, entries: list[Entry], base: str) -> FhirResponse:
    results: dict[int, FhirResponse] = {}
    with service.resources.store.write() as writer:
        mapping = _resolve_targets(service, writer, entries, base)
        cache: dict[str, str] = {}
        for entry in entries:
            if entry.req.body is None:
                continue
            if mapping:
                entry.req.body = rewrite_references(entry.req.body, mapping)
            if _has_conditional_reference(entry.req.body):
                entry.req.body = resolve_conditional_references(
                    service, writer, entry.req.body, base, f"Bundle.entry[{entry.index}]", cache,
                    entry.req.caller)
        for entry in sorted(entries, key=lambda e: (_ORDER[e.req.method], e.index)):
            try:
                results[entry.index] = service.handle(entry.req, writer)
            except CoreError as exc:
                raise _located(exc, f"Bundle.entry[{entry.index}]") from None
    return FhirResponse(200, {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [_response_entry(results[e.index], base) for e in entries],
    })
