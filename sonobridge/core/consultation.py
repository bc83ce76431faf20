"""The remote-consultation workflow (会诊): a Task whose ``businessStatus`` walks the states of
STANDARDS.md §7, enforced on every write, recorded as Provenance, flagged when overdue.

A transition is an ordinary FHIR update or PATCH of the Task (or a create, for the first
state): nothing here is an edge. The ``ResourceWriting`` listener refuses what the table does
not allow — an illegal step is 409 naming the current and requested state, a step the caller's
role may not take is 403, a missing precondition is 422 with the element's path — and the
``ResourceChanged`` listener writes one Provenance per accepted step in the same transaction,
so the Task's ``_history`` and ``Provenance?target=`` tell who moved it, when, from what to
what. Only Tasks whose ``businessStatus`` uses the guide's consultation-state code system are
concerned; every other Task is left alone.

Why a table and not rules in code: the table is the contract (docs/consultation.md shows it as
a diagram and a who-may-do-what list generated from the same data), and a test walks every
row and every pair that is not a row.

Overdue requests (past their deadline per priority, ``SONOBRIDGE_CONSULTATION_DEADLINES``)
keep their state and gain an ``overdue`` extension (and a tag, so that the periodic check
finds only those not yet flagged); a gauge on ``/metrics`` counts them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from sonobridge.core.errors import CoreError
from sonobridge.core.events import ResourceChanged, ResourceWriting
from sonobridge.core.policy import Policy
from sonobridge.jsonio import loads as json_loads
from sonobridge.periodic import Periodic
from sonobridge.store.resources import Writer

if TYPE_CHECKING:
    from sonobridge.core.services import Core

log = logging.getLogger("sonobridge.consultation")

CANONICAL = "http://sonobridge.org/fhir"  # the implementation guide's base (conformance/ig)
STATE_SYSTEM = f"{CANONICAL}/CodeSystem/sono-consultation-business-status"
TRANSITION_EXTENSION = f"{CANONICAL}/StructureDefinition/consultation-transition"
OVERDUE_EXTENSION = f"{CANONICAL}/StructureDefinition/consultation-overdue"
FLAG_SYSTEM = f"{CANONICAL}/CodeSystem/sono-consultation-flag"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

# The roles (core/roles.py) that take part.
CLINICIAN = "referring-clinician"  # the requesting clinic's doctor (会诊申请医师)
MEDICAL_AFFAIRS = "medical-affairs"  # the requesting clinic's medical-affairs office (医务科)
DISPATCHER = "consultation-dispatcher"  # the consulting side's dispatcher (受理/分诊/排期)
EXPERT = "remote-expert"  # the consulting expert (会诊医师)

# business state -> (Task.status, 中文): STANDARDS.md §7; the codes are the guide's.
STATES: dict[str, tuple[str, str]] = {
    "draft": ("draft", "草稿"),
    "pending-local-review": ("requested", "待本院审核"),
    "returned-by-local": ("rejected", "本院退回"),
    "pending-acceptance": ("received", "待受理"),
    "accepted": ("accepted", "已受理"),
    "triage": ("accepted", "分诊中"),
    "scheduled": ("ready", "已排期"),
    "in-consultation": ("in-progress", "会诊中"),
    "report-pending-review": ("in-progress", "报告待审核"),
    "completed": ("completed", "已完成"),
    "feedback-given": ("completed", "已反馈"),
    "refused": ("rejected", "拒收"),
    "cancelled": ("cancelled", "已取消"),
}
# Where a request waits for someone: these may become overdue.
OPEN_STATES = ("pending-local-review", "pending-acceptance", "accepted", "triage",
               "scheduled", "in-consultation", "report-pending-review")
_REQUESTING = frozenset({CLINICIAN, MEDICAL_AFFAIRS})


@dataclass(frozen=True)
class Transition:
    source: str  # business state code ("" for a new consultation Task)
    target: str
    roles: frozenset[str]
    action: str  # what the step means, for the docs and the Provenance

    @property
    def pair(self) -> tuple[tuple[str, str] | None, tuple[str, str]]:
        """(status, businessStatus) -> (status, businessStatus)."""
        before = (STATES[self.source][0], self.source) if self.source else None
        return before, (STATES[self.target][0], self.target)


def _t(source: str, target: str, roles: Iterable[str], action: str) -> Transition:
    return Transition(source, target, frozenset(roles), action)


TRANSITIONS: tuple[Transition, ...] = (
    _t("", "draft", {CLINICIAN}, "write a request"),
    _t("", "pending-local-review", {CLINICIAN}, "write and submit a request"),
    _t("draft", "pending-local-review", {CLINICIAN}, "submit for the clinic's review"),
    _t("draft", "cancelled", {CLINICIAN}, "withdraw the draft"),
    _t("pending-local-review", "pending-acceptance", {MEDICAL_AFFAIRS},
       "approve and send to the consulting side"),
    _t("pending-local-review", "returned-by-local", {MEDICAL_AFFAIRS}, "return to the doctor"),
    _t("pending-local-review", "cancelled", _REQUESTING, "cancel"),
    _t("returned-by-local", "draft", {CLINICIAN}, "revise"),
    _t("returned-by-local", "pending-local-review", {CLINICIAN}, "resubmit"),
    _t("returned-by-local", "cancelled", _REQUESTING, "cancel"),
    _t("pending-acceptance", "accepted", {DISPATCHER}, "accept"),
    _t("pending-acceptance", "refused", {DISPATCHER}, "refuse"),
    _t("pending-acceptance", "cancelled", _REQUESTING, "cancel"),
    _t("accepted", "triage", {DISPATCHER}, "choose the expert"),
    _t("accepted", "cancelled", _REQUESTING, "cancel"),
    _t("triage", "scheduled", {DISPATCHER}, "schedule (an Appointment exists)"),
    _t("triage", "cancelled", _REQUESTING, "cancel"),
    _t("scheduled", "triage", {DISPATCHER}, "reschedule or choose another expert"),
    _t("scheduled", "in-consultation", {EXPERT}, "start the consultation"),
    _t("scheduled", "cancelled", _REQUESTING | {DISPATCHER}, "cancel"),
    _t("in-consultation", "report-pending-review", {EXPERT}, "write the preliminary report"),
    _t("in-consultation", "completed", {EXPERT}, "sign the final report"),
    _t("report-pending-review", "in-consultation", {EXPERT}, "revise the report"),
    _t("report-pending-review", "completed", {EXPERT}, "sign the final report"),
    _t("completed", "feedback-given", {CLINICIAN}, "give feedback"),
)
_BY_PAIR = {(t.source, t.target): t for t in TRANSITIONS}
FINAL_REPORT = frozenset({"final", "amended", "corrected", "appended"})
ACTIVE_APPOINTMENT = "proposed,pending,booked,arrived,fulfilled,checked-in,waitlist"

TRANSITIONS_DONE = Counter("sonobridge_consultation_transitions_total",
                           "Consultation Task state changes accepted, by the state reached",
                           ["state"])
OVERDUE = Gauge("sonobridge_consultation_overdue",
                "Open consultation requests past their deadline (at the last check)")
OVERDUE_FLAGGED = Counter("sonobridge_consultation_overdue_flagged_total",
                          "Consultation Tasks flagged overdue")


def state_of(task: dict[str, Any] | None) -> str | None:
    """The consultation state code of a Task, or ``None`` when it is not a consultation Task
    (no businessStatus coding in the guide's system)."""
    if not task:
        return None
    business = task.get("businessStatus")
    if not isinstance(business, dict):
        return None
    for coding in business.get("coding") or ():
        if isinstance(coding, dict) and coding.get("system") == STATE_SYSTEM:
            code = coding.get("code")
            return code if isinstance(code, str) else ""
    return None


def _label(state: str | None, status: str | None = None) -> str:
    if not state:
        return "(none)"
    zh = STATES[state][1] if state in STATES else "?"
    return f"{zh} ({status or STATES.get(state, ('?',))[0]}/{state})"


def reference_target(reference: Any, base: str = "") -> tuple[str, str] | None:
    """(type, id) of a literal reference, relative or under ``base``; ``None`` otherwise."""
    if not isinstance(reference, dict):
        return None
    text = reference.get("reference")
    if not isinstance(text, str):
        return None
    if base and text.startswith(base.rstrip("/") + "/"):
        text = text[len(base.rstrip("/")) + 1:]
    if "://" in text or text.startswith("urn:"):
        return None
    parts = text.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) != 2 or not parts[0][:1].isupper() or not parts[1]:
        return None
    return parts[0], parts[1]


