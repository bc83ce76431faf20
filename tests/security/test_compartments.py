"""A token's rights bound everything a request touches (security hardening, items 1, 3, 4, 5):
the user's role bounds ``patient/`` scopes; every reference a write touches stays inside the
token's compartment; conditional interactions and chains evaluate only what the token may
read and answer exactly as "no match" otherwise; each historical version is judged by its
own compartment. Each test is named after the finding it guards."""

from __future__ import annotations

import re

import pyotp

from sonobridge.auth.accounts import Client, User
from tests.auth.smart import FHIR, ROOT, bearer, pkce
from tests.dicom_data import cine, to_bytes
from tests.dicomweb.helpers import BOUNDARY, multipart

OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}


def token(smart, scope: str, *, patient: str | None = None, role: str | None = None) -> str:
    client = Client("c1", "Matrix", "public", None, (), scope, None, None, True, False)
    user = User(7, "matrix", role, None, False, False) if role else None
    context = {"patient": patient} if patient else {}
    return smart.auth.tokens.issue(client=client, user=user, scope=scope, audience=FHIR,
                                   issuer=ROOT, context=context, grant="test",
                                   refresh=False)["access_token"]


def get(smart, tok: str, path: str, **params):
    return smart.http.get(path, headers=bearer(tok), params=params or None)


def ids(response) -> set[str]:
    assert response.status_code == 200, response.text
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in response.json().get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"}


# ---------------------------------------------------------------- 1. roles bound patient/ scopes

def test_a_role_bounds_patient_scopes(smart):
    trainee = token(smart, "patient/*.cruds", patient="p1", role="trainee")
    report = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "US"},
              "subject": {"reference": "Patient/p1"}, "conclusion": "malignant"}
    assert smart.http.post("/fhir/DiagnosticReport", json=report,
                           headers=bearer(trainee)).status_code == 403
    patient = {"resourceType": "Patient", "id": "p1", "gender": "male"}
    assert smart.http.put("/fhir/Patient/p1", json=patient,
                          headers=bearer(trainee)).status_code == 403
    # A trainee reads teaching material only (issue 16), even in its own patient context.
    assert get(smart, trainee, "/fhir/Patient/p1").status_code == 403
    assert get(smart, trainee, "/fhir/Observation/o1").status_code == 403
    answer = {"resourceType": "QuestionnaireResponse", "status": "completed",
              "subject": {"reference": "Patient/p1"}}
    assert smart.http.post("/fhir/QuestionnaireResponse", json=answer,
                           headers=bearer(trainee)).status_code == 201


def test_a_system_admin_reads_no_clinical_data_even_with_a_patient_scope(smart):
    admin = token(smart, "patient/*.cruds", patient="p1", role="system-admin")
    assert get(smart, admin, "/fhir/Patient/p1/$everything").status_code == 403
    assert get(smart, admin, "/fhir/Observation/o1").status_code == 403
    stored = smart.http.post("/dicomweb/studies", content=multipart([to_bytes(cine(
        study="2.25.3301", patient_id="PID-ADM", frames=1))]), headers={
        **bearer(token(smart, "system/*.cruds")),
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'})
    assert stored.status_code == 200, stored.text
    assert get(smart, admin, "/dicomweb/studies/2.25.3301/series").status_code == 403


def test_the_patient_picker_is_only_for_roles_that_read_patients(smart):
    scope = "launch/patient patient/*.rs"
    client, _ = smart.app(scope)
    secret = smart.user("admin1", "system-admin")  # administrators need a second factor
    smart.user("sono9", "sonographer")
    _, challenge = pkce()
    params = smart.authorize_params(client.client_id, scope, challenge)
    page = smart.login(params, "admin1", otp=pyotp.TOTP(secret).now()).page
    assert 'value="p1"' not in page and "Li Na" not in page  # no names listed
    typed = smart.consent(params, page, patient_id="p1")  # nor any typed id taken
    assert typed.status == 200 and typed.redirect is None
    params = smart.authorize_params(client.client_id, scope, challenge)
    page = smart.login(params, "sono9").page
    assert 'value="p1"' in page
    assert smart.consent(params, page, patient_id="no-such-patient").redirect is None


def test_a_launch_handle_is_single_use(smart):
    scope = "launch patient/*.rs"
    client, _ = smart.app(scope)
    smart.user("sono8", "sonographer")
    handle = smart.accounts.create_launch({"patient": "p1"}, smart.accounts.user("sono8"))
    assert smart.user_token(client.client_id, "sono8", scope, launch=handle)["patient"] == "p1"
    _, challenge = pkce()
    params = smart.authorize_params(client.client_id, scope, challenge, launch=handle)
    again = smart.login(params, "sono8")
    assert again.redirect and "error=invalid_request" in again.redirect


# ---------------------------------------------------------------- 3. writes stay in the record

def test_a_write_may_not_point_into_another_patients_record(smart):
    t = token(smart, "patient/*.cruds", patient="p1")
    both = {**OBS, "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Patient/p2"}]}
    r = smart.http.post("/fhir/Observation", json=both, headers=bearer(t))
    assert r.status_code == 403, r.text
    system = token(smart, "system/*.rs")
    assert ids(get(smart, system, "/fhir/Patient/p2/$everything")) >= {"Patient/p2"}
    assert not any(i.startswith("Observation/") and i not in ("Observation/o2",)
                   for i in ids(get(smart, system, "/fhir/Patient/p2/Observation")))
    ok = {**OBS, "subject": {"reference": "Patient/p1"},
          "performer": [{"reference": "Practitioner/pr1"}]}  # not a compartment resource
    assert smart.http.post("/fhir/Observation", json=ok, headers=bearer(t)).status_code == 201


