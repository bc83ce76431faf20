"""Modality Performed Procedure Step (N-CREATE, N-SET): the modality says an exam started,
finished or was abandoned.

Each MPPS instance is a FHIR Task (identifier = the MPPS SOP Instance UID) based on the
ServiceRequest it performs (found by accession number or Study Instance UID from the scheduled
step attributes). IN PROGRESS -> Task in-progress; COMPLETED -> Task completed and the order
completed; DISCONTINUED -> Task cancelled, the order stays open for another attempt.

The Task's ``output`` names the ImagingStudy it performs: the Study Instance UIDs of the
scheduled step attributes (which IHE Scheduled Workflow has the modality put in its images
too) and the studies of performed series already here. That is the one record of the link:
the study's ImagingStudy takes ``basedOn`` from it at every sync (``store/dicom/index.py``),
so the link survives later images and holds when the images come after the MPPS. The MPPS
only asks for that sync when the study is already indexed.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from sonobridge.core.errors import FhirError
from sonobridge.core.policy import Policy
from sonobridge.core.resources import FhirRequest
from sonobridge.jsonio import loads
from sonobridge.store.dicom import index
from sonobridge.store.resources import Writer, new_id

MPPS_SYSTEM = "urn:dicom:uid"
TASK_STATUS = {"IN PROGRESS": "in-progress", "COMPLETED": "completed",
               "DISCONTINUED": "cancelled"}
# PS3.4 statuses
NO_SUCH_INSTANCE = 0x0112
DUPLICATE_INSTANCE = 0x0111
PROCESSING_FAILURE = 0x0110
INVALID_VALUE = 0x0106


class MppsError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Mpps:
    def __init__(self, core: Any) -> None:
        self.core = core
        self.base = core.settings.public_base
        self.zone = core.settings.hl7_time_zone  # the modality's local time zone

    def _studies_of(self, writer: Writer, series: list[str]) -> list[str]:
        if not series:
            return []
        from sqlalchemy import select

        from sonobridge.store.tables import dicom_series as S

        rows = writer.conn.execute(select(S.c.study_uid).where(S.c.series_uid.in_(series)))
        return sorted({row.study_uid for row in rows})

    def _indexed(self, writer: Writer, study: str) -> bool:
        """Whether the study's images are here (an ImagingStudy of a study held elsewhere is
        not ours to rebuild)."""
        from sqlalchemy import select

        from sonobridge.store.tables import dicom_studies as ST

        return writer.conn.execute(select(ST.c.study_uid).where(
            ST.c.study_uid == study)).first() is not None

    def _policy(self, calling: str) -> Policy:
        return Policy(subject=f"dicom:{calling}", client_id=calling, unrestricted=True)

    def _find(self, writer: Writer, res_type: str, query: list[tuple[str, str]]) -> str | None:
        found = self.core.fhir.find(writer, res_type, query, self.base, limit=1)
        return found[0] if found else None

    def _read(self, writer: Writer, res_type: str, res_id: str) -> dict[str, Any] | None:
        stored = writer.read(res_type, res_id)
        if stored is None or stored.deleted or stored.content is None:
            return None
        body = loads(stored.content)
        body.pop("meta", None)
        return body

    def _put(self, writer: Writer, body: dict[str, Any], policy: Policy) -> None:
        try:
            self.core.fhir.handle(FhirRequest("PUT", body["resourceType"], body["id"],
                                              body=body, base=self.base, policy=policy,
                                              source="dimse"), writer)
        except FhirError as exc:
            raise MppsError(PROCESSING_FAILURE, str(exc)) from None

    def _order(self, writer: Writer, attributes: Dataset) -> str | None:
        for step in attributes.get("ScheduledStepAttributesSequence", []):
            accession = str(step.get("AccessionNumber", "") or "")
            if accession:
                found = self._find(writer, "ServiceRequest", [("identifier", accession)])
                if found:
                    return found
            study = str(step.get("StudyInstanceUID", "") or "")
            if study:
                found = self._find(writer, "ServiceRequest",
                                   [("identifier", f"urn:dicom:uid|urn:oid:{study}")])
                if found:
                    return found
        return None

    def _perform(self, writer: Writer, task: dict[str, Any], policy: Policy,
                 studies: list[str]) -> None:
        """Write the Task with these studies among its outputs, then re-sync the ImagingStudy
        of each that is already indexed (the sync reads the link back from the Task)."""
        outputs = list(task.get("output", []))
        known = {o.get("valueReference", {}).get("reference") for o in outputs}
        for study in studies:
            if f"ImagingStudy/{study}" not in known:
                known.add(f"ImagingStudy/{study}")
                outputs.append({"type": {"text": "performed study"},
                                "valueReference": {"reference": f"ImagingStudy/{study}"}})
        if outputs:
            task["output"] = outputs
        self._put(writer, task, policy)
        for reference in sorted(r for r in known if r):
            study = reference.removeprefix("ImagingStudy/")
            if self._indexed(writer, study):
                index.sync_imaging_study(writer, self.core, study)

    def create(self, uid: str, attributes: Dataset, calling: str) -> None:
        state = str(attributes.get("PerformedProcedureStepStatus", "") or "")
        if state != "IN PROGRESS":
            raise MppsError(INVALID_VALUE, "an MPPS is created IN PROGRESS")
        policy = self._policy(calling)
        with self.core.store.write() as writer:
            if self._find(writer, "Task", [("identifier", f"{MPPS_SYSTEM}|urn:oid:{uid}")]):
                raise MppsError(DUPLICATE_INSTANCE, f"MPPS {uid} already exists")
            order = self._order(writer, attributes)
            task: dict[str, Any] = {
                "resourceType": "Task", "id": new_id(), "status": "in-progress",
                "intent": "order",
                "identifier": [{"system": MPPS_SYSTEM, "value": f"urn:oid:{uid}"}],
                "code": {"text": str(attributes.get("PerformedProcedureStepDescription", "")
                                     or "performed procedure step")},
                "description": f"MPPS from {calling}",
            }
            if order:
                task["basedOn"] = [{"reference": f"ServiceRequest/{order}"}]
                request = self._read(writer, "ServiceRequest", order)
                if request and request.get("subject"):
                    task["for"] = request["subject"]
            start = _when(attributes, "PerformedProcedureStepStartDate",
                          "PerformedProcedureStepStartTime", self.zone)
            studies = _scheduled_studies(attributes)
            if studies:
                task["input"] = [{"type": {"text": "Study Instance UID"}, "valueString": uid}
                                 for uid in studies]
            if start:
                task["executionPeriod"] = {"start": start}
            self._perform(writer, task, policy, studies + self._studies_of(
                writer, _performed_series(attributes)))

    def set(self, uid: str, modifications: Dataset, calling: str) -> None:
        policy = self._policy(calling)
        with self.core.store.write() as writer:
            task_id = self._find(writer, "Task", [("identifier",
                                                   f"{MPPS_SYSTEM}|urn:oid:{uid}")])
            if task_id is None:
                raise MppsError(NO_SUCH_INSTANCE, f"no MPPS {uid}")
            task = self._read(writer, "Task", task_id) or {}
            if task.get("status") != "in-progress":
                raise MppsError(PROCESSING_FAILURE, f"MPPS {uid} is already final")
            state = str(modifications.get("PerformedProcedureStepStatus", "") or "")
            if state and state not in TASK_STATUS:
                raise MppsError(INVALID_VALUE, f"unknown MPPS status {state!r}")
            if state:
                task["status"] = TASK_STATUS[state]
            end = _when(modifications, "PerformedProcedureStepEndDate",
                        "PerformedProcedureStepEndTime", self.zone)
            if end:
                task["executionPeriod"] = {**task.get("executionPeriod", {}), "end": end}
            order = next((ref["reference"].split("/")[1] for ref in task.get("basedOn", [])),
                         None)
            self._perform(writer, task, policy, self._studies_of(
                writer, _performed_series(modifications)))
            if order and task["status"] == "completed":
                request = self._read(writer, "ServiceRequest", order)
                if request is not None and request.get("status") == "active":
                    request["status"] = "completed"
                    self._put(writer, request, policy)


def _when(ds: Dataset, date_key: str, time_key: str, zone: str) -> str | None:
    date = str(ds.get(date_key, "") or "")
    if len(date) != 8:
        return None
    clock = str(ds.get(time_key, "") or "").split(".")[0].ljust(6, "0")[:6]
    return f"{date[:4]}-{date[4:6]}-{date[6:]}T{clock[:2]}:{clock[2:4]}:{clock[4:]}{zone}"


def _scheduled_studies(ds: Dataset) -> list[str]:
    found = []
    for item in ds.get("ScheduledStepAttributesSequence", []):
        study = str(item.get("StudyInstanceUID", "") or "")
        if study and study not in found:
            found.append(study)
    return found


def _performed_series(ds: Dataset) -> list[str]:
    return [str(item.SeriesInstanceUID) for item in ds.get("PerformedSeriesSequence", [])
            if item.get("SeriesInstanceUID")]
