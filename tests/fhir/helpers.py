"""Small helpers for FHIR REST tests."""

from __future__ import annotations

from typing import Any

import orjson

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def body(response: Any) -> Any:
    return orjson.loads(response.content)


def post(client: Any, path: str, resource: dict, **headers: str) -> Any:
    return client.post(path, content=orjson.dumps(resource), headers={**FHIR_JSON, **headers})


def put(client: Any, path: str, resource: dict, **headers: str) -> Any:
    return client.put(path, content=orjson.dumps(resource), headers={**FHIR_JSON, **headers})


def outcome_codes(response: Any) -> list[str]:
    data = body(response)
    assert data["resourceType"] == "OperationOutcome", data
    return [issue["code"] for issue in data["issue"]]


def expressions(response: Any) -> list[str]:
    data = body(response)
    return [e for issue in data["issue"] for e in issue.get("expression", [])]


def without_meta(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "meta"}
