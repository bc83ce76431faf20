"""Critical values (超声危急值, STANDARDS.md §8; quality indicator US-CV-01: the requesting
doctor is notified within 10 minutes of the report).

**Notify.** When a DiagnosticReport is written final (or amended, corrected, appended) with a
critical finding, a ``SonoCriticalValueCommunication`` is created in the same transaction:
category alert, priority stat, ``about`` the report, ``subject`` its patient, ``recipient`` the
requester of the ServiceRequest the report is ``basedOn`` (else the study's referrer, else the
patient's general practitioner), ``reasonCode`` the findings, ``sent`` now, status in-progress
(awaiting acknowledgement). Creating it fires the ``critical-value`` subscription topic. A
finding is critical when
  - a ``conclusionCode`` is in the guide's ``sono-critical-finding`` code system, or
  - a ``result`` Observation's ``interpretation`` is (the expert flags a measurement), or
  - a ``result`` is an LVEF (LOINC 18043-0 / 10230-1 / 8806-2) below 35 % and no earlier LVEF
    of the patient was below 35 % ("first finding of LVEF < 35 %"), or
  - the results hold a gestational age >= 28 weeks (LOINC 18185-9), an amniotic fluid index
    <= 5 cm (11627-7) and a fetal heart rate > 160 or < 110 /min (11948-7).
Each finding is notified once per report: an amendment that adds a new one notifies that one.

**Acknowledge.** The recipient acknowledges by completing the Communication (``status``
completed with ``received``) or by replying (a Communication ``inResponseTo`` it, which
completes it with the reply's ``sent``). The times from the report's ``issued`` to ``sent`` and
to the acknowledgement are kept on the Communication (extensions ``critical-value-sent-after``
and ``critical-value-acknowledged-after``, a ``critical-value-late`` flag past the limit) and on
``/metrics``; the QC indicator (core/measures) reads ``sent`` against ``issued``.

**Escalate.** ``escalate_overdue`` (run every minute by ``EscalationCheck``, or on demand by
``POST Communication/$critical-escalate``) finds alerts still
unacknowledged after the limit (``SONOBRIDGE_CRITICAL_ACK_MINUTES``, 10 by default) and sends
an escalation Communication to the requesting organisation (``partOf`` the alert), tags the
alert ``escalated`` and counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from sonobridge.core.access import require
from sonobridge.core.errors import CoreError
from sonobridge.core.events import ResourceChanged
from sonobridge.core.operations import Operation, OperationCall, OperationResult
from sonobridge.core.policy import Caller
from sonobridge.jsonio import loads as json_loads
from sonobridge.periodic import Periodic
from sonobridge.store.resources import Writer

if TYPE_CHECKING:
    from sonobridge.core.services import Core

log = logging.getLogger("sonobridge.critical")

CANONICAL = "http://sonobridge.org/fhir"  # the implementation guide's base (conformance/ig)
FINDING_SYSTEM = f"{CANONICAL}/CodeSystem/sono-critical-finding"
PROFILE = f"{CANONICAL}/StructureDefinition/sono-critical-value-communication"
SENT_AFTER = f"{CANONICAL}/StructureDefinition/critical-value-sent-after"
ACKNOWLEDGED_AFTER = f"{CANONICAL}/StructureDefinition/critical-value-acknowledged-after"
LATE = f"{CANONICAL}/StructureDefinition/critical-value-late"
ESCALATED = f"{CANONICAL}/StructureDefinition/critical-value-escalated"
FLAG_SYSTEM = f"{CANONICAL}/CodeSystem/sono-critical-value-flag"
CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"

# The 14 findings of the guide's code system (conformance/ig/content.py CRITICAL_FINDING: the
# core may not import an edge; a test keeps the two lists equal).
FINDINGS: dict[str, str] = {
    "organ-rupture": "肝脾肾破裂出血", "ectopic-rupture": "异位妊娠破裂并腹腔内出血",
    "cholecystitis": "急性化脓性或穿孔性胆囊炎", "oligohydramnios-fhr": "晚孕期羊水过少并胎心异常",
    "uterine-rupture": "子宫破裂", "placental-abruption": "胎盘早剥或前置胎盘活动性出血",
    "lvef-low": "首次发现左室射血分数 < 35%", "tamponade": "心包积液合并心脏压塞",
    "aortic-dissection": "主动脉夹层", "aneurysm-rupture": "主动脉瘤破裂",
    "cardiac-rupture": "心脏破裂",
    "floating-thrombus": "心腔内游离血栓", "limb-embolism": "急性肢体动脉栓塞",
    "stuck-valve": "人工瓣膜卡瓣",
}
LVEF_CODES = frozenset({"18043-0", "10230-1", "8806-2"})
LVEF_LIMIT = 35.0
SIGNED = frozenset({"final", "amended", "corrected", "appended"})
DEFAULT_ACK_MINUTES = 10.0
MAX_RESULTS = 500

NOTIFIED = Counter("sonobridge_critical_values_total",
                   "Critical value notifications sent (Communication created)")
LATE_TOTAL = Counter("sonobridge_critical_values_late_total",
                     "Critical value notifications later than the limit after the report",
                     ["stage"])
ESCALATED_TOTAL = Counter("sonobridge_critical_values_escalated_total",
                          "Critical value notifications not acknowledged in time, escalated")
DELAY = Histogram("sonobridge_critical_value_delay_seconds",
                  "Time from the report's issue to the notification (sent, acknowledged)",
                  ["stage"], buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 14400))


def parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 19:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _minutes(delta: timedelta) -> dict[str, Any]:
    return {"value": round(delta.total_seconds() / 60, 2), "unit": "min", "system": UCUM,
            "code": "min"}


def _ref(value: Any) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else None


def _local(ref: str | None, base: str) -> str | None:
    """``Type/id`` of a reference (absolute ones on this server's base included)."""
    if ref is None:
        return None
    if base and ref.startswith(base.rstrip("/") + "/"):
        ref = ref[len(base.rstrip("/")) + 1:]
    parts = ref.split("/")
    return ref if len(parts) == 2 and all(parts) else None


def _codes(concepts: Any) -> set[str]:
    out: set[str] = set()
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        for coding in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(coding, dict) and coding.get("system") == FINDING_SYSTEM \
                    and coding.get("code") in FINDINGS:
                out.add(str(coding["code"]))
    return out


# Late-pregnancy oligohydramnios with an abnormal fetal heart rate, from the report's results
# (TID 5000 measurements): AFI <= 5 cm, FHR > 160 or < 110 /min, gestational age >= 28 weeks.
AFI, FHR, GA = "11627-7", "11948-7", "18185-9"
UNIT_FACTORS = {AFI: {"cm": 1.0, "mm": 0.1}, FHR: {"/min": 1.0, "{beats}/min": 1.0},
                GA: {"d": 1.0, "wk": 7.0}}


def _obstetric(obs: dict[str, Any]) -> dict[str, float]:
    """AFI in cm, FHR per minute, GA in days, when ``obs`` is one of them in a known UCUM
    unit (anything else says nothing)."""
    if obs.get("status") in ("entered-in-error", "cancelled"):
        return {}
    quantity = obs.get("valueQuantity") or {}
    value = quantity.get("value")
    if not isinstance(value, int | float) or quantity.get("system") != UCUM:
        return {}
    for coding in (obs.get("code") or {}).get("coding") or []:
        code = coding.get("code") if isinstance(coding, dict) else None
        if coding.get("system") == LOINC and code in UNIT_FACTORS:
            factor = UNIT_FACTORS[code].get(str(quantity.get("code")))
            if factor is not None:
                return {code: float(value) * factor}
    return {}


def _oligohydramnios_with_abnormal_fhr(measured: dict[str, float]) -> bool:
    if AFI not in measured or FHR not in measured or GA not in measured:
        return False  # without all three the expert says it (conclusionCode)
    return measured[GA] >= 28 * 7 and measured[AFI] <= 5.0 and \
        (measured[FHR] > 160 or measured[FHR] < 110)


def _is_alert(resource: dict[str, Any]) -> bool:
    return PROFILE in ((resource.get("meta") or {}).get("profile") or []) or any(
        isinstance(c, dict) and c.get("code") == "alert" and c.get("system") == CATEGORY
        for cat in resource.get("category") or [] for c in (cat or {}).get("coding") or [])


class Critical:
    def __init__(self, core: Core, clock: Callable[[], datetime] | None = None) -> None:
        self.core = core
        self.clock = clock or (lambda: datetime.now(UTC))
        minutes = getattr(core.settings, "critical_ack_minutes", DEFAULT_ACK_MINUTES)
        self.limit = timedelta(minutes=float(minutes))

    def listen(self) -> None:
        self.core.events.listen(ResourceChanged, self.changed)

    def changed(self, event: ResourceChanged) -> None:
        if event.resource is None or not event.changed:
            return
        if event.stored.type == "DiagnosticReport":
            self.report(event.writer, event.caller, event.stored.id, event.resource)
        elif event.stored.type == "Communication":
            self.communication(event.writer, event.caller, event.stored.id, event.resource)

    # ------------------------------------------------------------ notify

    def findings(self, writer: Writer, base: str, report: dict[str, Any]) -> list[str]:
        """The critical findings a report states (conclusion codes, flagged results, a first
        LVEF below 35 %, late oligohydramnios with an abnormal fetal heart rate), in the code
        system's order."""
        found = _codes(report.get("conclusionCode"))
        subject = _ref(report.get("subject"))
        results = [r for r in (_local(_ref(x), base) for x in
                               (report.get("result") or [])[:MAX_RESULTS]) if r]
        own = {r.removeprefix("Observation/") for r in results
               if r.startswith("Observation/")}
        measured: dict[str, float] = {}  # LOINC code -> value in the unit _obstetric wants
        for obs_id in sorted(own):
            obs = self.core.resources.current(writer, "Observation", obs_id)
            if obs is None:
                continue
            found |= _codes(obs.get("interpretation"))
            if self._low_lvef(obs) and subject is not None and \
                    self._first_low_lvef(writer, base, subject, own):
                found.add("lvef-low")
            measured.update(_obstetric(obs))
        if _oligohydramnios_with_abnormal_fhr(measured):
            found.add("oligohydramnios-fhr")
        return [code for code in FINDINGS if code in found]

    @staticmethod
    def _low_lvef(obs: dict[str, Any]) -> bool:
        codes = {str(c.get("code")) for c in (obs.get("code") or {}).get("coding") or []
                 if isinstance(c, dict) and c.get("system") == LOINC}
        value = (obs.get("valueQuantity") or {}).get("value")
        return bool(codes & LVEF_CODES) and isinstance(value, int | float) and \
            value < LVEF_LIMIT and obs.get("status") not in ("entered-in-error", "cancelled")

    def _first_low_lvef(self, writer: Writer, base: str, subject: str, own: set[str]) -> bool:
        codes = ",".join(f"{LOINC}|{c}" for c in sorted(LVEF_CODES))
        earlier = self.core.resources.find(
            writer, "Observation", [("subject", subject), ("code", codes),
                                    ("value-quantity", f"lt{LVEF_LIMIT:g}")], base, limit=50)
        return not [i for i in earlier if i not in own]

    def report(self, writer: Writer, caller: Caller, report_id: str,
               report: dict[str, Any]) -> None:
        if report.get("status") not in SIGNED:
            return
        base = caller.base
        findings = self.findings(writer, base, report)
        if not findings:
            return
        about = f"DiagnosticReport/{report_id}"
        notified: set[str] = set()
        subject = _ref(report.get("subject"))
        # R4 has no Communication search by ``about``: the patient's alerts, then their about.
        for comm_id in self.core.resources.find(
                writer, "Communication", [("subject", subject),
                                          ("category", f"{CATEGORY}|alert")],
                base, limit=1000) if subject else []:
            comm = self.core.resources.current(writer, "Communication", comm_id) or {}
            if comm.get("status") != "entered-in-error" and about in {
                    _local(_ref(x), base) for x in comm.get("about") or []}:
                notified |= _codes(comm.get("reasonCode"))
        new = [code for code in findings if code not in notified]
        if not new:
            return
        now = self.clock()
        comm = self.alert(writer, base, report_id, report, new, now)
        self.core.resources.create(caller.derived(), "Communication", comm, writer=writer)
        NOTIFIED.inc()
        issued = parse_instant(report.get("issued"))
        if issued is not None:
            DELAY.labels("sent").observe(max((now - issued).total_seconds(), 0.0))
            if now - issued > self.limit:
                LATE_TOTAL.labels("sent").inc()
        log.info("critical value notified for %s: %s", about, ", ".join(new))

    def alert(self, writer: Writer, base: str, report_id: str, report: dict[str, Any],
              findings: list[str], now: datetime) -> dict[str, Any]:
        recipient = self.requester(writer, base, report)
        comm: dict[str, Any] = {
            "resourceType": "Communication",
            "status": "in-progress",
            "category": [{"coding": [{"system": CATEGORY, "code": "alert", "display": "Alert"}]}],
            "priority": "stat",
            "about": [{"reference": f"DiagnosticReport/{report_id}"}],
            "sent": _instant(now),
            "reasonCode": [{"coding": [{"system": FINDING_SYSTEM, "code": code,
                                        "display": FINDINGS[code]}]} for code in findings],
            "payload": [{"contentString": "超声危急值 Critical ultrasound finding: "
                         + "; ".join(FINDINGS[c] for c in findings)
                         + (f". {report['conclusion']}" if isinstance(
                             report.get("conclusion"), str) else "")}],
        }
        if report.get("subject"):
            comm["subject"] = {"reference": _ref(report["subject"])}
        sender = (report.get("resultsInterpreter") or report.get("performer") or [None])[0]
        if _ref(sender):
            comm["sender"] = {"reference": _ref(sender)}
        if recipient:
            comm["recipient"] = [{"reference": recipient}]
        if report.get("basedOn"):
            comm["basedOn"] = [{"reference": r} for r in
                               (_ref(x) for x in report["basedOn"]) if r]
        issued = parse_instant(report.get("issued"))
        if issued is not None:
            delay = now - issued
            comm["extension"] = [{"url": SENT_AFTER, "valueDuration": _minutes(delay)},
                                 {"url": LATE, "valueBoolean": delay > self.limit}]
        if recipient and comm.get("subject"):
            comm["meta"] = {"profile": [PROFILE]}
        else:
            log.warning("critical value of DiagnosticReport/%s: no %s: the notification is "
                        "made without it", report_id,
                        "requester to notify" if not recipient else "subject")
        return comm

    def requester(self, writer: Writer, base: str, report: dict[str, Any]) -> str | None:
        """Who asked for the exam: the request's requester, the study's referrer, the
        patient's general practitioner."""
        for ref in (_local(_ref(x), base) for x in report.get("basedOn") or []):
            if ref and ref.startswith("ServiceRequest/"):
                request = self.core.resources.current(writer, "ServiceRequest",
                                                      ref.split("/")[1]) or {}
                found = _ref(request.get("requester"))
                if found:
                    return found
        for ref in (_local(_ref(x), base) for x in report.get("imagingStudy") or []):
            if ref and ref.startswith("ImagingStudy/"):
                study = self.core.resources.current(writer, "ImagingStudy",
                                                    ref.split("/")[1]) or {}
                found = _ref(study.get("referrer"))
                if found:
                    return found
        subject = _local(_ref(report.get("subject")), base)
        if subject and subject.startswith("Patient/"):
            patient = self.core.resources.current(writer, "Patient", subject.split("/")[1]) or {}
            for gp in patient.get("generalPractitioner") or []:
                if _ref(gp):
                    return _ref(gp)
        return None

    # ------------------------------------------------------------ acknowledge

    def communication(self, writer: Writer, caller: Caller, comm_id: str,
                      comm: dict[str, Any]) -> None:
        base = caller.base
        for target in (_local(_ref(x), base) for x in comm.get("inResponseTo") or []):
            if not target or not target.startswith("Communication/"):
                continue
            alert_id = target.split("/")[1]
            alert = self.core.resources.current(writer, "Communication", alert_id)
            if alert is None or not _is_alert(alert) or alert.get("status") == "completed":
                continue
            received = parse_instant(comm.get("sent")) or self.clock()
            alert["status"] = "completed"
            alert["received"] = _instant(received)
            self._acknowledged(writer, caller, alert_id, alert, received)
        if _is_alert(comm) and comm.get("status") == "completed":
            acknowledged = parse_instant(comm.get("received"))
            has = any(e.get("url") == ACKNOWLEDGED_AFTER for e in comm.get("extension") or [])
            if acknowledged is not None and not has:
                self._acknowledged(writer, caller, comm_id, dict(comm), acknowledged)

    def _acknowledged(self, writer: Writer, caller: Caller, alert_id: str,
                      alert: dict[str, Any], received: datetime) -> None:
        """Record the acknowledgement time on the alert (rewritten once, so the extension
        guard above stops the second round)."""
        report_ref = next((r for r in (_local(_ref(x), caller.base)
                                       for x in alert.get("about") or [])
                           if r and r.startswith("DiagnosticReport/")), None)
        report = self.core.resources.current(writer, "DiagnosticReport",
                                             report_ref.split("/")[1]) if report_ref else None
        issued = parse_instant((report or {}).get("issued"))
        extension = [e for e in alert.get("extension") or []
                     if e.get("url") not in (ACKNOWLEDGED_AFTER, LATE)]
        late = False
        if issued is not None:
            delay = received - issued
            late = delay > self.limit
            extension.append({"url": ACKNOWLEDGED_AFTER, "valueDuration": _minutes(delay)})
            DELAY.labels("acknowledged").observe(max(delay.total_seconds(), 0.0))
            if late:
                LATE_TOTAL.labels("acknowledged").inc()
        else:
            extension.append({"url": ACKNOWLEDGED_AFTER, "valueDuration": _minutes(
                received - (parse_instant(alert.get("sent")) or received))})
        extension.append({"url": LATE, "valueBoolean": late})
        alert["extension"] = extension
        alert["id"] = alert_id
        stored = writer.read("Communication", alert_id)
        if stored is not None and stored.content is not None:
            meta = json_loads(stored.content).get("meta") or {}
            meta.pop("versionId", None)
            meta.pop("lastUpdated", None)
            if meta:
                alert["meta"] = meta
        self.core.resources.update(caller.derived(), "Communication", alert_id, alert,
                                   writer=writer)

    # ------------------------------------------------------------ escalate

    def escalate_overdue(self, now: datetime | None = None, batch: int = 200) -> int:
        """Escalate alerts unacknowledged past the limit; returns how many. Each in its own
        transaction, so one that cannot be written does not stop the others."""
        now = now or self.clock()
        cutoff = _instant(now - self.limit)
        base = self.core.settings.public_base
        with self.core.store.write() as writer:
            ids = self.core.resources.find(writer, "Communication", [
                ("category", f"{CATEGORY}|alert"), ("status", "in-progress,preparation"),
                ("sent", f"lt{cutoff}"), ("_tag:not", f"{FLAG_SYSTEM}|escalated")],
                base, limit=batch)
        done = 0
        for alert_id in ids:
            try:
                with self.core.store.write() as writer:
                    if self._escalate(writer, alert_id, now):
                        done += 1
            except CoreError as exc:
                log.warning("critical value Communication/%s not escalated: %s", alert_id,
                            exc)
        ESCALATED_TOTAL.inc(done)
        return done

    def _escalate(self, writer: Writer, alert_id: str, now: datetime) -> bool:
        server = self.core.server
        stored = writer.read("Communication", alert_id)
        if stored is None or stored.deleted or stored.content is None:
            return False
        alert = json_loads(stored.content)
        if alert.get("status") not in ("in-progress", "preparation"):
            return False
        base = server.base
        organization = self.organization(writer, base, alert)
        escalation: dict[str, Any] = {
            "resourceType": "Communication", "status": "in-progress",
            "category": [{"coding": [{"system": CATEGORY, "code": "notification",
                                      "display": "Notification"}]}],
            "priority": "stat",
            "partOf": [{"reference": f"Communication/{alert_id}"}],
            "about": alert.get("about") or [],
            "sent": _instant(now),
            "reasonCode": alert.get("reasonCode") or [],
            "payload": [{"contentString": "危急值通知未在时限内确认，请立即处理。Critical value "  # noqa: RUF001
                         "notification not acknowledged in time: please act now."}],
        }
        if alert.get("subject"):
            escalation["subject"] = alert["subject"]
        if organization:
            escalation["recipient"] = [{"reference": organization}]
        self.core.resources.create(server, "Communication", escalation, writer=writer)
        meta = alert.get("meta") or {}
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        meta["tag"] = [*(meta.get("tag") or []),
                       {"system": FLAG_SYSTEM, "code": "escalated", "display": "已升级"}]
        alert["meta"] = meta
        alert["extension"] = [*(e for e in alert.get("extension") or []
                                if e.get("url") != ESCALATED),
                              {"url": ESCALATED, "valueDateTime": _instant(now)}]
        self.core.resources.update(server, "Communication", alert_id, alert,
                                   if_match=stored.version_id, writer=writer)
        log.warning("critical value Communication/%s not acknowledged within %s: escalated "
                    "to %s", alert_id, self.limit, organization or "nobody known")
        return True

    def organization(self, writer: Writer, base: str, alert: dict[str, Any]) -> str | None:
        """The requesting organisation: the recipient's own (a PractitionerRole's), the
        request's requester if an Organization, the patient's managing organisation."""
        for ref in (_local(_ref(x), base) for x in alert.get("recipient") or []):
            if ref and ref.startswith("Organization/"):
                return ref
            if ref and ref.startswith("PractitionerRole/"):
                role = self.core.resources.current(writer, "PractitionerRole",
                                                   ref.split("/")[1]) or {}
                if _ref(role.get("organization")):
                    return _ref(role.get("organization"))
        subject = _local(_ref(alert.get("subject")), base)
        if subject and subject.startswith("Patient/"):
            patient = self.core.resources.current(writer, "Patient", subject.split("/")[1]) or {}
            found = _ref(patient.get("managingOrganization"))
            if found:
                return found
        return None


def escalate_operation(critical: Critical, call: OperationCall) -> OperationResult:
    """``POST /fhir/Communication/$critical-escalate``: run the escalation now (for a
    scheduler outside the server, or a test); answers how many alerts were escalated."""
    require(call.caller.policy, "Communication", "c")
    done = critical.escalate_overdue()
    return OperationResult({"resourceType": "Parameters", "parameter": [
        {"name": "escalated", "valueInteger": done}]})


class EscalationCheck(Periodic):
    """The periodic escalation (``serve`` starts it with the listeners)."""

    name = "critical-value-escalation"

    def __init__(self, critical: Critical, interval: float = 60.0) -> None:
        super().__init__(interval)
        self.critical = critical

    def round(self) -> int:
        return self.critical.escalate_overdue()


def attach(core: Core) -> None:
    critical = Critical(core)
    critical.listen()
    core.operations.register(Operation(
        "critical-escalate", frozenset({"type"}), lambda call: escalate_operation(critical, call),
        types=frozenset({"Communication"}), affects_state=True,
        definition=f"{CANONICAL}/OperationDefinition/critical-escalate",
        documentation="Escalate critical-value notifications not acknowledged within the "
                      "limit (US-CV-01) to the requesting organisation; answers how many"))
    core.critical = critical  # type: ignore[attr-defined]


def critical_of(core: Core) -> Critical:
    found: Critical | None = getattr(core, "critical", None)
    if found is None:
        raise LookupError("the critical-values domain is not attached to this core")
    return found
