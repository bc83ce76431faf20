"""A small sample (clinic, referring doctor, patient, abdominal ultrasound order) for newcomers."""

from __future__ import annotations

from pathlib import Path

from sonobridge import jsonio
from sonobridge.core.resources import FhirService
from sonobridge.fhir.bundles import process_bundle

SAMPLE = Path(__file__).with_name("sample_bundle.json")


def load_sample(service: FhirService, base: str) -> int:
    """Load the sample through the ordinary transaction path; returns the number of entries."""
    bundle = jsonio.loads(SAMPLE.read_bytes())
    process_bundle(service, bundle, base, {"prefer": "return=minimal"}, max_entries=100)
    return len(bundle["entry"])
