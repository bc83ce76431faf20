"""De-identification as pure functions: DICOM PS3.15 Annex E (Table E.1-1 shipped as data,
the Basic Profile and its options), keyed UID remapping, per-patient date shifting, text
cleaning, and the same for a FHIR report. No database, clock or network: the key and the
patient's shift are given by the caller (``core/deid``)."""

from __future__ import annotations

from sonobridge.mappings.deid.attributes import Context, Outcome, deidentify, identifying_in
from sonobridge.mappings.deid.dates import patient_offset_days
from sonobridge.mappings.deid.options import TEACHING, Options
from sonobridge.mappings.deid.uids import hmac_uid, pseudonym

__all__ = ["TEACHING", "Context", "Options", "Outcome", "context_for", "deidentify",
           "hmac_uid", "identifying_in", "patient_offset_days", "pseudonym"]


def context_for(key: bytes, options: Options, patient: str, identifying: tuple[str, ...],
                safe_private: frozenset[tuple[str, int, int]] = frozenset()) -> Context:
    """The context for one patient's objects: the same patient (its ID and issuer) always
    gets the same pseudonyms and the same date shift under the same key."""
    return Context(options, key, patient_offset_days(key, patient),
                   "TEACHING^" + pseudonym(key, patient, "CASE", 8),
                   pseudonym(key, patient, "TC", 12), identifying, safe_private)
