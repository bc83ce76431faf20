"""Critical values (core/critical.py): a final report with a critical finding notifies the
requester at once, the acknowledgement (completion or reply) is timed, an unacknowledged one is
escalated; the finding comes from the conclusion code, a flagged result or a first LVEF < 35 %.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from sonobridge.conformance.ig.content import CRITICAL_FINDING
from sonobridge.core.critical import (
    ACKNOWLEDGED_AFTER,
    ESCALATED,
    FINDING_SYSTEM,
    FINDINGS,
    LATE,
    PROFILE,
    SENT_AFTER,
    critical_of,
    parse_instant,
)

NOW = datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def seed(client) -> None:
    for body in (
        {"resourceType": "Organization", "id": "clinic", "name": "乡镇卫生院"},
        {"resourceType": "Patient", "id": "p1", "managingOrganization": {
            "reference": "Organization/clinic"}},
        {"resourceType": "Practitioner", "id": "gp"},
        {"resourceType": "Practitioner", "id": "expert"},
        {"resourceType": "ServiceRequest", "id": "req", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/p1"}, "requester": {"reference": "Practitioner/gp"}},
    ):
        r = client.put(f"/fhir/{body['resourceType']}/{body['id']}", json=body)
        assert r.status_code in (200, 201), r.text


def report(rid: str = "r1", status: str = "final", codes: tuple[str, ...] = ("organ-rupture",),
           issued: datetime | None = None, **extra) -> dict:
    body = {"resourceType": "DiagnosticReport", "id": rid, "status": status,
            "code": {"text": "腹部超声"}, "subject": {"reference": "Patient/p1"},
            "basedOn": [{"reference": "ServiceRequest/req"}],
            "resultsInterpreter": [{"reference": "Practitioner/expert"}],
            "issued": iso(issued or NOW - timedelta(minutes=3)),
            "conclusion": "脾破裂出血可能", **extra}
    if codes:
        body["conclusionCode"] = [{"coding": [{"system": FINDING_SYSTEM, "code": c}]}
                                  for c in codes]
    return body


def put(client, body: dict):
    r = client.put(f"/fhir/{body['resourceType']}/{body['id']}", json=body)
    assert r.status_code in (200, 201), r.text
    return r


def alerts(client, rid: str = "r1") -> list[dict]:
    """The Communications about a report (R4 has no ``about`` search: the patient's)."""
    r = client.get("/fhir/Communication", params={"subject": "Patient/p1",
                                                  "_sort": "_lastUpdated", "_count": "100"})
    assert r.status_code == 200
    found = [e["resource"] for e in r.json().get("entry", [])]
    assert all(c["resourceType"] == "Communication" for c in found), found
    return [c for c in found if {"reference": f"DiagnosticReport/{rid}"} in c.get("about", [])]


def ext(resource: dict, url: str):
    found = [e for e in resource.get("extension", []) if e["url"] == url]
    return found[0] if found else None


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_code_system_is_the_guides():
    assert {code: zh for code, zh, _ in CRITICAL_FINDING} == FINDINGS


def test_a_final_critical_report_notifies_the_requester(client):
    seed(client)
    before = metric("sonobridge_critical_values_total")
    put(client, report(status="preliminary"))
    assert alerts(client) == []  # not signed yet
    put(client, report())
    (alert,) = alerts(client)
    assert alert["meta"]["profile"] == [PROFILE]
    assert alert["status"] == "in-progress"
    assert alert["category"][0]["coding"][0]["code"] == "alert"
    assert alert["priority"] == "stat"
    assert alert["recipient"] == [{"reference": "Practitioner/gp"}]
    assert alert["sender"] == {"reference": "Practitioner/expert"}
    assert alert["subject"] == {"reference": "Patient/p1"}
    assert alert["about"] == [{"reference": "DiagnosticReport/r1"}]
    assert alert["basedOn"] == [{"reference": "ServiceRequest/req"}]
    assert alert["reasonCode"][0]["coding"][0] == {
        "system": FINDING_SYSTEM, "code": "organ-rupture", "display": "肝脾肾破裂出血"}
    sent = parse_instant(alert["sent"])
    assert sent is not None and abs(sent - datetime.now(UTC)) < timedelta(minutes=1)
    delay = ext(alert, SENT_AFTER)["valueDuration"]
    # issued 3 min before the module was loaded; the suite may have run a while since
    expected = (sent - (NOW - timedelta(minutes=3))).total_seconds() / 60
    assert delay["code"] == "min" and abs(delay["value"] - expected) < 0.1
    assert ext(alert, LATE)["valueBoolean"] is (expected > 10)
    assert "脾破裂" in alert["payload"][0]["contentString"]
    assert metric("sonobridge_critical_values_total") == before + 1
    # amending without a new finding notifies nobody again; a new finding is notified alone
    put(client, report(status="amended", conclusion="补充"))
    assert len(alerts(client)) == 1
    put(client, report(status="amended", codes=("organ-rupture", "aortic-dissection")))
    second = alerts(client)[1]
    assert [c["coding"][0]["code"] for c in second["reasonCode"]] == ["aortic-dissection"]


def test_no_critical_finding_no_notification(client):
    seed(client)
    put(client, report(codes=()))
    other = report(rid="r2")
    other["conclusionCode"] = [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                            "code": "S36.0"}]}]
    put(client, other)
    assert alerts(client) == [] and alerts(client, "r2") == []


