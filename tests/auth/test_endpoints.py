"""Discovery, JWKS, introspection (RFC 7662), revocation (RFC 7009), registration (RFC 7591),
key rotation, and the audit trail those produce."""

from __future__ import annotations

import base64

import pytest
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from sonobridge.core.audit import verify
from tests.auth.smart import FHIR, ROOT, bearer

SCOPE = "launch/patient patient/*.rs openid fhirUser offline_access"


def test_smart_configuration(smart):
    r = smart.http.get("/fhir/.well-known/smart-configuration",
                       headers={"Origin": "https://app.example.org"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    conf = r.json()
    assert conf["issuer"] == ROOT
    assert conf["authorization_endpoint"] == f"{ROOT}/auth/authorize"
    assert conf["token_endpoint"] == f"{ROOT}/auth/token"
    assert conf["jwks_uri"] == f"{ROOT}/auth/jwks"
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert conf["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert {"authorization_code", "client_credentials"} <= set(conf["grant_types_supported"])
    assert {"launch-ehr", "launch-standalone", "client-public", "permission-v2",
            "context-standalone-patient"} <= set(conf["capabilities"])
    for key in ("introspection_endpoint", "revocation_endpoint", "scopes_supported",
                "token_endpoint_auth_methods_supported"):
        assert conf[key]
    oidc = smart.http.get("/.well-known/openid-configuration").json()
    assert oidc["issuer"] == ROOT and oidc["jwks_uri"] == conf["jwks_uri"]
    preflight = smart.http.options("/auth/token", headers={
        "Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"]


def test_capability_statement_names_the_oauth_endpoints(smart):
    rest = smart.http.get("/fhir/metadata").json()["rest"][0]
    security = rest["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    ext = security["extension"][0]
    assert ext["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris["authorize"] == f"{ROOT}/auth/authorize"
    assert uris["token"] == f"{ROOT}/auth/token"


def test_jwks_verifies_tokens_and_rotation_keeps_old_keys(smart):
    token = smart.system_token("system/*.rs")
    keys = KeySet.import_key_set(smart.http.get("/auth/jwks").json())
    assert jwt.decode(token, keys, algorithms=["RS256"]).claims["aud"] == FHIR
    assert all("d" not in k.as_dict() for k in keys.keys)  # public keys only
    old_kid = smart.auth.keys.current().kid
    smart.auth.keys.rotate()
    published = {k["kid"] for k in smart.http.get("/auth/jwks").json()["keys"]}
    assert old_kid in published and len(published) == 2
    assert smart.http.get("/fhir/Patient/p1", headers=bearer(token)).status_code == 200
    fresh = smart.system_token("system/*.rs")
    assert jws.extract_compact(fresh.encode()).protected["kid"] != old_kid


def _introspect(smart, token: str, auth: tuple[str, str]):
    return smart.http.post("/auth/introspect", data={"token": token}, auth=auth)


def test_introspection_and_revocation(smart):
    resource_server = smart.symmetric("system/*.rs introspection")
    bystander = smart.symmetric("system/*.rs")  # confidential, but no resource server
    client, _ = smart.app(SCOPE)
    smart.user("sono1", "sonographer", fhir_user="Practitioner/pr1")
    body = smart.user_token(client.client_id, "sono1", SCOPE, patient="p1")
    active = _introspect(smart, body["access_token"], resource_server)
    assert active.status_code == 200 and active.headers["cache-control"] == "no-store"
    info = active.json()
    assert info["active"] is True and info["client_id"] == client.client_id
    assert info["patient"] == "p1" and info["scope"] == SCOPE
    assert info["fhirUser"] == "Practitioner/pr1" and info["exp"] > 0
    assert _introspect(smart, "garbage", resource_server).json() == {"active": False}
    assert _introspect(smart, body["access_token"], bystander).json() == {"active": False}
    unauthenticated = smart.http.post("/auth/introspect", data={"token": body["access_token"]})
    assert unauthenticated.status_code in (400, 401)
    # RFC 7009: a public client revokes its own token
    revoked = smart.http.post("/auth/revoke", data={"token": body["access_token"],
                                                    "client_id": client.client_id})
    assert revoked.status_code == 200
    assert smart.http.get("/fhir/Observation/o1",
                          headers=bearer(body["access_token"])).status_code == 401
    assert _introspect(smart, body["access_token"], resource_server).json()["active"] is False
    refresh = smart.http.post("/auth/token", data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
        "client_id": client.client_id})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"


def test_revoking_a_refresh_token(smart):
    client, _ = smart.app(SCOPE)
    smart.user("sono2", "sonographer")
    body = smart.user_token(client.client_id, "sono2", SCOPE, patient="p1")
    r = smart.http.post("/auth/revoke", data={"token": body["refresh_token"],
                                              "token_type_hint": "refresh_token",
                                              "client_id": client.client_id})
    assert r.status_code == 200
    assert smart.http.get("/fhir/Observation/o1",
                          headers=bearer(body["access_token"])).status_code == 401


def test_dynamic_registration_waits_for_approval(smart):
    r = smart.http.post("/auth/register", json={
        "client_name": "Viewer", "redirect_uris": ["https://viewer.example.org/cb"],
        "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"],
        "scope": "launch/patient patient/*.rs"})
    assert r.status_code == 201, r.text
    client_id = r.json()["client_id"]
    assert "client_secret" not in r.json()
    params = {"response_type": "code", "client_id": client_id, "state": "s",
              "redirect_uri": "https://viewer.example.org/cb", "scope": "patient/*.rs",
              "aud": FHIR, "code_challenge": "x" * 43, "code_challenge_method": "S256"}
    waiting = smart.http.get("/auth/authorize", params=params, follow_redirects=False)
    assert waiting.status_code == 400 and "approve" in waiting.text
    smart.accounts.set_client(client_id, approved=True)
    ready = smart.http.get("/auth/authorize", params=params, follow_redirects=False)
    assert ready.status_code == 200 and 'name="username"' in ready.text
    bad = smart.http.post("/auth/register", content=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client_metadata"
    insecure = smart.http.post("/auth/register", json={
        "client_name": "Bad", "redirect_uris": ["http://evil.example.org/cb"],
        "token_endpoint_auth_method": "none", "scope": "patient/*.rs"})
    assert insecure.status_code == 400


# ---------------------------------------------------------------------- audit trail

def _events(smart) -> list[dict]:
    smart.core.audit.flush()
    auditor = smart.auth.tokens.issue(
        client=smart.accounts.add_client("Audit viewer", "confidential-symmetric",
                                         "user/AuditEvent.rs")[0],
        user=smart.accounts.add_user("auditor1", "audit-admin", "Audit-Trail-2026"),
        scope="user/AuditEvent.rs", audience=FHIR, issuer=ROOT, context={}, grant="test",
        refresh=False)["access_token"]
    r = smart.http.get("/fhir/AuditEvent", params={"_count": "500"},
                       headers=bearer(auditor))
    assert r.status_code == 200
    return [e["resource"] for e in r.json().get("entry", [])]


def test_every_access_is_audited(smart):
    token = smart.system_token("system/*.cruds")
    smart.http.get("/fhir/Observation/o1", headers=bearer(token))
    smart.http.get("/fhir/Observation", params={"subject": "Patient/p1"},
                   headers=bearer(token))
    created = smart.http.post("/fhir/Observation", headers=bearer(token), json={
        "resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/p2"}})
    assert created.status_code == 201
    smart.http.get("/fhir/AuditEvent", headers=bearer(token))  # refused: audited too
    events = _events(smart)
    by = {(e["subtype"][0]["code"], e["action"]): e for e in events}
    read = by[("read", "R")]
    assert read["outcome"] == "0"
    assert {"reference": "Observation/o1"} in [x.get("what") for x in read["entity"]]
    assert {"reference": "Patient/p1"} in [x.get("what") for x in read["entity"]]
    assert read["agent"][0]["network"]["address"] == "testclient"
    queries = [base64.b64decode(x["query"]).decode() for e in events
               if e["subtype"][0]["code"] == "search-type" and e["outcome"] == "0"
               for x in e.get("entity", []) if "query" in x]
    assert "subject=Patient%2Fp1" in queries
    create = by[("create", "C")]
    assert {"reference": "Patient/p2"} in [x.get("what") for x in create["entity"]]
    refused = [e for e in events if e["outcome"] == "4"]
    assert refused and "403" in refused[0]["outcomeDesc"]
    tokens = [e for e in events if e["subtype"][0]["code"] == "token-issue"]
    assert tokens and tokens[0]["type"]["code"] == "110114"


def test_logins_are_audited_including_failures(smart):
    client, _ = smart.app(SCOPE)
    smart.user("sono3", "sonographer")
    from tests.auth.smart import pkce

    params = smart.authorize_params(client.client_id, SCOPE, pkce()[1])
    smart.login(params, "sono3", password="Wrong-Password-9")
    smart.login(params, "sono3")
    logins = [e for e in _events(smart) if e["subtype"][0]["code"] == "110122"]
    assert sorted(e["outcome"] for e in logins) == ["0", "4"]
    assert all(e["agent"][0]["who"].get("display") == "sono3" for e in logins)


def test_audit_chain_detects_edits_and_deletions(smart):
    from sqlalchemy import select, update

    from sonobridge.store.tables import resource_versions as V
    from sonobridge.store.tables import resources as R

    token = smart.system_token("system/*.rs")
    for oid in ("o1", "o2", "o3"):
        smart.http.get(f"/fhir/Observation/{oid}", headers=bearer(token))
    smart.core.audit.flush()
    result = verify(smart.core.store)
    assert result.problems == [] and result.events >= 4
    # edit one stored event behind the server's back
    with smart.core.engine.begin() as conn:
        rid = conn.execute(select(R.c.rid).where(R.c.res_type == "AuditEvent")
                           .order_by(R.c.rid).limit(1).offset(1)).scalar_one()
        conn.execute(update(V).where(V.c.rid == rid).values(
            content=b'{"resourceType":"AuditEvent","id":"forged"}'))
    damaged = verify(smart.core.store)
    assert len(damaged.problems) == 1 and "changed" in damaged.problems[0]
    # API: AuditEvents cannot be changed or deleted
    admin = smart.system_token("system/*.cruds")
    some = smart.http.get("/fhir/AuditEvent", headers=bearer(admin))
    assert some.status_code == 403  # not even a system/*.cruds client reads the audit trail


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "PUT"])
def test_audit_events_cannot_be_changed_through_the_api(smart, method):
    smart.system_token("system/*.rs")
    smart.core.audit.flush()
    from sqlalchemy import select

    from sonobridge.store.tables import resources as R

    with smart.core.engine.connect() as conn:
        res_id = conn.execute(select(R.c.res_id).where(R.c.res_type == "AuditEvent")
                              .limit(1)).scalar_one()
    admin = smart.auth.tokens.issue(
        client=smart.accounts.add_client("x", "confidential-symmetric", "user/*.cruds")[0],
        user=smart.accounts.add_user("aud2", "audit-admin", "Audit-Trail-2026"),
        scope="user/*.cruds", audience=FHIR, issuer=ROOT, context={}, grant="t",
        refresh=False)["access_token"]
    stored = smart.http.get(f"/fhir/AuditEvent/{res_id}", headers=bearer(admin))
    assert stored.status_code == 200
    body = {**stored.json(), "outcome": "8"}
    r = smart.http.request(method, f"/fhir/AuditEvent/{res_id}", headers={
        **bearer(admin), "Content-Type": "application/json-patch+json"
        if method == "PATCH" else "application/fhir+json"},
        json=[] if method == "PATCH" else body)
    assert r.status_code in (403, 405), r.text


def test_audit_events_may_be_recorded_but_never_changed(client):
    """IHE RESTful ATNA: sources may create AuditEvents; nobody may change one."""
    event = {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded":
             "2026-11-27T10:00:00Z", "agent": [{"requestor": True}],
             "source": {"observer": {"display": "modality"}}}
    created = client.post("/fhir/AuditEvent", json=event)
    assert created.status_code == 201
    res_id = created.json()["id"]
    assert client.put(f"/fhir/AuditEvent/{res_id}", json={**created.json(), "outcome": "8"}
                      ).status_code == 405
    assert client.delete(f"/fhir/AuditEvent/{res_id}").status_code == 405
    assert client.patch(f"/fhir/AuditEvent/{res_id}", content=b"[]", headers={
        "Content-Type": "application/json-patch+json"}).status_code == 405
    assert client.get(f"/fhir/AuditEvent/{res_id}").json()["recorded"] == event["recorded"]
