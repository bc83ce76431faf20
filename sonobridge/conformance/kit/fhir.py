"""The FHIR R4 suite, driven by the server's CapabilityStatement: for each declared resource type
a read of a resource the kit created, a search by ``_id`` and by every declared parameter, and
its history; then conditional create, a transaction, ``_include``, paging links, and errors as
OperationOutcome. Everything the kit creates carries one tag for the run and is deleted after."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import httpx

from sonobridge.conformance.kit.http import expect_status, json_body
from sonobridge.conformance.kit.model import (
    Check,
    Context,
    Failed,
    Group,
    Requirement,
    Skipped,
    Suite,
)
from sonobridge.conformance.kit.model import TestDef as T

R4 = "https://hl7.org/fhir/R4"
FHIR_JSON = "application/fhir+json"
TAG_SYSTEM = "https://sonobridge.org/fhir/CodeSystem/conformance-kit"
HEADERS = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
# Types the kit does not create: creating them starts work on the server (a Subscription
# notifies, a Bundle of type transaction is not a stored resource), or their minimal form is
# a definition the server may compile.
NOT_CREATED = {"Subscription", "Bundle", "StructureDefinition", "SearchParameter",
               "ImplementationGuide", "OperationDefinition", "CapabilityStatement",
               "SubscriptionTopic", "Parameters"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def minimal(kind: str, patient: str | None) -> dict[str, Any]:
    """The smallest valid R4 resource of ``kind`` the kit knows (R4 cardinalities 1..*)."""
    subject = {"reference": patient} if patient else {"display": "kit"}
    code = {"text": "conformance kit"}
    known: dict[str, dict[str, Any]] = {
        "Observation": {"status": "final", "code": code, "subject": subject},
        "DiagnosticReport": {"status": "final", "code": code, "subject": subject},
        "ServiceRequest": {"status": "active", "intent": "order", "subject": subject,
                           "code": code},
        "ImagingStudy": {"status": "available", "subject": subject},
        "Encounter": {"status": "finished", "subject": subject, "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"}},
        "Task": {"status": "requested", "intent": "order", "for": subject},
        "Appointment": {"status": "proposed", "participant": [
            {"status": "needs-action", "actor": subject}]},
        "Communication": {"status": "completed", "subject": subject},
        "QuestionnaireResponse": {"status": "completed", "subject": subject},
        "Questionnaire": {"status": "draft"},
        "Measure": {"status": "draft"},
        "MeasureReport": {"status": "complete", "type": "summary",
                          "measure": "http://example.org/Measure/kit",
                          "period": {"start": "2024-01-01"}},
        "Endpoint": {"status": "active", "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "hl7-fhir-rest"}, "payloadType": [code], "address": "http://example.org"},
        "AuditEvent": {"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                                "code": "rest"}, "recorded": _now(),
                       "agent": [{"requestor": True, "who": {"display": "kit"}}],
                       "source": {"observer": {"display": "kit"}}},
        "Consent": {"status": "active", "scope": code, "category": [code], "patient": subject},
        "DocumentReference": {"status": "current", "subject": subject, "content": [
            {"attachment": {"contentType": "text/plain", "data": "a2l0"}}]},
        "Binary": {"contentType": "text/plain", "data": "a2l0"},
        "Condition": {"subject": subject, "code": code},
        "Procedure": {"status": "completed", "subject": subject, "code": code},
        "Media": {"status": "completed", "subject": subject,
                  "content": {"contentType": "image/png"}},
        "RelatedPerson": {"patient": subject},
        "Group": {"type": "person", "actual": True},
        "List": {"status": "current", "mode": "working"},
        "CarePlan": {"status": "draft", "intent": "plan", "subject": subject},
        "Composition": {"status": "final", "type": code, "date": _now(), "title": "kit",
                        "author": [{"display": "kit"}], "subject": subject},
        "ValueSet": {"status": "draft"},
        "CodeSystem": {"status": "draft", "content": "not-present"},
        "Schedule": {"actor": [subject]},
        "AllergyIntolerance": {"patient": subject, "code": code},
        "MedicationRequest": {"status": "active", "intent": "order", "subject": subject,
                              "medicationCodeableConcept": code},
        "Provenance": {"target": [subject], "recorded": _now(),
                       "agent": [{"who": {"display": "kit"}}]},
        "Flag": {"status": "active", "code": code, "subject": subject},
        "Account": {"status": "active"},
        "ActivityDefinition": {"status": "draft"},
        "ChargeItemDefinition": {"status": "draft", "url": "http://example.org/kit"},
        "ConceptMap": {"status": "draft"},
        "ExampleScenario": {"status": "draft"},
        "PlanDefinition": {"status": "draft"},
        "ResearchStudy": {"status": "active"},
        "GuidanceResponse": {"status": "success", "moduleUri": "http://example.org/kit"},
        "CommunicationRequest": {"status": "active", "subject": subject},
        "DetectedIssue": {"status": "final", "patient": subject},
        "Invoice": {"status": "draft", "subject": subject},
        "MedicationDispense": {"status": "completed", "medicationCodeableConcept": code,
                               "subject": subject},
        "VerificationResult": {"status": "attested"},
        "TestScript": {"status": "draft", "name": "kit", "url": "http://example.org/kit"},
        "TerminologyCapabilities": {"status": "draft", "date": _now(), "kind": "instance"},
        "RequestGroup": {"status": "draft", "intent": "proposal", "subject": subject},
        "GraphDefinition": {"status": "draft", "name": "kit", "start": "Patient"},
        "AdverseEvent": {"actuality": "actual", "subject": subject},
        "BodyStructure": {"patient": subject},
        "ClinicalImpression": {"status": "completed", "subject": subject},
        "DeviceRequest": {"status": "active", "intent": "order", "codeCodeableConcept": code,
                          "subject": subject},
        "EpisodeOfCare": {"status": "active", "patient": subject},
        "Goal": {"lifecycleStatus": "active", "description": code, "subject": subject},
        "MedicationAdministration": {"status": "completed", "medicationCodeableConcept": code,
                                     "subject": subject, "effectiveDateTime": _now()},
        "MedicationStatement": {"status": "active", "medicationCodeableConcept": code,
                                "subject": subject},
        "NutritionOrder": {"status": "active", "intent": "order", "patient": subject,
                           "dateTime": _now()},
        "RiskAssessment": {"status": "final", "subject": subject},
        "FamilyMemberHistory": {"status": "completed", "patient": subject,
                                "relationship": code},
        "Immunization": {"status": "completed", "vaccineCode": code, "patient": subject,
                         "occurrenceDateTime": _now()},
        "Basic": {"code": code},
        "Substance": {"code": code},
        "ObservationDefinition": {"code": code},
        "DeviceMetric": {"type": code, "category": "measurement"},
        "Library": {"status": "draft", "type": code},
        "OperationOutcome": {"issue": [{"severity": "information", "code": "informational"}]},
        "SupplyRequest": {"quantity": {"value": 1}, "itemCodeableConcept": code},
        "MessageHeader": {"eventUri": "http://example.org/kit",
                          "source": {"endpoint": "http://example.org/kit"}},
        "NamingSystem": {"name": "kit", "status": "draft", "kind": "identifier", "date": _now(),
                         "uniqueId": [{"type": "uri", "value": "http://example.org/kit"}]},
        "MolecularSequence": {"coordinateSystem": 0},
        "EventDefinition": {"status": "draft", "trigger": [{"type": "named-event",
                                                            "name": "kit"}]},
        "DocumentManifest": {"status": "current", "content": [subject]},
        "CatalogEntry": {"orderable": True, "referencedItem": subject},
        "Coverage": {"status": "active", "beneficiary": subject, "payor": [subject]},
        "ChargeItem": {"status": "planned", "code": code, "subject": subject},
        "Linkage": {"item": [{"type": "source", "resource": subject}]},
        "CompartmentDefinition": {"status": "draft", "url": "http://example.org/kit",
                                  "name": "kit", "code": "Patient", "search": True},
        "MessageDefinition": {"status": "draft", "date": _now(),
                              "eventUri": "http://example.org/kit"},
        "EvidenceVariable": {"status": "draft", "characteristic": [
            {"definitionCodeableConcept": code}]},
    }
    return {"resourceType": kind, **known.get(kind, {})}


def base(ctx: Context) -> str:
    target = ctx.options.target
    if not target:
        raise Skipped("no FHIR server: give --target FHIR_BASE_URL")
    return str(target).rstrip("/")


def run_tag(ctx: Context, suite: str, prefix: str | None = None) -> dict[str, str]:
    """The tag a suite puts on everything it creates in this run (``<prefix>-<random>``, one
    per suite and run), so that its searches see only its own resources and cleanup finds
    them."""
    key = f"{suite}_tag"
    if key not in ctx.state:
        ctx.state[key] = f"{prefix or suite}-{uuid.uuid4().hex[:16]}"
    return {"system": TAG_SYSTEM, "code": ctx.state[key]}


def _tag(ctx: Context) -> dict[str, str]:
    return run_tag(ctx, "fhir", "run")


def _tagged(ctx: Context, resource: dict[str, Any]) -> dict[str, Any]:
    return {**resource, "meta": {"tag": [_tag(ctx)]}}


def _created(ctx: Context) -> list[str]:
    created: list[str] = ctx.state.setdefault("fhir_created", [])
    return created


def create(check: Check, resource: dict[str, Any], headers: dict[str, str] | None = None
           ) -> httpx.Response:
    kind = resource["resourceType"]
    response = check.http.post(f"{base(check.ctx)}/{kind}", content=json.dumps(
        _tagged(check.ctx, resource)), headers={**HEADERS, **(headers or {})})
    if response.status_code == 201:
        ref = _ref(response.headers.get("location", ""))
        if ref:
            _created(check.ctx).append(ref)
    return response


def _id_of(check: Check, response: httpx.Response) -> str:
    body = json_body(response, "the created resource")
    if isinstance(body, dict) and body.get("id"):
        return str(body["id"])
    location = response.headers.get("location", "")
    check.expect(location, "a create answers with the resource or a Location header")
    return location.split("/_history")[0].rstrip("/").split("/")[-1]


def _bundle(check: Check, response: httpx.Response, kind: str) -> dict[str, Any]:
    expect_status(response, 200)
    body = json_body(response, "the Bundle")
    check.expect(isinstance(body, dict) and body.get("resourceType") == "Bundle"
                 and body.get("type") == kind, f"a Bundle of type {kind}")
    return dict(body)


def _cap(ctx: Context) -> dict[str, Any]:
    cap: dict[str, Any] = ctx.needs("fhir_cap", "needs the CapabilityStatement (fhir-cap-01)")
    return cap


def declared(ctx: Context) -> dict[str, dict[str, Any]]:
    rest = [r for r in _cap(ctx).get("rest", []) if r.get("mode") == "server"]
    out = {r["type"]: r for r in (rest[0].get("resource", []) if rest else []) if "type" in r}
    wanted = ctx.options.resources
    return {k: v for k, v in out.items() if not wanted or k in wanted}


def interactions(resource: dict[str, Any]) -> set[str]:
    return {i.get("code") for i in resource.get("interaction", [])}


def _patient(check: Check) -> str | None:
    """A Patient for the run's resources to point at (None when Patient cannot be created)."""
    ctx = check.ctx
    if "fhir_patient" not in ctx.state:
        ctx.state["fhir_patient"] = None
        response = create(check, {"resourceType": "Patient", "name": [
            {"family": "Kit", "given": ["Conformance"]}]})
        if response.status_code == 201:
            ctx.state["fhir_patient"] = f"Patient/{_id_of(check, response)}"
    patient: str | None = ctx.state["fhir_patient"]
    return patient