def test_late_notification_is_flagged(client):
    seed(client)
    before = metric("sonobridge_critical_values_late_total", stage="sent")
    put(client, report(issued=NOW - timedelta(minutes=25)))
    (alert,) = alerts(client)
    assert ext(alert, LATE)["valueBoolean"] is True
    assert ext(alert, SENT_AFTER)["valueDuration"]["value"] >= 25
    assert metric("sonobridge_critical_values_late_total", stage="sent") == before + 1


def test_acknowledged_by_completion(client):
    seed(client)
    put(client, report())
    (alert,) = alerts(client)
    alert["status"] = "completed"
    alert["received"] = iso(NOW + timedelta(minutes=2))
    put(client, alert)
    (done,) = alerts(client)
    assert done["status"] == "completed"
    assert ext(done, ACKNOWLEDGED_AFTER)["valueDuration"]["value"] == 5  # issued -3, +2
    assert ext(done, LATE)["valueBoolean"] is False
    assert done["meta"]["profile"] == [PROFILE]
    assert done["meta"]["versionId"] == "3"  # the acknowledgement, then its timing, once


def test_acknowledged_by_reply_and_late(client):
    seed(client)
    put(client, report())
    (alert,) = alerts(client)
    r = client.post("/fhir/Communication", json={
        "resourceType": "Communication", "status": "completed",
        "inResponseTo": [{"reference": f"Communication/{alert['id']}"}],
        "sent": iso(NOW + timedelta(minutes=9)), "payload": [{"contentString": "收到，已处理"}]})  # noqa: RUF001
    assert r.status_code == 201, r.text
    done = client.get(f"/fhir/Communication/{alert['id']}").json()
    assert done["status"] == "completed"
    assert parse_instant(done["received"]) == NOW + timedelta(minutes=9)
    assert ext(done, ACKNOWLEDGED_AFTER)["valueDuration"]["value"] == 12
    assert ext(done, LATE)["valueBoolean"] is True


def test_unacknowledged_alerts_are_escalated_once(client, core):
    seed(client)
    put(client, report())
    put(client, report(rid="r2", codes=("tamponade",)))
    (acked,) = alerts(client, "r2")
    acked.update(status="completed", received=iso(NOW))
    put(client, acked)
    critical = critical_of(core)
    before = metric("sonobridge_critical_values_escalated_total")
    assert critical.escalate_overdue(datetime.now(UTC) + timedelta(minutes=5)) == 0  # in time
    assert critical.escalate_overdue(datetime.now(UTC) + timedelta(minutes=11)) == 1
    assert critical.escalate_overdue(datetime.now(UTC) + timedelta(minutes=30)) == 0  # once
    assert metric("sonobridge_critical_values_escalated_total") == before + 1
    alert, escalation = alerts(client)
    assert escalation["partOf"] == [{"reference": f"Communication/{alert['id']}"}]
    assert escalation["recipient"] == [{"reference": "Organization/clinic"}]
    assert escalation["priority"] == "stat"
    assert escalation["category"][0]["coding"][0]["code"] == "notification"
    assert escalation["reasonCode"] == alert["reasonCode"]
    assert ext(alert, ESCALATED) is not None
    assert any(t["code"] == "escalated" for t in alert["meta"]["tag"])
    assert alert["status"] == "in-progress"  # still waiting for the requester
    assert len(alerts(client, "r2")) == 1


