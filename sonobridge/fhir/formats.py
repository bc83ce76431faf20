"""Wire formats: which one a client sends and wants, and turning resources into bytes.

Responses keep stored JSON bytes untouched on the common path (JSON, not pretty). Bundles embed
stored resources as ``orjson.Fragment`` so no resource is parsed again to be listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sonobridge import jsonio
from sonobridge.core.errors import CoreError

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_PATCH = "application/json-patch+json"
FORM = "application/x-www-form-urlencoded"
# What the CapabilityStatement lists (``format`` and ``patchFormat``).
FORMATS = (FHIR_JSON, FHIR_XML, "json", "xml")
PATCH_FORMATS = (JSON_PATCH, FHIR_JSON, FHIR_XML)

# Media types (and _format shorthands) -> the format they mean.
_JSON_TYPES = {"application/fhir+json", "application/json+fhir", "application/json", "json",
               "text/json"}
_XML_TYPES = {"application/fhir+xml", "application/xml+fhir", "application/xml", "text/xml",
              "xml"}
# Asked for by browsers and generic clients: answer JSON.
_ANY_TYPES = {"*/*", "application/*", "text/html", "html", "text/*"}
_SUPPORTED_FHIR_VERSIONS = {"4.0", "4.0.1"}


@dataclass(frozen=True, slots=True)
class Format:
    """The format of a response: ``json`` or ``xml``, and the media type to label it with."""

    kind: str
    media_type: str
    pretty: bool = False

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; charset=utf-8"


JSON = Format("json", FHIR_JSON)
XML = Format("xml", FHIR_XML)


def _split(value: str) -> tuple[str, dict[str, str]]:
    media, *params = value.split(";")
    parsed = {}
    for param in params:
        key, _, val = param.partition("=")
        parsed[key.strip().lower()] = val.strip().strip('"')
    return media.strip().lower(), parsed


def _from_media(media: str) -> Format | None:
    if media in _JSON_TYPES:
        return Format("json", "application/json" if media == "application/json" else FHIR_JSON)
    if media in _XML_TYPES:
        return Format("xml", "application/xml" if media == "application/xml" else FHIR_XML)
    if media in _ANY_TYPES:
        return JSON
    return None


def response_format(format_param: str | None, accept: str | None, pretty: bool = False) -> Format:
    """Pick the response format from ``_format`` (which wins) or ``Accept``; 406 if none fits."""
    if format_param:
        found = _from_media(_split(format_param)[0])
        if found is None:
            raise CoreError(406, "not-supported",
                            f"_format={format_param!r} is not supported: use json or xml")
        return Format(found.kind, found.media_type, pretty)
    if not accept:
        return Format("json", FHIR_JSON, pretty)
    choices: list[tuple[float, int, Format]] = []
    for index, part in enumerate(accept.split(",")):
        if not part.strip():
            continue
        media, params = _split(part)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        version = params.get("fhirversion")
        if quality <= 0 or (version is not None and version not in _SUPPORTED_FHIR_VERSIONS):
            continue
        found = _from_media(media)
        if found is not None:
            # Prefer explicit types over wildcards at equal quality, then the client's order.
            rank = 0 if media in _ANY_TYPES else 1
            choices.append((quality + rank * 1e-3, -index, found))
    if not choices:
        raise CoreError(406, "not-supported",
                        f"cannot produce any of Accept: {accept!r}; this server speaks "
                        f"{FHIR_JSON} and {FHIR_XML} (FHIR 4.0.1)")
    best = max(choices, key=lambda c: (c[0], c[1]))[2]
    return Format(best.kind, best.media_type, pretty)


def request_format(content_type: str | None) -> str:
    """``json``, ``xml`` or ``json-patch`` for a request body; 415 for anything else."""
    if not content_type:
        return "json"
    media, params = _split(content_type)
    version = params.get("fhirversion")
    if version is not None and version not in _SUPPORTED_FHIR_VERSIONS:
        raise CoreError(415, "not-supported", f"fhirVersion={version} is not supported (4.0)")
    if media == JSON_PATCH:
        return "json-patch"
    if media in _JSON_TYPES:
        return "json"
    if media in _XML_TYPES:
        return "xml"
    raise CoreError(415, "not-supported",
                    f"Content-Type {media!r} is not supported: send {FHIR_JSON} or {FHIR_XML}")


def parse_body(body: bytes, kind: str) -> Any:
    """Parse a request body of the given kind into JSON values (resources as dicts)."""
    if not body.strip():
        raise CoreError(400, "structure", "the request body is empty")
    if kind == "xml":
        from sonobridge.fhir.xml import xml_to_resource

        return xml_to_resource(body)
    try:
        return jsonio.loads_strict(body)
    except jsonio.JSONError as exc:
        raise CoreError(400, "structure", f"malformed JSON: {exc}") from None


def materialize(value: Any) -> Any:
    """Replace embedded ``orjson.Fragment`` bytes by parsed values (for XML and pretty output)."""
    if isinstance(value, orjson.Fragment):
        return jsonio.loads(orjson.dumps(value))  # orjson 3.13 has no .contents
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


def render(body: bytes | dict[str, Any], fmt: Format) -> bytes:
    """Serialise a resource given as stored bytes or as a dict (possibly holding fragments)."""
    if fmt.kind == "json":
        if isinstance(body, bytes):
            return jsonio.dumps(jsonio.loads(body), pretty=True) if fmt.pretty else body
        return jsonio.dumps(materialize(body) if fmt.pretty else body, pretty=fmt.pretty)
    from sonobridge.fhir.xml import resource_to_xml

    resource = jsonio.loads(body) if isinstance(body, bytes) else materialize(body)
    return resource_to_xml(resource, pretty=fmt.pretty)
