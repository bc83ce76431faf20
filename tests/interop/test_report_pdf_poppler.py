"""The printable report against a running ``sonobridge serve`` (issue 14 item 3): key images
stored over STOW-RS with ``dicomweb-client``, the report written final with the Python
``fhirclient``, the PDF made by the server's own renderer (off the request path) and read
with poppler as a person's viewer would: ``pdftotext`` finds the patient, the findings and
the impression, ``pdfimages`` counts the key images, ``pdftoppm`` rasterises the page; also
the sample's ``DiagnosticReport/sample-us-report`` gets its PDF when ``serve`` loads the
sample."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.live import serve
from tests.mappings.test_sr_builders import image

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("pdftotext", "pdfimages", "pdftoppm")),
    reason="poppler-utils not installed (make peers)")

FINDINGS = "肝脏形态大小正常 胆囊壁光滑 脾脏未见异常"
IMPRESSION = "腹部超声未见明显异常"


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[str]:
    with serve(db_url, tmp_path, "--no-sample") as (base, _):
        yield base


def wait_pdf(base: str, report_id: str, timeout: float = 90) -> bytes:
    """The stored PDF, once the server's renderer made it (the Binary named in
    presentedForm)."""
    deadline = time.monotonic() + timeout
    while True:
        report = httpx.get(f"{base}/fhir/DiagnosticReport/{report_id}").json()
        urls = [f["url"] for f in report.get("presentedForm", [])
                if f.get("contentType") == "application/pdf" and f.get("url")]
        assert urls, report
        r = httpx.get(f"{base}/fhir/{urls[0]}", headers={"Accept": "application/pdf"})
        if r.status_code == 200:
            assert r.headers["content-type"].startswith("application/pdf")
            return r.content
        assert r.status_code == 404, r.text
        if time.monotonic() > deadline:
            raise AssertionError(f"no PDF after {timeout} s")
        time.sleep(0.5)


def poppler(tmp_path: Path, pdf: bytes, *command: str) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    out = subprocess.run([*command, str(path), *(["-"] if command[0] == "pdftotext" else [])],
                         capture_output=True, check=True, timeout=60)
    return out.stdout.decode()


def test_final_report_with_key_images_read_with_poppler(live, tmp_path):
    from fhirclient import client
    from fhirclient.models.diagnosticreport import DiagnosticReport
    from fhirclient.models.media import Media
    from fhirclient.models.patient import Patient

    base = live
    images = [image(patient_id="PDF-1") for _ in range(3)]
    DICOMwebClient(f"{base}/dicomweb").store_instances(images)
    fhir = client.FHIRClient(settings={"app_id": "pdf-test", "api_base": f"{base}/fhir"})
    patient = Patient({"id": "pdf-live", "gender": "female", "birthDate": "1988-02-03",
                       "name": [{"text": "刘洋"}]})
    patient.update(fhir.server)
    for n, ds in enumerate(images):
        Media({"id": f"pdf-live-{n}", "status": "completed",
               "content": {"contentType": "image/jpeg",
                           "url": f"{base}/dicomweb/studies/{ds.StudyInstanceUID}/series/"
                                  f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/"
                                  "frames/1/rendered"}}).update(fhir.server)
    report = DiagnosticReport({
        "id": "pdf-live", "status": "final", "code": {"text": "腹部超声"},
        "subject": {"reference": "Patient/pdf-live"},
        "effectiveDateTime": "2026-12-02T10:00:00+08:00",
        "presentedForm": [{"contentType": "text/plain; charset=utf-8",
                           "data": base64.b64encode(FINDINGS.encode()).decode()}],
        "conclusion": IMPRESSION,
        "media": [{"link": {"reference": f"Media/pdf-live-{n}"}} for n in range(3)]})
    report.update(fhir.server)
    pdf = wait_pdf(base, "pdf-live")
    text = poppler(tmp_path, pdf, "pdftotext", "-enc", "UTF-8")
    for wanted in ("刘洋", "女", FINDINGS.split()[0], IMPRESSION):
        assert wanted in text, (wanted, text)
    listing = poppler(tmp_path, pdf, "pdfimages", "-list").splitlines()[2:]
    assert len([row for row in listing if row.strip()]) == 3
    subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "1",
                    str(tmp_path / "report.pdf"), str(tmp_path / "page")], check=True,
                   timeout=60)
    (page,) = tmp_path.glob("page*.png")
    assert page.stat().st_size > 1000
    # the read with Accept: application/pdf answers the same stored file
    r = httpx.get(f"{base}/fhir/DiagnosticReport/pdf-live",
                  headers={"Accept": "application/pdf"})
    assert r.status_code == 200 and r.content == pdf


def test_sample_report_gets_its_pdf_from_serve(db_url, tmp_path):
    with serve(db_url, tmp_path) as (base, _):
        pdf = wait_pdf(base, "sample-us-report")
    text = "".join(poppler(tmp_path, pdf, "pdftotext", "-enc", "UTF-8").split())
    assert "张伟" in text and "肝右叶低回声结节" in text