def test_an_update_may_not_take_another_patient_out_of_a_group(smart):
    system = token(smart, "system/*.cruds")
    group = {"resourceType": "Group", "id": "g1", "type": "person", "actual": True,
             "member": [{"entity": {"reference": "Patient/p1"}},
                        {"entity": {"reference": "Patient/p2"}}]}
    assert smart.http.put("/fhir/Group/g1", json=group, headers=bearer(system)
                          ).status_code in (200, 201)
    t = token(smart, "patient/*.cruds", patient="p1")
    only_mine = {**group, "member": group["member"][:1]}
    r = smart.http.put("/fhir/Group/g1", json=only_mine, headers=bearer(t))
    assert r.status_code == 403, r.text
    kept = get(smart, system, "/fhir/Group/g1").json()
    assert len(kept["member"]) == 2


# ---------------------------------------------------------------- 4. no cross-patient oracles

def _seed_identified(smart):
    system = token(smart, "system/*.cruds")
    for oid, patient in (("oa", "p1"), ("ob", "p2")):
        body = {**OBS, "id": oid, "subject": {"reference": f"Patient/{patient}"},
                "identifier": [{"system": "urn:x", "value": oid}],
                "valueString": f"secret-{patient}"}
        assert smart.http.put(f"/fhir/Observation/{oid}", json=body,
                              headers=bearer(system)).status_code in (200, 201)


def test_conditional_delete_on_another_patients_data_answers_as_no_match(smart):
    _seed_identified(smart)
    t = token(smart, "patient/*.cruds", patient="p1")
    theirs = smart.http.delete("/fhir/Observation", params={"identifier": "urn:x|ob"},
                               headers=bearer(t))
    nothing = smart.http.delete("/fhir/Observation", params={"identifier": "urn:x|none"},
                                headers=bearer(t))
    assert (theirs.status_code, theirs.json()) == (nothing.status_code, nothing.json())
    assert get(smart, token(smart, "system/*.rs"), "/fhir/Observation/ob").status_code == 200


def test_conditional_create_ignores_another_patients_match(smart):
    _seed_identified(smart)
    t = token(smart, "patient/*.cruds", patient="p1")
    body = {**OBS, "subject": {"reference": "Patient/p1"}}
    theirs = smart.http.post("/fhir/Observation", json=body, headers={
        **bearer(t), "If-None-Exist": "identifier=urn:x|ob"})
    nothing = smart.http.post("/fhir/Observation", json=body, headers={
        **bearer(t), "If-None-Exist": "identifier=urn:x|none"})
    assert theirs.status_code == nothing.status_code == 201


def test_conditional_update_and_patch_see_only_the_callers_data(smart):
    _seed_identified(smart)
    t = token(smart, "patient/*.cruds", patient="p1")
    patch = [{"op": "add", "path": "/valueString", "value": "x"}]
    for condition in ("urn:x|ob", "urn:x|none"):
        r = smart.http.patch("/fhir/Observation", params={"identifier": condition},
                             json=patch, headers={**bearer(t),
                                                  "Content-Type": "application/json-patch+json"})
        assert r.status_code == 404, (condition, r.text)


def test_conditional_references_in_a_transaction_see_only_the_callers_data(smart):
    _seed_identified(smart)
    t = token(smart, "patient/*.cruds", patient="p1")
    answers = []
    for condition in ("Observation?identifier=urn:x|ob", "Observation?identifier=urn:x|none"):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
            "resource": {**OBS, "subject": {"reference": "Patient/p1"},
                         "derivedFrom": [{"reference": condition}]},
            "request": {"method": "POST", "url": "Observation"}}]}
        r = smart.http.post("/fhir", json=bundle, headers=bearer(t))
        answers.append((r.status_code, r.json()["issue"][0]["code"]))
    assert answers[0] == answers[1] == (400, "not-found")