# --- the CapabilityStatement ----------------------------------------------------------------

def capability(check: Check) -> None:
    response = check.http.get(f"{base(check.ctx)}/metadata", headers={"Accept": FHIR_JSON})
    expect_status(response, 200)
    body = json_body(response, "the CapabilityStatement")
    check.expect(isinstance(body, dict) and body.get("resourceType") == "CapabilityStatement",
                 "GET [base]/metadata returns a CapabilityStatement")
    check.expect(body.get("kind") == "instance", f"kind is instance; got {body.get('kind')}")
    check.ctx.state["fhir_cap"] = body


def capability_version(check: Check) -> None:
    cap = _cap(check.ctx)
    check.expect(cap.get("fhirVersion") == "4.0.1", f"fhirVersion 4.0.1; got "
                                                    f"{cap.get('fhirVersion')}")
    formats = cap.get("format", [])
    check.expect(any("json" in f for f in formats), f"format lists JSON; got {formats}")
    check.expect(declared(check.ctx) or check.ctx.options.resources,
                 "rest[mode=server] declares at least one resource")


def content_type(check: Check) -> None:
    response = check.http.get(f"{base(check.ctx)}/metadata", headers={"Accept": FHIR_JSON})
    ctype = response.headers.get("content-type", "")
    check.expect(ctype.startswith(FHIR_JSON), f"Content-Type application/fhir+json; got {ctype}")


# --- per declared resource type -------------------------------------------------------------

def _instance(check: Check, kind: str) -> str:
    key = f"fhir_instance_{kind}"
    if key not in check.ctx.state:
        check.ctx.state[key] = None
        resource = minimal(kind, _patient(check) if kind != "Patient" else None)
        response = create(check, resource)
        if response.status_code in (400, 422):
            raise Skipped(f"the kit has no minimal {kind} this server accepts "
                          f"(HTTP {response.status_code}); the read is not tested")
        expect_status(response, 201, what=f"create {kind}")
        check.ctx.state[key] = _id_of(check, response)
    found: str | None = check.ctx.state[key]
    if found is None:
        raise Skipped(f"no {kind} was created (see fhir-read-{kind})")
    return found


def read_test(kind: str) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        rid = _instance(check, kind)
        response = check.http.get(f"{base(check.ctx)}/{kind}/{rid}",
                                  headers={"Accept": FHIR_JSON})
        expect_status(response, 200)
        body = json_body(response, f"the {kind}")
        check.expect(body.get("resourceType") == kind and body.get("id") == rid,
                     f"the {kind} read is the one created ({rid})")
        check.expect(body.get("meta", {}).get("versionId"), "meta.versionId is set")
        check.expect(response.headers.get("etag"), "an ETag header is returned")
    return run


