"""The status page at ``/``: public, bilingual, counts only, never patient data."""

from __future__ import annotations

from sonobridge import __version__
from sonobridge.store import queues


def test_status_page(core, client):
    # A failed HL7 message whose error names a patient: counted, its text never shown.
    outbox = queues.hl7_outbox(core.engine)
    row = dict(direction="out", peer="HIS", sending_app="SONO", sending_facility="F",
               message_type="ORU^R01", charset="UTF-8", raw=b"MSH|^~\\&|", attempts=3,
               received=1, updated=1)
    outbox.add(control_id="c1", status="failed", error="PID 张三 refused", **row)
    outbox.add(control_id="c2", status="retry", **row)
    # An inbound message is not in the outbound queue.
    outbox.add(**{**row, "direction": "in", "control_id": "c3", "status": "failed"})
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    page = r.text
    assert f"<b>{__version__}</b>" in page
    assert "状态 Status" in page and "Send queues 发送队列" in page
    assert "HL7 results out" in page and "/fhir/metadata" in page
    data = client.get("/?format=json").json()
    assert data["version"] == __version__
    assert {q["name"] for q in data["queues"]} == {
        "HL7 results out", "DICOM forwarding", "Storage Commitment reports"}
    by_name = {q["name"]: q for q in data["queues"]}
    assert (by_name["HL7 results out"]["waiting"], by_name["HL7 results out"]["failed"]) == \
        (1, 1)
    assert by_name["DICOM forwarding"]["waiting"] == 0
    assert "张三" not in page and "refused" not in page
    assert '<td class="bad">1</td>' in page
    assert data["disk"]["free_bytes"] > 0
    assert client.head("/").status_code == 200


def test_build_info_metric(client):
    text = client.get("/metrics").text
    assert 'sonobridge_build_info{python="' in text and f'version="{__version__}"' in text