def test_chains_and_has_evaluate_only_what_the_token_may_read(smart):
    _seed_identified(smart)
    system = token(smart, "system/*.cruds")
    mine = {**OBS, "id": "oc", "subject": {"reference": "Patient/p1"},
            "derivedFrom": [{"reference": "Observation/ob"}]}
    assert smart.http.put("/fhir/Observation/oc", json=mine, headers=bearer(system)
                          ).status_code == 201
    t = token(smart, "patient/*.rs", patient="p1")
    chained = get(smart, t, "/fhir/Observation", **{
        "derived-from:Observation.value-string": "secret-p2"})
    assert ids(chained) == set()  # an oracle on ob's value otherwise
    assert ids(get(smart, system, "/fhir/Observation", **{
        "derived-from:Observation.value-string": "secret-p2"})) == {"Observation/oc"}
    has = get(smart, t, "/fhir/Patient", **{"_has:Observation:subject:value-string":
                                            "secret-p2"})
    assert ids(has) == set()


def test_query_restricted_scopes_hold_in_searches_of_several_types(smart):
    t = token(smart, "patient/Observation.rs?category=laboratory patient/Patient.rs",
              patient="p1")
    found = ids(get(smart, t, "/fhir", _type="Observation,Patient"))
    assert found == {"Observation/o1", "Patient/p1"}  # o3 is vital-signs
    everything = ids(get(smart, t, "/fhir/Patient/p1/$everything"))
    assert "Observation/o3" not in everything and "Observation/o1" in everything


def test_a_patient_and_a_user_scope_never_widen_each_other(smart):
    t = token(smart, "patient/Observation.rs?category=laboratory user/Observation.rs?code=x",
              patient="p1", role="remote-expert")
    assert ids(get(smart, t, "/fhir/Observation")) == {"Observation/o1"}  # not o2 (p2's lab)


# ---------------------------------------------------------------- 5. history by its compartment

def test_history_by_each_versions_own_compartment(smart):
    system = token(smart, "system/*.cruds")
    body = {**OBS, "id": "om", "subject": {"reference": "Patient/p2"}, "valueString": "B's"}
    assert smart.http.put("/fhir/Observation/om", json=body, headers=bearer(system)
                          ).status_code == 201
    moved = {**body, "subject": {"reference": "Patient/p1"}, "valueString": "A's"}
    assert smart.http.put("/fhir/Observation/om", json=moved, headers=bearer(system)
                          ).status_code == 200
    t = token(smart, "patient/*.rs", patient="p1")
    assert get(smart, t, "/fhir/Observation/om/_history/2").status_code == 200
    assert get(smart, t, "/fhir/Observation/om/_history/1").status_code == 403
    history = get(smart, t, "/fhir/Observation/om/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2"]
    typed = get(smart, t, "/fhir/Observation/_history").json()
    assert "B's" not in str(typed)


# ---------------------------------------------------------------- 10. login CSRF, logout by GET

def test_a_login_posted_from_another_site_opens_no_session(smart):
    scope = "launch/patient patient/*.rs"
    client, _ = smart.app(scope)
    smart.user("sono10", "sonographer")
    _, challenge = pkce()
    params = smart.authorize_params(client.client_id, scope, challenge)
    smart.http.cookies.clear()
    forged = smart.http.post("/auth/authorize", data={  # no form, no cookie: a forged post
        **params, "_action": "login", "username": "sono10", "password": "Ultra-Sound-2026"},
        follow_redirects=False)
    assert forged.status_code == 200 and "expired" in forged.text
    assert "sonobridge_session" not in smart.http.cookies
    assert "sonobridge_session" in str(smart.login(params, "sono10").status) or \
        "sonobridge_session" in smart.http.cookies  # the real form works


def test_logout_by_get_only_shows_a_button(smart):
    scope = "launch/patient patient/*.rs"
    client, _ = smart.app(scope)
    smart.user("sono11", "sonographer")
    _, challenge = pkce()
    params = smart.authorize_params(client.client_id, scope, challenge)
    smart.login(params, "sono11")
    session = smart.http.cookies.get("sonobridge_session")
    assert session
    page = smart.http.get("/auth/logout")
    assert page.status_code == 200 and 'method="post"' in page.text
    again = smart.http.get("/auth/authorize", params=params)
    assert "_csrf" in again.text  # still signed in: a GET signs nobody out
    out = smart.http.post("/auth/logout")
    assert out.status_code == 200
    assert 'name="username"' in smart.http.get("/auth/authorize", params=params).text


# ---------------------------------------------------------------- 7, 13. the authorization server

