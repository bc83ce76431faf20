"""Loading, at start, what the first message or request would otherwise wait for.

The FHIR models (fhir.resources imports them on first use), their element tables, the search
parameter definitions and their compiled FHIRPath are all built lazily. The first HL7 order
after a start took 170 to 220 ms instead of 2 (measured: the first latency in `bench/bridges.py`).
A daemon thread builds them for the resources the gateway writes most, while the listeners
already accept work (a message that arrives meanwhile simply waits for the same import).
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from sonobridge.core.services import Core

log = logging.getLogger("sonobridge.app.warmup")

_ORDER = ("MSH|^~\\&|HIS|HOSP|SONOBRIDGE||20260101000000||OMI^O23|warm-up|P|2.5.1\r"
          "PID|1||W1^^^HOSP^MR||Warm^Up||19800101|F|||1 Road^^City||123\r"
          "ORC|NW|P1|F1||SC\rOBR|1|P1|F1|US-ABD^US ABDOMEN^L|||20260101000000\r"
          "TQ1|1||||||20260101000000\r"
          "IPC|ACC1|RP1|1.2.3|SPS1|US|^^^US^US||STATION1\r")


def _warm(core: Core) -> None:
    from sonobridge.core.audit import Record, to_audit_event
    from sonobridge.core.validation import validate
    from sonobridge.mappings import hl7v2

    started = time.perf_counter()
    order = hl7v2.order(hl7v2.parse(_ORDER), core.settings.hl7_time_zone)
    samples = [
        order.patient,
        {**order.resource, "subject": {"reference": "Patient/w"}},
        to_audit_event(Record("hl7-in", "C", "OMI_O23", outcome="0", who="hl7:HIS",
                              client_id="HIS", ip="127.0.0.1", patient="Patient/w",
                              resource="ServiceRequest/w", detail="warm-up")),
        {"resourceType": "ImagingStudy", "status": "available",
         "subject": {"reference": "Patient/w"},
         "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
         "series": [{"uid": "1.2.3.4", "modality": {"code": "US"},
                     "instance": [{"uid": "1.2.3.4.5", "sopClass": {"code": "1.2"}}]}]},
        {"resourceType": "Task", "status": "requested", "intent": "order",
         "focus": {"reference": "ServiceRequest/w"}},
    ]
    for resource in samples:
        validate(resource)
        core.registry.index_rows(resource["resourceType"], resource)
    # What is loaded now lives as long as the process: out of the collector's sight, so that
    # its full collections stop walking it (each one held every thread for 40-70 ms; measured
    # as the slowest HL7 latencies, 3 in 2,000 messages). Collected first, so that no garbage
    # of the start is kept for good.
    gc.collect()
    gc.freeze()
    log.info("warmed up in %.0f ms", (time.perf_counter() - started) * 1000)


def start(core: Core) -> threading.Thread:
    def run() -> None:
        try:
            _warm(core)
        except Exception:  # never a reason not to serve: the first request pays instead
            log.exception("warm-up failed")

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread
