"""A small sample (clinic, referring doctor, patient, abdominal ultrasound order) for newcomers."""

from __future__ import annotations

from pathlib import Path

from sonobridge import jsonio
from sonobridge.core.services import SERVER, Core
from sonobridge.fhir.bundles import process_bundle
from sonobridge.fhir.interactions import Interactions

SAMPLE = Path(__file__).with_name("sample_bundle.json")


def load_sample(core: Core, base: str) -> int:
    """Load the sample through the ordinary transaction path, as the server's own writes;
    returns the number of entries."""
    bundle = jsonio.loads(SAMPLE.read_bytes())
    process_bundle(Interactions(core.resources), bundle, base, {"prefer": "return=minimal"},
                   max_entries=100, policy=SERVER)
    return len(bundle["entry"])