def request_of(task: dict[str, Any], base: str = "") -> tuple[str, str] | None:
    """(path, ServiceRequest id) the Task works on: ``focus``, else the first ``basedOn``."""
    target = reference_target(task.get("focus"), base)
    if target is not None and target[0] == "ServiceRequest":
        return "Task.focus", target[1]
    for i, ref in enumerate(task.get("basedOn") or ()):
        target = reference_target(ref, base)
        if target is not None and target[0] == "ServiceRequest":
            return f"Task.basedOn[{i}]", target[1]
    return None


def _read(writer: Writer, res_type: str, res_id: str) -> dict[str, Any] | None:
    stored = writer.read(res_type, res_id)
    if stored is None or stored.deleted or stored.content is None:
        return None
    content: dict[str, Any] = json_loads(stored.content)
    return content


def _is_system(event: ResourceWriting) -> bool:
    """A trusted system caller (``Policy.system``: the server, ``ig load``, an interface),
    not an anonymous caller of a server whose authorization is disabled."""
    policy = event.caller.policy
    return policy.unrestricted and policy.subject not in ("", "anonymous")


def _system_client(policy: Policy) -> bool:
    """A SMART backend-services client (only ``system/`` scopes, no user, no role): an
    integration acting for an institution (a HIS, a platform), not a person with a role."""
    return policy.role is None and bool(policy.scopes) \
        and all(scope.context == "system" for scope in policy.scopes)


