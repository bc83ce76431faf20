"""``$validate`` under authorization (real SMART tokens): an instance is validated only when the
token may read it, the same answer for "forbidden" as for a read; no token, no answer."""

from __future__ import annotations

from typing import Any

from sonobridge.auth.accounts import Client
from tests.auth.conftest import secure_settings, smart  # noqa: F401 - fixtures, shared
from tests.auth.smart import FHIR, ROOT, bearer


def token(world: Any, scope: str, *, patient: str | None = None) -> str:
    client = Client("c1", "Validator", "public", None, (), scope, None, None, True, False)
    context = {"patient": patient} if patient else {}
    issued: dict[str, Any] = world.auth.tokens.issue(
        client=client, user=None, scope=scope, audience=FHIR, issuer=ROOT, context=context,
        grant="test", refresh=False)
    return str(issued["access_token"])


def test_validate_follows_read_rights(smart: Any) -> None:  # noqa: F811
    p1 = token(smart, "patient/*.rs", patient="p1")
    own = smart.http.get("/fhir/Observation/o1/$validate", headers=bearer(p1))
    assert own.status_code == 200, own.text
    assert own.json()["issue"][0]["severity"] == "information"
    other = smart.http.get("/fhir/Observation/o2/$validate", headers=bearer(p1))
    read = smart.http.get("/fhir/Observation/o2", headers=bearer(p1))
    assert other.status_code == read.status_code and other.status_code in (403, 404)
    assert "finding" not in other.text  # nothing of o2 leaks
    assert smart.http.get("/fhir/Observation/o1/$validate").status_code == 401


def test_validate_a_body_needs_a_token(smart: Any) -> None:  # noqa: F811
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    assert smart.http.post("/fhir/Observation/$validate", json=obs).status_code == 401
    system = token(smart, "system/Observation.rs")
    r = smart.http.post("/fhir/Observation/$validate", json=obs, headers=bearer(system))
    assert r.status_code == 200 and r.json()["issue"][0]["severity"] == "information"
