# ruff: noqa: RUF001  (Chinese report text: full-width punctuation is meant)
"""The printable report (core/pdf): a signed report names its PDF, a queued job renders it
(WeasyPrint), ``$pdf`` and ``Accept: application/pdf`` answer it; the PDF read back with
poppler (``pdftotext``, ``pdffonts``, ``pdfimages``): Chinese findings and impression, the
patient line, the measurements, CJK fonts embedded, the key images counted, a note for images
no longer stored. SQLite and PostgreSQL (the ``client`` fixture)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sonobridge.core.pdf.report import JOB_CODE, JOB_SYSTEM, ours, report_pdf_of
from tests.dicomweb.helpers import stow
from tests.mappings.test_sr_builders import image

pytestmark = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdffonts") is None,
    reason="poppler-utils not installed (make peers)")

FINDINGS = "肝脏大小形态正常，肝右叶见一低回声结节，大小约12×10 mm，边界清。"
IMPRESSION = "肝右叶低回声结节，考虑血管瘤可能性大。"


def put(client: Any, body: dict[str, Any]) -> Any:
    return client.put(f"/fhir/{body['resourceType']}/{body['id']}", json=body)


def text_plain(text: str) -> dict[str, str]:
    return {"contentType": "text/plain; charset=utf-8",
            "data": base64.b64encode(text.encode()).decode()}


def world(client: Any, images: int = 0) -> list[Any]:
    """Patient, doctors, organisation, measurements; ``images`` stored key images."""
    for body in [
        {"resourceType": "Patient", "id": "pdf-p", "name": [{"family": "张", "given": ["伟"]}],
         "gender": "male", "birthDate": "1980-05-17",
         "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MR-778899"}]},
        {"resourceType": "Organization", "id": "pdf-org", "name": "县人民医院超声科"},
        {"resourceType": "Practitioner", "id": "pdf-doc1", "name": [{"text": "李明"}]},
        {"resourceType": "Practitioner", "id": "pdf-doc2",
         "name": [{"family": "王", "given": ["芳"]}]},
        {"resourceType": "Observation", "id": "pdf-m1", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "11820-8",
                              "display": "双顶径 BPD"}]},
         "subject": {"reference": "Patient/pdf-p"},
         "valueQuantity": {"value": 82.1, "unit": "mm", "system": "http://unitsofmeasure.org",
                           "code": "mm"}},
        {"resourceType": "Observation", "id": "pdf-m2", "status": "final",
         "code": {"text": "股骨长 FL"}, "subject": {"reference": "Patient/pdf-p"},
         "valueQuantity": {"value": 63, "unit": "mm"}},
        {"resourceType": "Observation", "id": "pdf-group", "status": "final",
         "code": {"text": "Measurement group"}, "subject": {"reference": "Patient/pdf-p"},
         "hasMember": [{"reference": "Observation/pdf-m2"}]},
    ]:
        r = put(client, body)
        assert r.status_code in (200, 201), r.text
    stored = []
    for n in range(images):
        ds = image(patient_id="MR-778899", patient_name="Zhang^Wei")
        r = stow(client, [ds])
        assert r.status_code == 200, r.text
        stored.append(ds)
        media = {"resourceType": "Media", "id": f"pdf-media-{n}", "status": "completed",
                 "subject": {"reference": "Patient/pdf-p"},
                 "content": {"contentType": "image/jpeg",
                             "url": f"http://x/dicomweb/studies/{ds.StudyInstanceUID}/series/"
                                    f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/"
                                    "frames/1/rendered"}}
        assert put(client, media).status_code in (200, 201)
    return stored


def report(status: str = "final", images: int = 0, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": "pdf-r", "status": status,
        "code": {"text": "腹部超声检查"}, "subject": {"reference": "Patient/pdf-p"},
        "effectiveDateTime": "2026-11-30T08:40:00+08:00",
        "issued": "2026-11-30T09:10:00+08:00",
        "performer": [{"reference": "Organization/pdf-org"}],
        "resultsInterpreter": [{"reference": "Practitioner/pdf-doc1"},
                               {"reference": "Practitioner/pdf-doc2"}],
        "result": [{"reference": "Observation/pdf-m1"}, {"reference": "Observation/pdf-group"}],
        "presentedForm": [text_plain(FINDINGS)],
        "conclusion": IMPRESSION,
        "conclusionCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                        "code": "D18.0", "display": "血管瘤"}]}],
    }
    if images:
        body["media"] = [{"link": {"reference": f"Media/pdf-media-{n}"},
                          "comment": f"关键图 {n + 1}"} for n in range(images)]
    body.update(extra)
    return body


def poppler(tool: str, pdf: bytes, tmp_path: Path, *args: str) -> str:
    path = tmp_path / "r.pdf"
    path.write_bytes(pdf)
    out = subprocess.run([tool, *args, str(path), *(["-"] if tool == "pdftotext" else [])],
                         capture_output=True, check=True, timeout=60)
    return out.stdout.decode()


def jobs(client: Any) -> list[dict[str, Any]]:
    r = client.get("/fhir/Task", params={"code": f"{JOB_SYSTEM}|{JOB_CODE}"})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def test_final_queues_a_job_and_the_pdf_is_a_chinese_report(client, core, tmp_path):
    world(client, images=6)
    r = put(client, report(images=6))
    assert r.status_code in (200, 201), r.text
    (attachment,) = [f for f in r.json()["presentedForm"] if ours(f)]
    assert attachment["contentType"] == "application/pdf"
    binary_id = attachment["url"].removeprefix("Binary/")
    (task,) = jobs(client)
    assert task["id"] == binary_id and task["status"] == "requested"
    version = r.json()["meta"]["versionId"]
    assert task["focus"]["reference"] == f"DiagnosticReport/pdf-r/_history/{version}"
    assert client.get(f"/fhir/Binary/{binary_id}").status_code == 404  # not made on the request

    assert report_pdf_of(core).drain() == 1
    (task,) = jobs(client)
    assert task["status"] == "completed"
    assert task["output"][0]["valueReference"]["reference"] == f"Binary/{binary_id}"
    r = client.get("/fhir/DiagnosticReport/pdf-r/$pdf")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/pdf")
    pdf = r.content
    assert pdf.startswith(b"%PDF-")
    text = poppler("pdftotext", pdf, tmp_path, "-enc", "UTF-8")
    flat = "".join(text.split())
    for wanted in ("县人民医院超声科", "超声检查报告单", "张伟", "男", "46岁", "MR-778899",
                   "腹部超声检查", "超声所见", "".join(FINDINGS.split()), "超声提示",
                   "".join(IMPRESSION.split()), "血管瘤（D18.0）", "双顶径BPD", "82.1",
                   "股骨长FL", "63", "报告医师：李明", "审核医师：王芳", "2026-11-3009:10"):
        assert wanted in flat, (wanted, text)
    fonts = poppler("pdffonts", pdf, tmp_path)
    cjk = [line for line in fonts.splitlines() if "CJK" in line]
    assert cjk, fonts
    for line in cjk:  # name type encoding emb sub uni ...: embedded (and subset)
        assert line.split()[-5:-3] == ["yes", "yes"], line
    if shutil.which("pdfimages"):
        listing = poppler("pdfimages", pdf, tmp_path, "-list").splitlines()
        assert len([row for row in listing[2:] if row.strip()]) == 6, listing


def test_accept_pdf_on_the_read(client, core, tmp_path):
    world(client)
    assert put(client, report()).status_code in (200, 201)
    report_pdf_of(core).drain()
    r = client.get("/fhir/DiagnosticReport/pdf-r", headers={"Accept": "application/pdf"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/pdf")
    assert "张伟" in poppler("pdftotext", r.content, tmp_path, "-enc", "UTF-8")
    # JSON still the default
    assert client.get("/fhir/DiagnosticReport/pdf-r").json()["resourceType"] == \
        "DiagnosticReport"


def test_same_report_again_keeps_its_pdf_and_amendment_gets_a_new_one(client, core):
    world(client)
    first = put(client, report()).json()
    again = put(client, report())
    assert again.status_code == 200, again.text
    assert again.json()["meta"]["versionId"] == first["meta"]["versionId"]
    assert again.json()["presentedForm"] == first["presentedForm"]
    # sent back with the server's attachment echoed: also no change
    echoed = put(client, {**report(), "presentedForm": first["presentedForm"]})
    assert echoed.json()["meta"]["versionId"] == first["meta"]["versionId"]
    # an in-place change of the final report is still refused
    assert put(client, report(conclusion="改了")).status_code == 409
    amended = put(client, report(status="amended", conclusion="补充：建议3个月复查。"))
    assert amended.status_code == 200, amended.text
    old_url = next(f for f in first["presentedForm"] if ours(f))["url"]
    new_url = next(f for f in amended.json()["presentedForm"] if ours(f))["url"]
    assert old_url != new_url
    assert len(jobs(client)) == 2
    assert report_pdf_of(core).drain() == 2
    assert client.get(f"/fhir/{old_url}").status_code == 200
    assert client.get(f"/fhir/{new_url}").status_code == 200


def test_amended_pdf_is_of_its_version(client, core, tmp_path):
    world(client)
    put(client, report())
    put(client, report(status="amended", conclusion="修订后的提示：胆囊结石。"))
    report_pdf_of(core).drain()
    text = poppler("pdftotext", client.get("/fhir/DiagnosticReport/pdf-r/$pdf").content,
                   tmp_path, "-enc", "UTF-8")
    assert "修订报告" in text and "胆囊结石" in text and IMPRESSION not in text


def test_a_draft_has_no_pdf_attachment_but_prints_on_demand(client, core, tmp_path):
    world(client)
    r = put(client, report(status="preliminary"))
    assert not [f for f in r.json()["presentedForm"] if ours(f)]
    assert jobs(client) == []
    r = client.get("/fhir/DiagnosticReport/pdf-r/$pdf")
    assert r.status_code == 200
    text = poppler("pdftotext", r.content, tmp_path, "-enc", "UTF-8")
    assert "初步报告" in text
    assert jobs(client) == []  # $pdf changes nothing


def test_images_gone_are_left_out_with_a_note(client, core, tmp_path):
    stored = world(client, images=3)
    ds = stored[1]
    r = client.delete(f"/dicomweb/studies/{ds.StudyInstanceUID}")
    assert r.status_code in (200, 202, 204), r.text
    put(client, report(images=3))
    report_pdf_of(core).drain()
    pdf = client.get("/fhir/DiagnosticReport/pdf-r/$pdf").content
    text = "".join(poppler("pdftotext", pdf, tmp_path, "-enc", "UTF-8").split())
    assert "1幅关键图像已不在影像存档中" in text
    if shutil.which("pdfimages"):
        listing = poppler("pdfimages", pdf, tmp_path, "-list").splitlines()
        assert len([row for row in listing[2:] if row.strip()]) == 2


def test_a_media_link_that_is_not_a_wado_url_is_noted(client, core, tmp_path):
    world(client)
    put(client, {"resourceType": "Media", "id": "pdf-bad", "status": "completed",
                 "content": {"contentType": "image/jpeg", "url": "http://elsewhere/x.jpg"}})
    put(client, report(status="preliminary",
                       media=[{"link": {"reference": "Media/pdf-bad"}}]))
    pdf = client.get("/fhir/DiagnosticReport/pdf-r/$pdf").content
    text = poppler("pdftotext", pdf, tmp_path, "-enc", "UTF-8")
    assert "无法定位" in text


def test_markup_in_the_report_is_text(client, core, tmp_path):
    world(client)
    put(client, report(status="preliminary",
                       conclusion='<img src="file:///etc/passwd"><b>粗体</b>'))
    pdf = client.get("/fhir/DiagnosticReport/pdf-r/$pdf").content
    text = poppler("pdftotext", pdf, tmp_path, "-enc", "UTF-8")
    assert '<img src="file:///etc/passwd"><b>粗体</b>' in text


def test_pdf_of_unknown_report_is_404_outcome(client):
    r = client.get("/fhir/DiagnosticReport/nope/$pdf")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"


def test_a_job_whose_report_version_is_gone_fails_with_a_reason(client, core):
    task = {"resourceType": "Task", "id": "rpdf-" + "0" * 32, "status": "requested",
            "intent": "order", "code": {"coding": [{"system": JOB_SYSTEM, "code": JOB_CODE}]},
            "focus": {"reference": "DiagnosticReport/missing/_history/1"}}
    assert put(client, task).status_code == 201
    assert report_pdf_of(core).drain() == 1
    done = client.get(f"/fhir/Task/{task['id']}").json()
    assert done["status"] == "failed"
    assert "not stored" in done["statusReason"]["text"]


def test_the_renderer_thread_renders_what_is_queued(client, core):
    """What ``serve`` runs with the cluster's duties (app/listeners.py)."""
    import time

    from sonobridge.core.pdf.report import PdfRenderer

    world(client)
    put(client, report())
    renderer = PdfRenderer(report_pdf_of(core), interval=0.05)
    renderer.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and jobs(client)[0]["status"] == "requested":
            time.sleep(0.1)
    finally:
        renderer.stop()
    (task,) = jobs(client)
    assert task["status"] == "completed"
    binary = client.get(f"/fhir/{task['output'][0]['valueReference']['reference']}",
                        headers={"Accept": "application/pdf"})
    assert binary.status_code == 200 and binary.content.startswith(b"%PDF-")
