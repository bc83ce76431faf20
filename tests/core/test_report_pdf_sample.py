"""The sample's final report gets its PDF (issue 14 item 6): loading the sample queues the
job for ``DiagnosticReport/sample-us-report``, the renderer makes it, and it reads as the
sample's report (patient, hospital, impression, doctors)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from sonobridge.app.sample import load_sample
from sonobridge.core.pdf.report import ours, report_pdf_of
from sonobridge.jsonio import loads

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                reason="poppler-utils not installed (make peers)")


def test_sample_report_gets_its_pdf(core, tmp_path: Path) -> None:
    load_sample(core, "http://127.0.0.1:8080/fhir")
    stored = core.store.read("DiagnosticReport", "sample-us-report")
    report = loads(stored.content)
    assert report["status"] == "final"
    (attachment,) = [f for f in report["presentedForm"] if ours(f)]
    assert report_pdf_of(core).drain() >= 1
    binary = core.store.read("Binary", attachment["url"].removeprefix("Binary/"))
    assert binary is not None
    pdf = base64.b64decode(loads(binary.content)["data"])
    path = tmp_path / "sample.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                          check=True, timeout=60).stdout.decode()
    flat = "".join(text.split())
    for wanted in ("清水市人民医院超声科", "张伟", "肝右叶低回声结节", "王建国",
                   "腹部超声会诊报告"):
        assert wanted in flat, (wanted, text)
