"""Orders and their progress: placing, changing and cancelling an order (from the HIS), and
the modality's Performed Procedure Steps (MPPS) that say an exam started, finished or was
abandoned.

An order is a ServiceRequest (the worklist entry a modality sees). Each MPPS instance is a
FHIR Task (identifier = the MPPS SOP Instance UID) based on the ServiceRequest it performs
(found by accession number or Study Instance UID of the scheduled step). IN PROGRESS -> Task
in-progress; COMPLETED -> Task completed and the order completed; DISCONTINUED -> Task
cancelled, the order stays open for another attempt.

The Task's ``output`` names the ImagingStudy it performs: the Study Instance UIDs of the
scheduled step (which IHE Scheduled Workflow has the modality put in its images too) and the
studies of performed series already here. That is the one record of the link: the study's
ImagingStudy takes ``basedOn`` from it at every sync (``core/imaging/studies.py``), so the
link survives later images and holds when the images come after the MPPS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from sonobridge.core.errors import CoreError, not_found
from sonobridge.core.imaging.studies import Studies
from sonobridge.core.patients import Patients
from sonobridge.core.policy import Caller
from sonobridge.core.resources import Resources, SearchSpec
from sonobridge.core.validation import is_valid_id
from sonobridge.mappings import hl7v2
from sonobridge.mappings.mpps import TASK_STATUS, ProcedureStep
from sonobridge.store.dicom import index
from sonobridge.store.resources import Writer, new_id

MPPS_SYSTEM = "urn:dicom:uid"
WORKLIST_PAGE = 100
# ORC-1 control codes that change an order's status and keep what it said
STATUS_CHANGES = ("CA", "OC", "DC", "OD", "CR", "SC")


@dataclass(frozen=True, slots=True)
class Placed:
    order: str  # ServiceRequest id
    patient: str  # Patient id
    status: str


@dataclass(frozen=True, slots=True)
class Scheduled:
    """An open order with what a worklist item shows of it: its patient and performers."""

    order: dict[str, Any]
    patient: dict[str, Any]
    performers: list[dict[str, Any]]


def _resource(entry: dict[str, Any]) -> dict[str, Any]:
    resource = entry["resource"]
    if isinstance(resource, dict):
        return resource
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(resource))  # a stored-bytes Fragment
    return loaded


def _next_cursor(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link", []):
        if link.get("relation") == "next":
            values = parse_qs(urlsplit(link["url"]).query).get("_page")
            return values[0] if values else None
    return None


class Orders:
    def __init__(self, resources: Resources, patients: Patients, studies: Studies) -> None:
        self.resources = resources
        self.patients = patients
        self.studies = studies

    # ------------------------------------------------------------------ orders

    def place(self, writer: Writer, caller: Caller, parsed: hl7v2.Order) -> Placed:
        """Create, change or cancel the order an HIS message describes (404 when the order to
        cancel is not known)."""
        res_id = self.patients.find(writer, "ServiceRequest", parsed.identifiers)
        if res_id is None and parsed.status == "revoked":
            raise not_found("the order to cancel is not known")
        patient_id = self.patients.upsert(writer, caller, parsed.patient)
        resource = dict(parsed.resource)
        resource["subject"] = {"reference": f"Patient/{patient_id}"}
        if parsed.study_uid:
            resource["identifier"] = [*resource["identifier"], {
                "system": "urn:dicom:uid", "value": f"urn:oid:{parsed.study_uid}"}]
        station = parsed.extra.get("station")
        if station is not None:  # OMI IPC-9: the order is performed by that station
            device = self.patients.find(writer, "Device", station["identifier"])
            if device is None:
                device = new_id()
                self.resources.create(caller, "Device", {**station, "id": device},
                                      assigned_id=device, writer=writer)
            resource["performer"] = [{"reference": f"Device/{device}"},
                                     *resource.get("performer", [])]
        for key, system in (("requested_procedure_id", hl7v2.REQUESTED_PROCEDURE_SYSTEM),
                            ("scheduled_step_id", hl7v2.SCHEDULED_STEP_SYSTEM)):
            if parsed.extra.get(key):
                resource["identifier"] = [*resource["identifier"],
                                          {"system": system, "value": parsed.extra[key]}]
        if res_id is not None:
            current = self.resources.current(writer, "ServiceRequest", res_id) or {}
            if parsed.control in STATUS_CHANGES and current and \
                    parsed.status in ("revoked", "completed", "on-hold", "active"):
                # a cancel or status change keeps what the order said
                resource = {**current, "status": parsed.status}
            else:
                known = {(i["system"], i["value"]) for i in resource["identifier"]}
                resource["identifier"] += [i for i in current.get("identifier", [])
                                           if (i.get("system"), i.get("value")) not in known]
        target = res_id or new_id()
        resource["id"] = target
        if res_id is None:
            self.resources.create(caller, "ServiceRequest", resource, assigned_id=target,
                                  writer=writer)
        else:
            self.resources.update(caller, "ServiceRequest", target, resource, writer=writer)
        return Placed(target, patient_id, parsed.status)

    # ------------------------------------------------------------------ MPPS

    def _task_of(self, writer: Writer, caller: Caller, uid: str) -> str | None:
        found = self.resources.find(writer, "Task",
                                    [("identifier", f"{MPPS_SYSTEM}|urn:oid:{uid}")],
                                    caller.base, limit=1)
        return found[0] if found else None

    def _order_of(self, writer: Writer, caller: Caller, step: ProcedureStep) -> str | None:
        queries = [[("identifier", accession)] for accession in step.accession_numbers] + \
            [[("identifier", f"urn:dicom:uid|urn:oid:{study}")]
             for study in step.scheduled_studies]
        for query in queries:
            found = self.resources.find(writer, "ServiceRequest", query, caller.base, limit=1)
            if found:
                return found[0]
        return None

    def _perform(self, writer: Writer, caller: Caller, task: dict[str, Any],
                 studies: list[str]) -> None:
        """Write the Task with these studies among its outputs, then re-sync the ImagingStudy
        of each that is already indexed (the sync reads the link back from the Task)."""
        outputs = list(task.get("output", []))
        known = {o.get("valueReference", {}).get("reference") for o in outputs}
        for study in studies:
            if f"ImagingStudy/{study}" not in known:
                known.add(f"ImagingStudy/{study}")
                outputs.append({"type": {"text": "performed study"},
                                "valueReference": {"reference": f"ImagingStudy/{study}"}})
        if outputs:
            task["output"] = outputs
        self.resources.update(caller, "Task", task["id"], task, writer=writer)
        for reference in sorted(r for r in known if r):
            study = reference.removeprefix("ImagingStudy/")
            if index.has_study(writer.conn, study):
                self.studies.sync(writer, caller, study)

    def step_started(self, caller: Caller, step: ProcedureStep, performer: str) -> None:
        """MPPS N-CREATE: a Task in progress (409 duplicate, 400 not IN PROGRESS)."""
        if step.status != "IN PROGRESS":
            raise CoreError(400, "value", "an MPPS is created IN PROGRESS")
        with self.resources.store.write() as writer:
            if self._task_of(writer, caller, step.uid):
                raise CoreError(409, "duplicate", f"MPPS {step.uid} already exists")
            order = self._order_of(writer, caller, step)
            task: dict[str, Any] = {
                "resourceType": "Task", "id": new_id(), "status": "in-progress",
                "intent": "order",
                "identifier": [{"system": MPPS_SYSTEM, "value": f"urn:oid:{step.uid}"}],
                "code": {"text": step.description or "performed procedure step"},
                "description": f"MPPS from {performer}",
            }
            if order:
                task["basedOn"] = [{"reference": f"ServiceRequest/{order}"}]
                request = self.resources.current(writer, "ServiceRequest", order)
                if request and request.get("subject"):
                    task["for"] = request["subject"]
            if step.scheduled_studies:
                task["input"] = [{"type": {"text": "Study Instance UID"}, "valueString": uid}
                                 for uid in step.scheduled_studies]
            if step.start:
                task["executionPeriod"] = {"start": step.start}
            self._perform(writer, caller, task, step.scheduled_studies +
                          index.studies_of_series(writer.conn, step.performed_series))

    def step_changed(self, caller: Caller, step: ProcedureStep) -> None:
        """MPPS N-SET: progress, the end, the performed series (404 unknown MPPS, 409 already
        final, 400 an unknown status)."""
        with self.resources.store.write() as writer:
            task_id = self._task_of(writer, caller, step.uid)
            if task_id is None:
                raise not_found(f"no MPPS {step.uid}")
            task = self.resources.current(writer, "Task", task_id) or {}
            if task.get("status") != "in-progress":
                raise CoreError(409, "conflict", f"MPPS {step.uid} is already final")
            if step.status and step.status not in TASK_STATUS:
                raise CoreError(400, "value", f"unknown MPPS status {step.status!r}")
            if step.status:
                task["status"] = TASK_STATUS[step.status]
            if step.end:
                task["executionPeriod"] = {**task.get("executionPeriod", {}), "end": step.end}
            order = next((ref["reference"].split("/")[1] for ref in task.get("basedOn", [])),
                         None)
            self._perform(writer, caller, task,
                          index.studies_of_series(writer.conn, step.performed_series))
            if order and task["status"] == "completed":
                request = self.resources.current(writer, "ServiceRequest", order)
                if request is not None and request.get("status") == "active":
                    request["status"] = "completed"
                    self.resources.update(caller, "ServiceRequest", order, request,
                                          writer=writer)

    # ------------------------------------------------------------------ worklist

    def scheduled(self, caller: Caller, params: list[tuple[str, str]],
                  patient_id: str | None = None) -> Iterator[Scheduled]:
        """Every ServiceRequest the search ``params`` find (paged through to the end: no
        silent cap), with its patient and performers. ``patient_id``: only the orders of the
        patients an item could show with that DICOM Patient ID."""
        if patient_id:
            patients = self._patients_with_id(caller, patient_id)
            if not patients:
                return
            params = [*params, ("subject", ",".join(f"Patient/{p}" for p in patients))]
        query = [*params, ("_count", str(WORKLIST_PAGE)),
                 ("_include", "ServiceRequest:subject"),
                 ("_include", "ServiceRequest:performer")]
        cursor: str | None = None
        while True:
            page = query if cursor is None else [*query, ("_page", cursor)]
            bundle = self.resources.search(caller, SearchSpec("ServiceRequest", page)).bundle
            orders, related = [], {}
            for entry in bundle.get("entry", []):
                mode = entry.get("search", {}).get("mode")
                if mode == "outcome":
                    continue
                resource = _resource(entry)
                if mode == "match":
                    orders.append(resource)
                else:
                    related[f"{resource['resourceType']}/{resource['id']}"] = resource
            for order in orders:
                yield Scheduled(order, self._related(related, order.get("subject", {})),
                                [self._related(related, p)
                                 for p in order.get("performer", [])])
            cursor = _next_cursor(bundle)
            if cursor is None:
                return

    def _patients_with_id(self, caller: Caller, value: str) -> list[str]:
        """Patients an item could show with this Patient ID: those with an identifier of that
        value (any system), and the patient whose id it is (the last resort of the
        mapping)."""
        found: list[str] = []
        query = [("identifier", value), ("_count", str(WORKLIST_PAGE)), ("_elements", "id")]
        cursor: str | None = None
        while True:
            page = query if cursor is None else [*query, ("_page", cursor)]
            bundle = self.resources.search(caller, SearchSpec("Patient", page)).bundle
            found += [_resource(e)["id"] for e in bundle.get("entry", [])
                      if e.get("search", {}).get("mode") == "match"]
            cursor = _next_cursor(bundle)
            if cursor is None:
                break
        if value not in found and is_valid_id(value) and self.resources.exists("Patient", value):
            found.append(value)
        return found

    def _related(self, related: dict[str, dict[str, Any]], ref: dict[str, Any]
                 ) -> dict[str, Any]:
        """A referenced resource: from the page's includes, else read (includes can be
        capped)."""
        reference = str(ref.get("reference", ""))
        if reference in related:
            return related[reference]
        res_type, _, res_id = reference.partition("/")
        if not res_id or "/" in res_id or not is_valid_id(res_id):
            return {}
        stored = self.resources.store.read(res_type, res_id)
        if stored is None or stored.deleted or stored.content is None:
            return {}
        related[reference] = orjson.loads(stored.content)
        return related[reference]
