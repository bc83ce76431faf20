"""A month of ultrasound work, generated reproducibly, and the indicators counted from it
directly (plain Python over the resources, not through views or Measures): the independent
figures the MeasureReports are checked against."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

V2 = "http://terminology.hl7.org/CodeSystem/v2-0074"
SCT = "http://snomed.info/sct"
BASE = "http://sonobridge.org/fhir"
CST = timedelta(hours=8)
NOV = datetime(2026, 11, 1, tzinfo=UTC) - CST  # 2026-11-01T00:00+08:00
DEC = datetime(2026, 12, 1, tzinfo=UTC) - CST
JAN = datetime(2026, 1, 1, tzinfo=UTC) - CST  # 2026-01-01T00:00+08:00
DOCTORS = ("d1", "d2", "d3")
ORGS = ("org1", "org2")
DEVICES = ("dev1", "dev2")


def _t(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def world(seed: int = 7, n: int = 60, spread: bool = False) -> list[dict[str, Any]]:
    """``n`` requests (90 % of them done: a study, a report...) ordered around November 2026,
    or with ``spread`` over the whole of 2026 (a month then holds about a twelfth of them, as
    in a real year; ``truth`` counts November either way)."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": f"p{i}"} for i in range(5)]
    out += [{"resourceType": "Practitioner", "id": d} for d in DOCTORS]
    out += [{"resourceType": "Organization", "id": o, "name": o} for o in ORGS]
    qc = {"dev1": "2026-03-01", "dev2": "2025-06-01", "dev3": "2026-10-01"}
    for dev, status in (("dev1", "active"), ("dev2", "active"), ("dev3", "inactive")):
        out.append({"resourceType": "Device", "id": dev, "status": status,
                    "owner": {"reference": "Organization/org1"},
                    "extension": [{"url": f"{BASE}/StructureDefinition/device-qc-date",
                                   "valueDate": qc[dev]}]})
    out.append({"resourceType": "Encounter", "id": "e-imp", "status": "in-progress",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                          "code": "IMP"}, "serviceProvider": {"reference": "Organization/org2"}})
    out.append({"resourceType": "Encounter", "id": "e-amb", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                          "code": "AMB"}})
    for i in range(n // 2):
        guided = rnd.random() < 0.8
        when = JAN + timedelta(hours=rnd.randrange(365 * 24)) if spread else \
            NOV - timedelta(days=5) + timedelta(hours=rnd.randrange(35 * 24))
        procedure = {"resourceType": "Procedure", "id": f"pc{i}",
                     "status": rnd.choice(("completed",) * 5 + ("in-progress",)),
                     "code": {"text": "超声引导下肝穿刺活检" if guided else "胃镜"},
                     "subject": {"reference": f"Patient/p{rnd.randrange(5)}"},
                     "performer": [{"actor": {"reference": f"Practitioner/{rnd.choice(DOCTORS)}"},
                                    "onBehalfOf": {"reference": "Organization/org1"}}]}
        if i % 2:
            procedure["performedDateTime"] = _t(when)
        else:
            procedure["performedPeriod"] = {"start": _t(when),
                                            "end": _t(when + timedelta(minutes=30))}
        if rnd.random() < 0.2:
            procedure["complication"] = [{"text": "出血 bleeding"}]
        out.append(procedure)
    for i in range(n):
        # Ordered between 10 days before November and its end (some outside the period).
        ordered = JAN + timedelta(minutes=rnd.randrange(365 * 24 * 60)) if spread else \
            NOV - timedelta(days=10) + timedelta(minutes=rnd.randrange(40 * 24 * 60))
        patient = f"p{rnd.randrange(5)}"
        encounter = rnd.choice(("e-imp", "e-imp", "e-amb"))
        status = rnd.choice(("completed",) * 8 + ("revoked", "active"))
        out.append({"resourceType": "ServiceRequest", "id": f"sr{i}", "status": status,
                    "intent": "order", "subject": {"reference": f"Patient/{patient}"},
                    "encounter": {"reference": f"Encounter/{encounter}"},
                    "category": [{"coding": [{"system": V2, "code": "RUS"}]}],
                    "code": {"text": "US abdomen"}, "authoredOn": _t(ordered)})
        if status == "active":
            continue  # not done yet
        doctor, org, dev = rnd.choice(DOCTORS), rnd.choice(ORGS), rnd.choice(DEVICES)
        out.append({"resourceType": "ImagingStudy", "id": f"st{i}", "status": "available",
                    "subject": {"reference": f"Patient/{patient}"},
                    "basedOn": [{"reference": f"ServiceRequest/sr{i}"}],
                    "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                  "code": "US"}],
                    "series": [{"uid": f"1.2.3.{i}", "modality": {
                        "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "US"},
                        "performer": [{"actor": {"reference": f"Device/{dev}"}}]}]})
        issued = ordered + timedelta(hours=rnd.choice((2, 20, 47, 49, 80)))
        normal = rnd.random() < 0.6
        breast = rnd.random() < 0.4
        conclusion = [{"system": SCT, "code": "17621005" if normal else "300331000"}]
        if breast and not normal and rnd.random() < 0.7:
            conclusion.append({"system": f"{BASE}/CodeSystem/bi-rads",
                               "code": rnd.choice(("3", "4A", "5"))})
        report = {"resourceType": "DiagnosticReport", "id": f"r{i}",
                  "status": rnd.choice(("final",) * 9 + ("preliminary",)),
                  "category": [{"coding": [{"system": V2, "code": "RUS"}]}],
                  "code": {"text": "乳腺超声" if breast else "US abdomen"},
                  "subject": {"reference": f"Patient/{patient}"},
                  "basedOn": [{"reference": f"ServiceRequest/sr{i}"}],
                  "imagingStudy": [{"reference": f"ImagingStudy/st{i}"}],
                  "performer": [{"reference": f"Practitioner/{doctor}"},
                                {"reference": f"Organization/{org}"}],
                  "issued": _t(issued),
                  "conclusionCode": [{"coding": conclusion}]}
        out.append(report)
        if not normal and rnd.random() < 0.5:
            late = rnd.choice((3, 9, 11, 30))
            out.append({"resourceType": "Communication", "id": f"cv{i}", "status": "completed",
                        "category": [{"coding": [{"system": "http://terminology.hl7.org/"
                                                            "CodeSystem/communication-category",
                                                  "code": "alert"}]}],
                        "priority": "stat", "subject": {"reference": f"Patient/{patient}"},
                        "about": [{"reference": f"DiagnosticReport/r{i}"}],
                        "sent": _t(issued + timedelta(minutes=late))})
            # The clinician's reply: a follow-up, not another critical value.
            out.append({"resourceType": "Communication", "id": f"cv{i}-reply",
                        "status": "completed",
                        "category": [{"coding": [{"system": "http://terminology.hl7.org/"
                                                            "CodeSystem/communication-category",
                                                  "code": "alert"}]}],
                        "inResponseTo": [{"reference": f"Communication/cv{i}"}],
                        "about": [{"reference": f"DiagnosticReport/r{i}"}],
                        "sent": _t(issued + timedelta(minutes=late + 1))})
        if rnd.random() < 0.5:
            score = rnd.choice((60, 79, 80, 95))
            out.append({"resourceType": "QuestionnaireResponse", "id": f"qr{i}",
                        "status": "completed",
                        "questionnaire": f"{BASE}/Questionnaire/us-report-qc",
                        "subject": {"reference": f"DiagnosticReport/r{i}"},
                        "authored": _t(issued + timedelta(days=1)),
                        "extension": [{"url": f"{BASE}/StructureDefinition/qc-total-score",
                                       "valueDecimal": score}]})
    return out


def stored_world(core: Any, **options: Any) -> list[dict[str, Any]]:
    """``world(**options)`` written to ``core``'s store in one transaction, ids kept."""
    resources = world(**options)
    with core.store.write() as writer:
        for r in resources:
            writer.create(r["resourceType"], r, r["id"])
    return resources


def _in_nov(text: str | None) -> bool:
    if not text:
        return False
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return NOV <= when < DEC


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def truth(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Numerator/denominator per indicator for November 2026, counted from the raw data."""
    by = {(r["resourceType"], r["id"]): r for r in resources}
    reports = [r for r in resources if r["resourceType"] == "DiagnosticReport"
               and r["status"] == "final" and _in_nov(r.get("issued"))]
    out: dict[str, dict[str, Any]] = {}
    doctors = {r["performer"][0]["reference"] for r in reports}
    out["us-hr-01"] = {"numerator": len(reports), "denominator": len(doctors)}
    out["us-pr-01"] = {"numerator": sum(r["conclusionCode"][0]["coding"][0]["code"] !=
                                        "17621005" for r in reports),
                       "denominator": len(reports)}
    lesions = [r for r in reports if r["code"]["text"] == "乳腺超声"
               and r["conclusionCode"][0]["coding"][0]["code"] != "17621005"]
    out["us-br-01"] = {"numerator": sum(len(r["conclusionCode"][0]["coding"]) > 1
                                        for r in lesions), "denominator": len(lesions)}
    guided = [r for r in resources if r["resourceType"] == "Procedure"
              and r["status"] == "completed" and r["code"]["text"].startswith("超声引导")
              and _in_nov(r.get("performedDateTime") or r.get("performedPeriod", {})["start"])]
    out["us-ic-01"] = {"numerator": sum("complication" in r for r in guided),
                       "denominator": len(guided)}
    num = den = excl = 0
    for sr in (r for r in resources if r["resourceType"] == "ServiceRequest"):
        if sr["encounter"]["reference"] != "Encounter/e-imp" or not _in_nov(sr["authoredOn"]):
            continue
        den += 1
        if sr["status"] == "revoked":
            excl += 1
            continue
        rep = by.get(("DiagnosticReport", "r" + sr["id"][2:]))
        if rep and rep["status"] == "final" and \
                _dt(rep["issued"]) - _dt(sr["authoredOn"]) <= timedelta(hours=48):
            num += 1
    out["us-tl-01"] = {"numerator": num, "denominator": den, "denominator-exclusion": excl}
    num = den = 0
    for cv in (r for r in resources if r["resourceType"] == "Communication"
               and "inResponseTo" not in r):
        rep = by[("DiagnosticReport", cv["about"][0]["reference"].split("/")[1])]
        if not _in_nov(rep["issued"]):
            continue
        den += 1
        num += _dt(cv["sent"]) - _dt(rep["issued"]) <= timedelta(minutes=10)
    out["us-cv-01"] = {"numerator": num, "denominator": den}
    reviews = [r for r in resources if r["resourceType"] == "QuestionnaireResponse"
               and _in_nov(r["authored"])]
    out["us-rq-01"] = {"numerator": sum(Decimal(r["extension"][0]["valueDecimal"]) >= 80
                                        for r in reviews), "denominator": len(reviews)}
    out["us-eq-01"] = {"numerator": 1, "denominator": 2}  # dev1 passed, dev2 stale, dev3 off
    return out
