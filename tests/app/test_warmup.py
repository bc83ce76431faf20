"""The start-up warm-up loads, in a fresh process, what the first HL7 order and the first
image would otherwise wait for (the models, the search parameters, their FHIRPath)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json, sys, tempfile
from pathlib import Path
from sonobridge.config import Settings
from sonobridge.app.compose import open_app_core as open_core
from sonobridge.app import warmup
core = open_core(Settings(data_dir=Path(tempfile.mkdtemp()), auth="disabled", audit=False,
                          load_sample=False))
def state():
    return {"models": sorted(m for m in sys.modules if m.startswith("fhir.resources.R4B.")
                             and m.rsplit(".", 1)[-1] in ("servicerequest", "patient",
                                                          "auditevent", "imagingstudy", "task")),
            "extractors": sorted(t for t in ("ServiceRequest", "Patient", "AuditEvent")
                                 if t in core.registry._types
                                 and core.registry._types[t].extractors),
            "frozen": gc.get_freeze_count() > 0}
before = state()
warmup.start(core).join(timeout=60)
print(json.dumps({"before": before, "after": state()}))
core.close()
"""


def test_the_warm_up_loads_what_the_first_order_needs():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # Opening the core may already load a few models (the domains' rules use them); what the
    # first order needs and is not loaded yet, the warm-up loads.
    assert seen["before"]["extractors"] == [] and seen["before"]["frozen"] is False
    assert len(seen["before"]["models"]) < 5
    assert seen["after"] == {
        "models": ["fhir.resources.R4B.auditevent", "fhir.resources.R4B.imagingstudy",
                   "fhir.resources.R4B.patient", "fhir.resources.R4B.servicerequest",
                   "fhir.resources.R4B.task"],
        "extractors": ["AuditEvent", "Patient", "ServiceRequest"], "frozen": True}