def _value(param_type: str) -> str | None:
    return {"token": "kit-none", "string": "kitnone", "date": "ge1900-01-01",
            "reference": "kit-none", "number": "1", "quantity": "1",
            "uri": "http://example.org/kit-none"}.get(param_type)


def search_test(kind: str, params: list[dict[str, Any]]) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        url = f"{base(check.ctx)}/{kind}"
        rid = check.ctx.state.get(f"fhir_instance_{kind}")
        if rid:
            bundle = _bundle(check, check.http.get(url, params={"_id": rid},
                                                   headers={"Accept": FHIR_JSON}), "searchset")
            ids = [e.get("resource", {}).get("id") for e in bundle.get("entry", [])]
            check.expect(ids == [rid], f"_id={rid} finds exactly the created {kind}; got {ids}")
        else:
            check.note(f"no {kind} was created (see fhir-read-{kind}): _id is searched for "
                       "one that does not exist")
            bundle = _bundle(check, check.http.get(url, params={"_id": "kit-none"},
                                                   headers={"Accept": FHIR_JSON}), "searchset")
            check.expect(not bundle.get("entry"), "_id=kit-none matches nothing")
        refused = []
        tried = 0
        for param in params:
            value = _value(param.get("type", ""))
            name = param.get("name", "")
            if value is None or not name or name.startswith("_"):
                continue
            tried += 1
            try:
                response = check.ctx.client.get(url, params={name: value, "_count": 1,
                                                             "_summary": "count"},
                                                headers={"Accept": FHIR_JSON})
            except httpx.HTTPError as exc:
                refused.append(f"{name}: {type(exc).__name__}")
                continue
            if response.status_code != 200:
                refused.append(f"{name}={value}: HTTP {response.status_code}")
        check.note(f"{tried} declared search parameters tried with a value of their type")
        check.expect(not refused, f"declared search parameters refused: {', '.join(refused)}")
    return run


def history_test(kind: str) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        rid = _instance(check, kind)
        bundle = _bundle(check, check.http.get(f"{base(check.ctx)}/{kind}/{rid}/_history",
                                               headers={"Accept": FHIR_JSON}), "history")
        ids = {e.get("resource", {}).get("id") for e in bundle.get("entry", [])}
        check.expect(ids == {rid}, f"the history of {kind}/{rid} holds its versions")
    return run


def per_resource(ctx: Context) -> list[T]:
    tests = []
    for kind, resource in sorted(declared(ctx).items()):
        if kind in NOT_CREATED:
            continue
        can = interactions(resource)
        if not {"create", "read"} <= can:
            continue
        tests.append(T(f"fhir-read-{kind}", f"{kind}: read what was created", Requirement(
            "read returns the current resource with its id, meta.versionId and ETag.",
            f"{R4}/http.html#read"), read_test(kind)))
        if "search-type" in can:
            tests.append(T(f"fhir-search-{kind}", f"{kind}: search by _id and declared params",
                           Requirement("search by _id finds the resource; every declared "
                                       "search parameter is accepted.",
                                       f"{R4}/search.html"),
                           search_test(kind, resource.get("searchParam", []))))
        if "history-instance" in can:
            tests.append(T(f"fhir-history-{kind}", f"{kind}: instance history", Requirement(
                "history of an instance is a Bundle of type history.",
                f"{R4}/http.html#history"), history_test(kind)))
    return tests


# --- interactions across types -------------------------------------------------------------

def _needs(check: Check, kind: str, interaction: str) -> None:
    if interaction not in interactions(declared(check.ctx).get(kind, {})):
        raise Skipped(f"{kind} does not declare {interaction}")


def conditional_create(check: Check) -> None:
    _needs(check, "Patient", "create")
    resource = declared(check.ctx).get("Patient", {})
    if not resource.get("conditionalCreate"):
        raise Skipped("Patient does not declare conditionalCreate")
    value = "kit-" + uuid.uuid4().hex
    patient = {"resourceType": "Patient",
               "identifier": [{"system": "https://sonobridge.org/kit", "value": value}]}
    condition = {"If-None-Exist": f"identifier=https://sonobridge.org/kit|{value}"}
    first = create(check, patient, condition)
    expect_status(first, 201, what="the first conditional create")
    second = create(check, patient, condition)
    expect_status(second, 200, what="the second conditional create (one match: 200, no new "
                                    "resource)")
    check.expect(_id_of(check, first) == _id_of(check, second)
                 if second.content else True, "the second answers with the first's id")