def _same(a: tuple[str, str] | None, b: tuple[str, str] | None) -> bool:
    return a is not None and a == b


def parse_instant(text: Any) -> datetime | None:
    """A FHIR dateTime/instant as an aware datetime (a date or a time without an offset is
    taken as UTC); ``None`` when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# What the check hands to the Provenance: (from, to, action, version judged or 0).
Step = tuple[str, str, str, int]


class Consultation:
    """The workflow's rules on a core: attach once (``attach``), then every Task write goes
    through ``check`` and every accepted step through ``record``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        # Between the two events of one write (same thread): id(resource) -> Step.
        self._pending = threading.local()

    # ------------------------------------------------------------ before the write

    def check(self, event: ResourceWriting) -> None:
        """Refuse, in this order: a state pair or a request that cannot be (422), a step not
        in the table (409), a role or an expert that may not take it (403), a missing
        precondition (422). Remember the accepted step for ``record``."""
        if event.res_type != "Task":
            return
        new = state_of(event.resource)
        old = state_of(event.previous)
        if new is None and old is None:
            return  # not a consultation Task
        pending: dict[int, Step] = self._stash()
        if new is None:
            raise CoreError(409, "business-rule", f"Task/{event.res_id}: a consultation Task "
                            f"keeps a businessStatus in {STATE_SYSTEM} (it is in "
                            f"{_label(old)})", expression=["Task.businessStatus"])
        if new not in STATES:
            raise CoreError(422, "code-invalid", f"{new!r} is not a consultation state of "
                            f"{STATE_SYSTEM}", expression=["Task.businessStatus"])
        status = event.resource.get("status")
        if status != STATES[new][0]:
            raise CoreError(422, "business-rule",
                            f"businessStatus {_label(new)} goes with Task.status "
                            f"{STATES[new][0]!r}, not {status!r}", expression=["Task.status"])
        self._check_request(event)
        if new == (old or ""):
            return  # a change of content in the same state (a note, the overdue flag)
        transition = _BY_PAIR.get((old or "", new))
        if transition is None and old is None and _is_system(event):
            # A trusted system (a package of examples, a migration from another platform)
            # brings a consultation that is already under way: its history is elsewhere.
            transition = Transition("", new, frozenset(), "import an existing consultation")
        if transition is None:
            allowed = [_label(t.target) for t in TRANSITIONS if t.source == (old or "")]
            raise CoreError(409, "business-rule",
                            f"illegal consultation transition: Task/{event.res_id or '(new)'} "
                            f"is in {_label(old, (event.previous or {}).get('status'))}, "
                            f"requested {_label(new, status)}; from there: "
                            f"{', '.join(allowed) or 'none (a final state)'}",
                            expression=["Task.businessStatus", "Task.status"])
        policy = event.caller.policy
        if not (policy.unrestricted or _system_client(policy)) \
                and policy.role not in transition.roles:
            raise CoreError(403, "forbidden",
                            f"{_label(old)} -> {_label(new)} ({transition.action}) is for "
                            f"{' or '.join(sorted(transition.roles))}, not for the role "
                            f"{policy.role or '(none)'}", expression=["Task.businessStatus"])
        if EXPERT in transition.roles and policy.role == EXPERT:
            self._check_owner(event)
        if new == "scheduled":
            self._check_appointment(event)
        if new == "completed":
            self._check_final_report(event)
        seen = str(((event.previous or {}).get("meta") or {}).get("versionId", "0"))
        pending[id(event.resource)] = (old or "", new, transition.action,
                                       int(seen) if seen.isdecimal() else 0)

    def _stash(self) -> dict[int, Step]:
        pending: dict[int, Step] | None = getattr(self._pending, "map", None)
        if pending is None or len(pending) > 64:  # left by writes refused after this check
            pending = {}
            self._pending.map = pending
        return pending

    def _check_request(self, event: ResourceWriting) -> None:
        """The Task works on a ServiceRequest of the same patient (422 otherwise: the same
        answer whether the request is missing or another patient's, which must not leak)."""
        task = event.resource
        base = event.caller.base
        found = request_of(task, base)
        if found is None:
            raise CoreError(422, "business-rule", "a consultation Task names its request: "
                            "focus or basedOn must reference a ServiceRequest",
                            expression=["Task.basedOn"])
        path, request_id = found
        patient = reference_target(task.get("for"), base)
        request = _read(event.writer, "ServiceRequest", request_id)
        subject = reference_target((request or {}).get("subject"), base)
        if patient is None or not _same(patient, subject):
            raise CoreError(422, "business-rule",
                            f"Task.for must be the subject of ServiceRequest/{request_id}: "
                            f"{(task.get('for') or {}).get('reference', '(none)')} is not "
                            "the patient of that request", expression=["Task.for", path])

    def _check_owner(self, event: ResourceWriting) -> None:
        """The expert's steps are the owner's: when the Task names a person as its owner
        (``Practitioner``, or a ``PractitionerRole`` of one), an expert whose token is another
        person is refused (403). An Organization as owner (not yet triaged) or a token without
        ``fhirUser`` leaves it to the role."""
        base = event.caller.base
        user = reference_target({"reference": event.caller.policy.fhir_user}, base) \
            if event.caller.policy.fhir_user else None
        owner = reference_target((event.previous or event.resource).get("owner"), base)
        if user is None or owner is None or owner[0] not in ("Practitioner", "PractitionerRole"):
            return
        people = {owner}
        if owner[0] == "PractitionerRole":
            role = _read(event.writer, *owner)
            person = reference_target((role or {}).get("practitioner"), base)
            if person is not None:
                people.add(person)
        if user not in people:
            raise CoreError(403, "forbidden", f"this consultation is {owner[0]}/{owner[1]}'s; "
                            f"{user[0]}/{user[1]} is not its expert",
                            expression=["Task.owner"])

    def _check_appointment(self, event: ResourceWriting) -> None:
        found = request_of(event.resource, event.caller.base)
        assert found is not None
        ids = self.core.resources.find(
            event.writer, "Appointment", [("based-on", f"ServiceRequest/{found[1]}"),
                                          ("status", ACTIVE_APPOINTMENT)],
            event.caller.base, limit=1)
        if not ids:
            raise CoreError(422, "business-rule",
                            f"{_label('scheduled')} needs an Appointment based on "
                            f"ServiceRequest/{found[1]} (book a Slot first)",
                            expression=["Task.businessStatus", found[0]])

    def _check_final_report(self, event: ResourceWriting) -> None:
        task = event.resource
        patient = reference_target(task.get("for"), event.caller.base)
        for output in task.get("output") or ():
            target = reference_target((output or {}).get("valueReference"), event.caller.base)
            if target is None or target[0] != "DiagnosticReport":
                continue
            report = _read(event.writer, *target)
            if report is None or report.get("status") not in FINAL_REPORT:
                continue
            if _same(reference_target(report.get("subject"), event.caller.base), patient):
                return
        raise CoreError(422, "business-rule",
                        f"{_label('completed')} needs a final DiagnosticReport of the Task's "
                        "patient in Task.output (valueReference)", expression=["Task.output"])

    # ------------------------------------------------------------ after the write

    def record(self, event: ResourceChanged) -> None:
        """One Provenance per accepted step, on the same writer: target the Task version,
        the agent who moved it, when, and from -> to."""
        if event.stored.type != "Task" or event.resource is None:
            return
        pending: dict[int, Step] = self._stash()
        step = pending.pop(id(event.resource), None)
        if step is None or not event.changed:
            return
        source, target, action, seen = step
        if seen and event.stored.version_id != seen + 1:
            # Another transaction moved the Task between the check and this write (two
            # dispatchers at once, on PostgreSQL): the check judged a state that is gone.
            raise CoreError(409, "conflict", f"Task/{event.stored.id} changed while this "
                            f"transition was checked (version {seen} was judged, "
                            f"{event.stored.version_id - 1} was current): read it and retry",
                            expression=["Task.businessStatus"])
        policy = event.caller.policy
        who: dict[str, Any] = {"display": policy.subject}
        user = reference_target({"reference": policy.fhir_user}, event.caller.base) \
            if policy.fhir_user else None
        if user is not None:
            who = {"reference": f"{user[0]}/{user[1]}", "display": policy.subject}
        agent: dict[str, Any] = {"type": {"coding": [{"system": PARTICIPANT_TYPE,
                                                      "code": "author"}]}, "who": who}
        if policy.role:
            agent["role"] = [{"text": policy.role}]
        parts: list[dict[str, Any]] = []
        if source:
            parts.append({"url": "from", "valueCoding": {
                "system": STATE_SYSTEM, "code": source, "display": STATES[source][1]}})
        parts.append({"url": "to", "valueCoding": {
            "system": STATE_SYSTEM, "code": target, "display": STATES[target][1]}})
        when = event.stored.last_updated_instant
        text = f"{STATES[source][1] if source else '∅'} → {STATES[target][1]}"
        provenance = {
            "resourceType": "Provenance",
            "extension": [{"url": TRANSITION_EXTENSION, "extension": parts}],
            "target": [{"reference": event.stored.version_url}],
            "occurredDateTime": when,
            "recorded": when,
            "activity": {"coding": [{"system": DATA_OPERATION,
                                     "code": "CREATE" if not source else "UPDATE"}],
                         "text": text},
            "reason": [{"text": f"{action}: {text}"}],
            "agent": [agent],
        }
        self.core.resources.create(event.caller.derived(), "Provenance", provenance,
                                   writer=event.writer)
        TRANSITIONS_DONE.labels(target).inc()

    # ------------------------------------------------------------ overdue

    def flag_overdue(self, now: datetime | None = None, batch: int = 200) -> int:
        """Flag open requests past their deadline (per priority, from ``authoredOn``); returns
        how many were flagged this time. Each Task is its own transaction, so one that cannot
        be written (deleted request, concurrent update) does not stop the others."""
        now = now or datetime.now(UTC)
        deadlines = self.core.settings.consultation_deadline_seconds
        base = self.core.settings.public_base
        states = ",".join(f"{STATE_SYSTEM}|{s}" for s in OPEN_STATES)
        flagged = 0
        for priority, seconds in deadlines.items():
            cutoff = (now - timedelta(seconds=seconds)).isoformat(timespec="seconds")
            criteria: list[list[tuple[str, str]]] = [[("priority", priority)]]
            if priority == "routine":  # no priority is routine (FHIR's default meaning)
                criteria.append([("priority:missing", "true")])
            for extra in criteria:
                query = [("business-status", states), ("authored-on", f"lt{cutoff}"),
                         ("_tag:not", f"{FLAG_SYSTEM}|overdue"), *extra]
                with self.core.store.write() as writer:
                    ids = self.core.resources.find(writer, "Task", query, base, limit=batch)
                for task_id in ids:
                    if self._flag(task_id, now, timedelta(seconds=seconds)):
                        flagged += 1
        OVERDUE_FLAGGED.inc(flagged)
        with self.core.store.write() as writer:
            OVERDUE.set(len(self.core.resources.find(
                writer, "Task", [("business-status", states),
                                 ("_tag", f"{FLAG_SYSTEM}|overdue")], base, limit=10_000)))
        return flagged

    def _flag(self, task_id: str, now: datetime, allowed: timedelta) -> bool:
        try:
            with self.core.store.write() as writer:
                task = self.core.resources.current(writer, "Task", task_id)
                authored = parse_instant((task or {}).get("authoredOn"))
                if task is None or authored is None or authored + allowed >= now \
                        or state_of(task) not in OPEN_STATES:
                    return False
                stored = writer.read("Task", task_id)
                assert stored is not None and stored.content is not None
                meta = json_loads(stored.content).get("meta") or {}
                meta.pop("versionId", None)
                meta.pop("lastUpdated", None)
                meta["tag"] = [*(meta.get("tag") or []),
                               {"system": FLAG_SYSTEM, "code": "overdue", "display": "逾期"}]
                # The extension holds the deadline that passed.
                extension = [e for e in task.get("extension") or ()
                             if e.get("url") != OVERDUE_EXTENSION]
                extension.append({"url": OVERDUE_EXTENSION, "valueDateTime": (
                    authored + allowed).isoformat(timespec="seconds")})
                task["extension"] = extension
                task["meta"] = meta
                self.core.resources.update(self.core.server, "Task", task_id, task,
                                           if_match=stored.version_id, writer=writer)
                return True
        except CoreError as exc:
            log.warning("consultation: Task/%s not flagged overdue: %s", task_id, exc)
            return False


class OverdueCheck(Periodic):
    """The periodic check (``serve`` starts it with the listeners)."""

    name = "consultation-overdue"

    def __init__(self, consultation: Consultation, interval: float = 60.0) -> None:
        super().__init__(interval)
        self.consultation = consultation

    def round(self) -> int:
        return self.consultation.flag_overdue()


def attach(core: Core) -> None:
    """Enforce the workflow on the core's Task writes and record each step."""
    consultation = Consultation(core)
    core.events.listen(ResourceWriting, consultation.check)
    core.events.listen(ResourceChanged, consultation.record)
    core.consultation = consultation  # type: ignore[attr-defined]


def workflow_of(core: Core) -> Consultation:
    found: Consultation | None = getattr(core, "consultation", None)
    if found is None:
        raise LookupError("the consultation domain is not attached to this core")
    return found
