"""A written consultation walked end to end with the Python ``fhirclient`` package against a
live ``sonobridge serve`` with authorization on: four users made with the CLI (the clinic's
doctor, its medical-affairs office, the consulting side's dispatcher, the expert with TOTP),
each logging in through a standalone launch (PKCE) and moving the Task with fhirclient's own
models (``Task.read`` / ``update``); a step by the wrong role is refused (403), the booking
turns the expert's Slot busy, and the Provenance trail names every user."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pyotp
import pytest
import requests
from fhirclient.server import FHIRPermissionDeniedException

from tests.live import serve

PASSWORD = "Ultra-Sound-2026"
REDIRECT = "http://127.0.0.1:9/callback"
SCOPE = "openid fhirUser user/*.cruds"
STATES = "http://sonobridge.org/fhir/CodeSystem/sono-consultation-business-status"
USERS = {"clinic": ("referring-clinician", "Practitioner/referring-gp"),
         "affairs": ("medical-affairs", "Practitioner/sample-affairs"),
         "dispatcher": ("consultation-dispatcher", "Practitioner/sample-dispatcher"),
         "expert": ("remote-expert", "Practitioner/sample-expert")}


class World:
    def __init__(self, base: str, env: dict[str, str]) -> None:
        self.base = base
        self.env = env
        self.totp: dict[str, str] = {}
        self.client_id = ""

    def cli(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run([sys.executable, "-m", "sonobridge", *args], input=stdin,
                                capture_output=True, text=True, env=self.env, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr  # the console's notes go to stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("consultation-fhirclient")
    db = f"sqlite:///{work / 'sonobridge.db'}"
    with serve(db, work, SONOBRIDGE_AUTH="enabled", SONOBRIDGE_AUDIT="on") as (base, _log):
        env = {**os.environ, "SONOBRIDGE_DATA_DIR": str(work / "data"),
               "SONOBRIDGE_DATABASE_URL": db}
        w = World(base, env)
        for name, (role, fhir_user) in USERS.items():
            out = w.cli("user", "add", name, "--role", role, "--fhir-user", fhir_user,
                        "--password-stdin", stdin=PASSWORD + "\n")
            secret = re.search(r"secret:\s*([A-Z2-7]+)", out)
            if secret:
                w.totp[name] = secret.group(1)
        added = w.cli("client", "add", "--name", "Consultation desk", "--type", "public",
                      "--redirect-uri", REDIRECT, "--scope", SCOPE, "--json")
        registered = json.loads(added[added.index("{"):added.rindex("}") + 1])
        w.client_id = registered["client_id"]
        yield w


def _fields(page: str) -> list[tuple[str, str]]:
    return [(html.unescape(k), html.unescape(v)) for k, v in
            re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)]


def login(world: World, name: str) -> Any:
    """fhirclient's standalone launch, the user's browser logging in and allowing."""
    from fhirclient import client

    smart = client.FHIRClient(settings={"app_id": world.client_id,
                                        "api_base": f"{world.base}/fhir",
                                        "redirect_uri": REDIRECT, "scope": SCOPE})
    with httpx.Client() as http:
        page = http.get(smart.authorize_url)
        assert 'name="username"' in page.text, page.text[:500]
        form = [(k, v) for k, v in _fields(page.text) if k != "_action"] + [
            ("_action", "login"), ("username", name), ("password", PASSWORD)]
        if name in world.totp:
            form.append(("otp", pyotp.TOTP(world.totp[name]).now()))
        consent = http.post(f"{world.base}/auth/authorize", data=dict(form))
        assert consent.status_code == 200 and "_csrf" in consent.text, consent.text[:800]
        allow = http.post(f"{world.base}/auth/authorize",
                          data={**dict(_fields(consent.text)), "_action": "allow"})
        assert allow.status_code == 302, allow.text[:500]
    smart.handle_callback(allow.headers["location"])
    return smart


def move(smart: Any, task_id: str, status: str, state: str, **extra: Any) -> None:
    from fhirclient.models.task import Task

    task = Task.read(task_id, smart.server)
    task.status = status
    task.businessStatus.coding[0].code = state
    for key, value in extra.items():
        setattr(task, key, value)
    task.update(smart.server)


def status_of(call) -> int:
    """The HTTP status of a refused call (fhirclient raises its own exceptions for 401/403,
    requests' HTTPError for the others; each carries the response)."""
    with pytest.raises((requests.HTTPError, FHIRPermissionDeniedException)) as err:
        call()
    return err.value.response.status_code


def test_a_written_consultation_with_fhirclient(world):
    from fhirclient.models.appointment import Appointment
    from fhirclient.models.diagnosticreport import DiagnosticReport
    from fhirclient.models.fhirreference import FHIRReference
    from fhirclient.models.provenance import Provenance
    from fhirclient.models.servicerequest import ServiceRequest
    from fhirclient.models.slot import Slot
    from fhirclient.models.task import Task, TaskOutput

    clinic, affairs = login(world, "clinic"), login(world, "affairs")
    dispatcher, expert = login(world, "dispatcher"), login(world, "expert")
    sample = ServiceRequest.read("sample-consultation", clinic.server).as_json()
    request = ServiceRequest({**sample, "id": "fc-request", "meta": {
        "profile": sample["meta"]["profile"]},
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.1.99.24", "value": "HZ-FC-1"}]})
    request.update(clinic.server)
    task = Task({"resourceType": "Task", "id": "fc-task", "status": "draft",
                 "intent": "order", "focus": {"reference": "ServiceRequest/fc-request"},
                 "businessStatus": {"coding": [{"system": STATES, "code": "draft"}]},
                 "for": {"reference": "Patient/sample-patient"},
                 "authoredOn": "2026-12-03T09:00:00+08:00",
                 "requester": {"reference": "PractitionerRole/sample-referring-gp-role"}})
    task.update(clinic.server)
    move(clinic, "fc-task", "requested", "pending-local-review")
    assert status_of(lambda: move(clinic, "fc-task", "received", "pending-acceptance")) == 403
    move(affairs, "fc-task", "received", "pending-acceptance")
    assert status_of(lambda: move(expert, "fc-task", "accepted", "accepted")) == 403
    move(dispatcher, "fc-task", "accepted", "accepted")
    move(dispatcher, "fc-task", "accepted", "triage",
         owner=FHIRReference({"reference": "PractitionerRole/sample-expert-role"}))
    assert status_of(lambda: move(dispatcher, "fc-task", "ready", "scheduled")) == 422
    appointment = Appointment({
        "resourceType": "Appointment", "status": "booked",
        "serviceType": [{"coding": [{"system": "http://sonobridge.org/fhir/CodeSystem/"
                                               "sono-consultation-type", "code": "video"}]}],
        "basedOn": [{"reference": "ServiceRequest/fc-request"}],
        "slot": [{"reference": "Slot/sample-slot-2"}],
        "start": "2027-01-05T14:00:00+08:00", "end": "2027-01-05T14:30:00+08:00",
        "participant": [
            {"actor": {"reference": "PractitionerRole/sample-referring-gp-role"},
             "status": "accepted"},
            {"actor": {"reference": "PractitionerRole/sample-expert-role"},
             "status": "accepted"}]})
    appointment.create(dispatcher.server)
    assert Slot.read("sample-slot-2", dispatcher.server).status == "busy"
    assert status_of(lambda: appointment.create(dispatcher.server)) == 409  # booked already
    move(dispatcher, "fc-task", "ready", "scheduled")
    move(expert, "fc-task", "in-progress", "in-consultation")
    sample_report = DiagnosticReport.read("sample-us-report", expert.server).as_json()
    report = DiagnosticReport({**sample_report, "id": "fc-report", "status": "final",
                               "meta": {"profile": sample_report["meta"]["profile"]},
                               "basedOn": [{"reference": "ServiceRequest/fc-request"}]})
    report.update(expert.server)
    output = [TaskOutput({"type": {"text": "会诊报告"},
                          "valueReference": {"reference": "DiagnosticReport/fc-report"}})]
    move(expert, "fc-task", "completed", "completed", output=output)
    assert status_of(lambda: move(clinic, "fc-task", "draft", "draft")) == 409
    move(clinic, "fc-task", "completed", "feedback-given")

    trail = Provenance.where(struct={"target": "Task/fc-task", "_count": "50"}
                             ).perform_resources_iter(expert.server)
    walked = sorted((int(p.target[0].reference.rsplit("/", 1)[1]), p.agent[0].who.reference,
                     p.extension[0].extension[-1].valueCoding.code) for p in trail)
    assert [(who, state) for _, who, state in walked] == [
        ("Practitioner/referring-gp", "draft"),
        ("Practitioner/referring-gp", "pending-local-review"),
        ("Practitioner/sample-affairs", "pending-acceptance"),
        ("Practitioner/sample-dispatcher", "accepted"),
        ("Practitioner/sample-dispatcher", "triage"),
        ("Practitioner/sample-dispatcher", "scheduled"),
        ("Practitioner/sample-expert", "in-consultation"),
        ("Practitioner/sample-expert", "completed"),
        ("Practitioner/referring-gp", "feedback-given")]