def transaction(check: Check) -> None:
    cap = _cap(check.ctx)
    rest = cap.get("rest", [{}])[0]
    if "transaction" not in {i.get("code") for i in rest.get("interaction", [])}:
        raise Skipped("the server does not declare the transaction interaction")
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": patient_url, "resource": _tagged(check.ctx, {
            "resourceType": "Patient", "name": [{"family": "KitTransaction"}]}),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": _tagged(check.ctx, minimal("Observation", patient_url)),
         "request": {"method": "POST", "url": "Observation"}}]}
    response = check.http.post(base(check.ctx), content=json.dumps(bundle), headers=HEADERS)
    answer = _bundle(check, response, "transaction-response")
    locations = [e.get("response", {}).get("location", "") for e in answer.get("entry", [])]
    statuses = [e.get("response", {}).get("status", "") for e in answer.get("entry", [])]
    refs = [_ref(loc) for loc in locations]
    _created(check.ctx).extend(r for r in reversed(refs) if r)
    check.expect(len(statuses) == 2 and all(s.startswith("201") for s in statuses),
                 f"both entries created (201); got {statuses}")
    patient, obs = refs
    check.expect(patient and obs, f"both entries have a location; got {locations}")
    read = check.http.get(f"{base(check.ctx)}/{obs}", headers={"Accept": FHIR_JSON})
    expect_status(read, 200)
    subject = json_body(read).get("subject", {}).get("reference", "")
    check.expect(subject == patient,
                 f"the urn:uuid reference became {patient}; got {subject!r}")
    check.ctx.state["fhir_tx_observation"] = obs.split("/")[-1]
    check.ctx.state["fhir_tx_patient"] = patient.split("/")[-1]


def _ref(location: str) -> str:
    """``Type/id`` of a Location (relative or absolute, with or without _history)."""
    parts = location.split("/_history")[0].rstrip("/").split("/")
    return f"{parts[-2]}/{parts[-1]}" if len(parts) >= 2 else ""


def include(check: Check) -> None:
    _needs(check, "Observation", "search-type")
    obs = check.ctx.needs("fhir_tx_observation", "needs the transaction's Observation")
    patient = check.ctx.state["fhir_tx_patient"]
    bundle = _bundle(check, check.http.get(f"{base(check.ctx)}/Observation", params={
        "_id": obs, "_include": "Observation:subject"}, headers={"Accept": FHIR_JSON}),
        "searchset")
    modes = {(e.get("resource", {}).get("resourceType"), e.get("resource", {}).get("id")):
             e.get("search", {}).get("mode") for e in bundle.get("entry", [])}
    check.expect(modes.get(("Observation", obs)) == "match", "the Observation is a match")
    check.expect(modes.get(("Patient", patient)) == "include",
                 f"its subject Patient/{patient} is included (search.mode include); got "
                 f"{modes}")


def paging(check: Check) -> None:
    _needs(check, "Patient", "search-type")
    for n in range(3):
        expect_status(create(check, {"resourceType": "Patient",
                                     "name": [{"family": f"KitPage{n}"}]}), 201)
    tag = _tag(check.ctx)
    first = _bundle(check, check.http.get(f"{base(check.ctx)}/Patient", params={
        "_tag": f"{tag['system']}|{tag['code']}", "_count": 1, "name": "KitPage"},
        headers={"Accept": FHIR_JSON}), "searchset")
    links = {link.get("relation"): link.get("url") for link in first.get("link", [])}
    check.expect(len(first.get("entry", [])) == 1, "_count=1 gives one entry")
    check.expect(links.get("self"), "the Bundle has a self link")
    check.expect(links.get("next"), f"a next link while more match; links: {list(links)}")
    second = _bundle(check, check.http.get(links["next"], headers={"Accept": FHIR_JSON}),
                     "searchset")
    a = first["entry"][0]["resource"]["id"]
    b = [e["resource"]["id"] for e in second.get("entry", [])]
    check.expect(len(b) == 1 and b[0] != a, f"the next page holds another Patient; got {b}")


def _outcome(check: Check, response: httpx.Response, *statuses: int) -> None:
    expect_status(response, *statuses)
    body = json_body(response, "the error")
    check.expect(isinstance(body, dict) and body.get("resourceType") == "OperationOutcome",
                 "the error is an OperationOutcome")
    check.expect(body.get("issue"), "the OperationOutcome has at least one issue")


def err_not_found(check: Check) -> None:
    missing = f"kit-does-not-exist-{uuid.uuid4().hex[:8]}"
    _outcome(check, check.http.get(f"{base(check.ctx)}/Patient/{missing}",
                                   headers={"Accept": FHIR_JSON}), 404, 410)


def err_bad_json(check: Check) -> None:
    _outcome(check, check.http.post(f"{base(check.ctx)}/Patient", content=b"{not json",
                                    headers=HEADERS), 400)