def test_an_unknown_scope_at_authorize_is_an_oauth_error_not_a_500(smart):
    client, _ = smart.app("launch/patient patient/*.rs")
    _, challenge = pkce()
    params = smart.authorize_params(client.client_id, "patient/*.xyz", challenge)
    r = smart.http.get("/auth/authorize", params=params, follow_redirects=False)
    assert r.status_code in (302, 400), r.text[:300]
    if r.status_code == 302:
        assert "error=invalid_scope" in r.headers["location"]


def test_a_public_client_may_not_register_system_scopes(smart):
    r = smart.http.post("/auth/register", json={
        "client_name": "Rogue", "token_endpoint_auth_method": "none",
        "redirect_uris": ["https://rogue.example.org/cb"], "scope": "system/*.cruds"})
    assert r.status_code == 400 and "public client" in r.text


def test_tokens_with_odd_claims_are_401_not_500(smart):
    from joserfc import jwt

    signing = smart.auth.keys.current()
    now = int(__import__("time").time())
    base = {"iss": ROOT, "aud": FHIR, "exp": now + 300, "iat": now, "jti": "j-odd",
            "sub": "u", "client_id": "c", "scope": "patient/*.rs"}
    for claims in ({**base, "patient": ["p1", "p2"]}, {**base, "nbf": now + 3600}):
        token = jwt.encode({"alg": "RS256", "kid": signing.kid, "typ": "at+jwt"}, claims,
                           signing.key)
        r = smart.http.get("/fhir/Observation/o1", headers=bearer(token))
        assert r.status_code == 401, (claims, r.text)


def test_passwords_need_length_and_must_not_be_common(smart):
    from sonobridge.auth.passwords import PasswordPolicyError, check_policy

    for weak in ("Password123", "Password123!", "Qwerty123456!", "Sonobridge2026!"):
        try:
            check_policy(weak, "someone")
        except PasswordPolicyError:
            continue
        raise AssertionError(f"{weak!r} was accepted")
    check_policy("Ultra-Sound-2026", "someone")


def test_failed_logins_answer_alike_for_known_and_unknown_names(smart):
    scope = "launch/patient patient/*.rs"
    client, _ = smart.app(scope)
    smart.user("sono12", "sonographer")
    _, challenge = pkce()
    params = smart.authorize_params(client.client_id, scope, challenge)
    pages = {}
    for name in ("sono12", "nobody-here"):
        for _ in range(6):
            last = smart.login(params, name, password="Wrong-Password-9")
        # The login form carries a fresh random CSRF value; everything else must match.
        pages[name] = re.sub(r'name="_login" value="[^"]*"', "", last.page.replace(name, "NAME"))
    assert pages["sono12"] == pages["nobody-here"]
    assert "wait a moment" in pages["sono12"]


def test_a_remembered_study_decision_covers_that_study_only(smart, monkeypatch):
    """The frame path remembers a token's right to read a study (one decision per burst of
    frame requests), never another study's."""
    system = token(smart, "system/*.cruds")
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    mine, theirs = (cine(study="2.25.9101", patient_id="PID-P1", frames=3),
                    cine(study="2.25.9102", patient_id="PID-P2", frames=1))
    for ds in (mine, theirs):
        assert smart.http.post("/dicomweb/studies", content=multipart([to_bytes(ds)]), headers={
            **bearer(system), "Content-Type": content_type}).status_code == 200
    for study, patient in (("2.25.9101", "p1"), ("2.25.9102", "p2")):
        imaging = smart.http.get(f"/fhir/ImagingStudy/{study}", headers=bearer(system)).json()
        imaging["subject"] = {"reference": f"Patient/{patient}"}
        assert smart.http.put(f"/fhir/ImagingStudy/{study}", json=imaging,
                              headers=bearer(system)).status_code in (200, 201)
    calls = []
    original = smart.core.access.studies
    monkeypatch.setattr(smart.core.access, "studies",
                        lambda *a, **k: calls.append(a) or original(*a, **k))
    t = token(smart, "patient/*.rs", patient="p1")
    accept = {"Accept": 'multipart/related; type="application/octet-stream"; '
                        'transfer-syntax=*', **bearer(t)}
    base = f"/dicomweb/studies/2.25.9101/series/{mine.SeriesInstanceUID}/instances/" \
           f"{mine.SOPInstanceUID}/frames"
    for n in (1, 2, 3, 1, 2, 3):
        assert smart.http.get(f"{base}/{n}", headers=accept).status_code == 200
    assert len(calls) == 1
    other = f"/dicomweb/studies/2.25.9102/series/{theirs.SeriesInstanceUID}/instances/" \
            f"{theirs.SOPInstanceUID}/frames/1"
    assert smart.http.get(other, headers=accept).status_code in (403, 404)
