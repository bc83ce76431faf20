"""The FHIR ImagingStudy of each DICOM study, kept in step with the index rows.

Made from the index (``mappings/imaging_study.py``) whenever the study's instances change, and
written through the one FHIR write path (validated, indexed, audited) by the server on behalf
of whoever stored the images. Its subject is the Patient matched, adopted or created from the
DICOM patient module (``core/patients.py``: one patient whether the HIS or the modality spoke
first); its ``basedOn`` the orders it was performed for: the
one its accession number names, and those of the procedure steps (MPPS Tasks) that say they
performed it. Both are looked up at every sync, so the links hold whichever came first.
"""

from __future__ import annotations

from typing import Any

import orjson

from sonobridge.core.imaging.metadata import first
from sonobridge.core.patients import Patients
from sonobridge.core.policy import Caller
from sonobridge.core.resources import Resources
from sonobridge.mappings.hl7v2 import identifier_system
from sonobridge.mappings.imaging_study import (
    InstanceSummary,
    SeriesSummary,
    imaging_study,
    patient_from_dicom,
)
from sonobridge.store.dicom import index
from sonobridge.store.resources import Writer

ENDPOINT_ID = "sonobridge-dicomweb"


def issuer_systems(attrs: dict[str, Any]) -> list[str]:
    """Identifier systems of the Patient ID's issuer: its ISO OID from the Issuer of Patient ID
    Qualifiers Sequence (0010,0024), and its local namespace (0010,0021)."""
    systems = []
    for item in (attrs.get("00100024") or {}).get("Value") or []:
        universal = ((item.get("00400032") or {}).get("Value") or [""])[0]
        kind = ((item.get("00400033") or {}).get("Value") or [""])[0]
        if universal and kind in ("ISO", ""):
            systems.append(f"urn:oid:{universal}")
    issuer = first(attrs, "IssuerOfPatientID")
    if issuer:
        systems.append(identifier_system([str(issuer)]))
    return systems


class Studies:
    def __init__(self, resources: Resources, patients: Patients, dicomweb_root: str,
                 zone: str = "Z") -> None:
        self.resources = resources
        self.patients = patients
        self.dicomweb_root = dicomweb_root  # for the DICOMweb Endpoint's address
        self.zone = zone  # the site's zone, for DICOM times without an offset

    def sync(self, writer: Writer, caller: Caller, study_uid: str) -> None:
        """Create, update or delete the ImagingStudy of a study, from the index rows (as the
        server, on behalf of ``caller``, whose storing or deleting was checked already)."""
        caller = caller.derived()
        summary = index.study_summary(writer.conn, study_uid)
        if summary is None:
            if self.resources.exists("ImagingStudy", study_uid, writer):
                self.resources.delete(caller, "ImagingStudy", study_uid, writer=writer)
            return
        attrs = orjson.loads(summary.attrs)
        series = [SeriesSummary(uid, orjson.loads(series_attrs),
                                [InstanceSummary(*instance) for instance in instances])
                  for uid, series_attrs, instances in summary.series]
        patient_ref = self._patient(writer, caller, study_uid, attrs)
        based_on = self._orders(writer, caller, study_uid, attrs)
        self._endpoint(writer, caller)
        resource = imaging_study(study_uid, attrs, series, patient_ref=patient_ref,
                                 endpoint_ref=f"Endpoint/{ENDPOINT_ID}", based_on=based_on,
                                 zone=self.zone)
        self.resources.update(caller, "ImagingStudy", study_uid, resource, writer=writer)

    def _patient(self, writer: Writer, caller: Caller, study_uid: str, attrs: dict[str, Any]
                 ) -> str | None:
        """The study's Patient (``core/patients.py``): its Patient ID qualified by the header's
        issuer, else by the sending AE's (a C-STORE caller is ``dicom:<AE title>``), else by
        the site's; the Patient the study is linked to already is kept while it holds the ID."""
        patient_id = first(attrs, "PatientID")
        if not patient_id:
            return None
        policy = caller.policy
        sender = policy.client_id if policy.subject.startswith("dicom:") else None
        current = self.resources.current(writer, "ImagingStudy", study_uid) or {}
        linked = (current.get("subject") or {}).get("reference")
        return self.patients.for_dicom(
            writer, caller, str(patient_id),
            self.patients.dicom_issuers(issuer_systems(attrs), sender),
            patient_from_dicom(attrs, self.patients.dicom_system),
            linked if isinstance(linked, str) else None)

    def _orders(self, writer: Writer, caller: Caller, study_uid: str, attrs: dict[str, Any]
                ) -> list[str]:
        orders: list[str] = []
        accession = first(attrs, "AccessionNumber")
        if accession:
            found = self.resources.find(writer, "ServiceRequest",
                                        [("identifier", str(accession))], caller.base, limit=2)
            if len(found) == 1:
                orders.append(f"ServiceRequest/{found[0]}")
        for task_id in self.resources.find(writer, "Task",
                                           [("output", f"ImagingStudy/{study_uid}")],
                                           caller.base, limit=100):
            task = self.resources.current(writer, "Task", task_id)
            if task is None:
                continue
            for ref in task.get("basedOn", []):
                reference = ref.get("reference", "")
                if reference.startswith("ServiceRequest/") and reference not in orders:
                    orders.append(reference)
        return orders

    def _endpoint(self, writer: Writer, caller: Caller) -> None:
        if self.resources.exists("Endpoint", ENDPOINT_ID, writer):
            return
        self.resources.update(caller, "Endpoint", ENDPOINT_ID, {
            "resourceType": "Endpoint", "id": ENDPOINT_ID, "status": "active",
            "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/"
                                         "endpoint-connection-type",
                               "code": "dicom-wado-rs"},
            "name": "SonoBridge DICOMweb (WADO-RS, QIDO-RS, STOW-RS)",
            "payloadType": [{"text": "DICOM"}],
            "payloadMimeType": ["application/dicom"],
            "address": self.dicomweb_root,
        }, writer=writer)