def err_wrong_type(check: Check) -> None:
    _outcome(check, check.http.post(f"{base(check.ctx)}/Patient", content=json.dumps(
        minimal("Observation", None)), headers=HEADERS), 400, 422)


def err_invalid(check: Check) -> None:
    _outcome(check, check.http.post(f"{base(check.ctx)}/Patient", content=json.dumps(
        {"resourceType": "Patient", "gender": "not-a-gender", "birthDate": "yesterday"}),
        headers=HEADERS), 400, 422)


def err_unknown_type(check: Check) -> None:
    _outcome(check, check.http.get(f"{base(check.ctx)}/KitNoSuchType",
                                   headers={"Accept": FHIR_JSON}), 400, 404)


def cleanup(ctx: Context) -> None:
    for ref in reversed(ctx.state.get("fhir_created", [])):
        with contextlib.suppress(httpx.HTTPError, Skipped, Failed):
            ctx.client.delete(f"{base(ctx)}/{ref}", headers={"Accept": FHIR_JSON})
    ctx.state["fhir_created"] = []


def _t(id_: str, title: str, text: str, url: str, fn: Callable[[Check], None]) -> T:
    return T(id_, title, Requirement(text, url), fn)


CAPABILITY = [
    _t("fhir-cap-01", "CapabilityStatement", "GET [base]/metadata returns the server's "
       "CapabilityStatement (kind instance).", f"{R4}/http.html#capabilities", capability),
    _t("fhir-cap-02", "FHIR version and formats", "fhirVersion is 4.0.1, JSON is a declared "
       "format, resources are declared.", f"{R4}/capabilitystatement.html", capability_version),
    _t("fhir-cap-03", "Media type", "Responses in JSON use application/fhir+json.",
       f"{R4}/http.html#mime-type", content_type),
]
ACROSS = [
    _t("fhir-cond-01", "Conditional create", "If-None-Exist: no match creates (201); one match "
       "creates nothing and answers 200.", f"{R4}/http.html#ccreate", conditional_create),
    _t("fhir-tx-01", "Transaction", "A transaction Bundle is processed as a unit; urn:uuid "
       "references are rewritten to the new ids.", f"{R4}/http.html#transaction", transaction),
    _t("fhir-include-01", "_include", "_include=Observation:subject adds the subject with "
       "search.mode include.", f"{R4}/search.html#include", include),
    _t("fhir-paging-01", "Paging links", "_count bounds the page; the next link gives the "
       "next page.", f"{R4}/http.html#paging", paging),
    _t("fhir-err-01", "404 as OperationOutcome", "Reading a resource that does not exist is 404 "
       "(410 if deleted) with an OperationOutcome.", f"{R4}/http.html#read", err_not_found),
    _t("fhir-err-02", "Unparseable body", "A body that is not valid JSON is 400 with an "
       "OperationOutcome.", f"{R4}/http.html#create", err_bad_json),
    _t("fhir-err-03", "Wrong resource type", "A body whose type is not the endpoint's is "
       "400/422 with an OperationOutcome.", f"{R4}/http.html#create", err_wrong_type),
    _t("fhir-err-04", "Invalid resource", "A resource that breaks R4 rules (bad code, bad date) "
       "is 400/422 with an OperationOutcome.", f"{R4}/http.html#create", err_invalid),
    _t("fhir-err-05", "Unknown resource type", "An unknown type in the URL is 400/404 with an "
       "OperationOutcome.", f"{R4}/http.html#general", err_unknown_type),
]


def groups(ctx: Context) -> Iterable[Group]:
    base(ctx)
    return [Group("fhir-capability", "CapabilityStatement", CAPABILITY),
            Group("fhir-resources", "Declared resources", per_resource),
            Group("fhir-interactions", "Conditional, transaction, _include, paging, errors",
                  ACROSS, teardown=cleanup)]


SUITE = Suite("fhir", "FHIR R4", groups)