def test_a_flagged_result_and_a_first_low_lvef(client):
    seed(client)

    def observation(oid: str, value: float, flag: str | None = None) -> dict:
        body = {"resourceType": "Observation", "id": oid, "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "18043-0"}]},
                "subject": {"reference": "Patient/p1"},
                "valueQuantity": {"value": value, "unit": "%",
                                  "system": "http://unitsofmeasure.org", "code": "%"}}
        if flag:
            body["interpretation"] = [{"coding": [{"system": FINDING_SYSTEM, "code": flag}]}]
        return body

    put(client, observation("lv1", 55, flag="floating-thrombus"))
    put(client, report(rid="e1", codes=(), result=[{"reference": "Observation/lv1"}]))
    (alert,) = alerts(client, "e1")
    assert alert["reasonCode"][0]["coding"][0]["code"] == "floating-thrombus"
    put(client, observation("lv2", 30))
    put(client, report(rid="e2", codes=(), result=[{"reference": "Observation/lv2"}]))
    (alert,) = alerts(client, "e2")
    assert alert["reasonCode"][0]["coding"][0]["code"] == "lvef-low"
    # a later low LVEF is not a first finding
    put(client, observation("lv3", 28))
    put(client, report(rid="e3", codes=(), result=[{"reference": "Observation/lv3"}]))
    assert alerts(client, "e3") == []


def test_no_requester_known(client, caplog):
    seed(client)
    body = report()
    del body["basedOn"]
    put(client, body)
    (alert,) = alerts(client)
    assert "recipient" not in alert
    assert PROFILE not in alert["meta"].get("profile", [])  # it would not conform
    assert any("no requester" in r.getMessage() for r in caplog.records)


def test_escalation_on_demand_by_operation(client, core):
    seed(client)
    critical = critical_of(core)
    critical.clock = lambda: datetime.now(UTC) - timedelta(minutes=12)  # sent 12 min ago
    put(client, report(issued=NOW - timedelta(minutes=13)))
    critical.clock = lambda: datetime.now(UTC)
    assert client.get("/fhir/Communication/$critical-escalate").status_code == 405
    r = client.post("/fhir/Communication/$critical-escalate")
    assert r.status_code == 200, r.text
    assert r.json()["parameter"] == [{"name": "escalated", "valueInteger": 1}]
    r = client.post("/fhir/Communication/$critical-escalate")
    assert r.json()["parameter"][0]["valueInteger"] == 0
    ops = client.get("/fhir/metadata").json()["rest"][0]["resource"]
    communication = next(r for r in ops if r["type"] == "Communication")
    assert "critical-escalate" in {o["name"] for o in communication.get("operation", [])}


def test_late_oligohydramnios_with_an_abnormal_fetal_heart_rate(client):
    seed(client)

    def obs(oid: str, code: str, value: float, unit: str) -> str:
        put(client, {"resourceType": "Observation", "id": oid, "status": "final",
                     "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                     "subject": {"reference": "Patient/p1"},
                     "valueQuantity": {"value": value, "unit": unit,
                                       "system": "http://unitsofmeasure.org", "code": unit}})
        return oid

    def results(*ids: str) -> list[dict]:
        return [{"reference": f"Observation/{i}"} for i in ids]

    ga, afi = obs("ga", "18185-9", 36, "wk"), obs("afi", "11627-7", 42, "mm")
    fast, normal = obs("fhr1", "11948-7", 172, "/min"), obs("fhr2", "11948-7", 140, "/min")
    early = obs("ga2", "18185-9", 150, "d")  # 21 weeks: not late pregnancy
    wet = obs("afi2", "11627-7", 8.5, "cm")
    put(client, report(rid="ob1", codes=(), result=results(ga, afi, fast)))
    (alert,) = alerts(client, "ob1")
    assert alert["reasonCode"][0]["coding"][0]["code"] == "oligohydramnios-fhr"
    for rid, ids in (("ob2", (ga, afi, normal)), ("ob3", (early, afi, fast)),
                     ("ob4", (ga, wet, fast)), ("ob5", (afi, fast))):
        put(client, report(rid=rid, codes=(), result=results(*ids)))
        assert alerts(client, rid) == [], rid
