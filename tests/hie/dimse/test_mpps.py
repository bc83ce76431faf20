"""MPPS (N-CREATE / N-SET) from a pynetdicom modality: the Task, the order's status, and the
ImagingStudy's link to the order whichever of the images and the MPPS comes first."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hl7.client import MLLPClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from tests.dicom_data import cine
from tests.live import free_port, serve

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


class Modality:
    def __init__(self, base: str, port: int, mllp: int) -> None:
        self.base, self.port, self.mllp = base, port, mllp

    def order(self, accession: str) -> str:
        message = (f"MSH|^~\\&|RIS|HOSP|USSRV|TELEUS|20261201||ORM^O01|{accession}|P|2.3\r"
                   f"PID|1||PID-{accession}^^^HOSP^MR||Chen^Jing\r"
                   f"ORC|NW|P-{accession}|{accession}||SC\r"
                   f"OBR|1|P-{accession}|{accession}|US-ABD^US ABDOMEN^L\r")
        with MLLPClient("127.0.0.1", self.mllp) as client:
            assert b"MSA|AA" in client.send_message(message)
        found = self.fhir("ServiceRequest", identifier=accession)["entry"]
        return f"ServiceRequest/{found[0]['resource']['id']}"

    def fhir(self, path: str, **params: str) -> dict[str, Any]:
        r = httpx.get(f"{self.base}/fhir/{path}", params=params or None, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def store(self, study: str, series: str) -> None:
        """One image, without an accession number: only the MPPS can link it to its order."""
        ds = cine("native", frames=1, study=study, series=series)
        ds.AccessionNumber = ""
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(US_MULTIFRAME, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="SONOBRIDGE")
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()

    def mpps(self, accession: str, study: str, finish: str | None, series: str | None = None
             ) -> str:
        """N-CREATE IN PROGRESS, then N-SET to ``finish`` (COMPLETED, DISCONTINUED)."""
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="SONOBRIDGE")
        assert assoc.is_established
        uid = generate_uid()
        create = Dataset()
        step = Dataset()
        step.AccessionNumber = accession
        step.StudyInstanceUID = study
        create.ScheduledStepAttributesSequence = [step]
        create.PerformedProcedureStepStatus = "IN PROGRESS"
        create.PerformedProcedureStepStartDate = "20261201"
        create.PerformedProcedureStepStartTime = "090000"
        create.Modality = "US"
        status, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
        if finish:
            done = Dataset()
            done.PerformedProcedureStepStatus = finish
            done.PerformedProcedureStepEndDate = "20261201"
            done.PerformedProcedureStepEndTime = "093000"
            if series:
                performed = Dataset()
                performed.SeriesInstanceUID = series
                done.PerformedSeriesSequence = [performed]
            status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
            assert status.Status == 0x0000
        assoc.release()
        return uid

    def task(self, uid: str) -> dict[str, Any]:
        found = self.fhir("Task", identifier=f"urn:dicom:uid|urn:oid:{uid}")
        return found["entry"][0]["resource"]

    def worklist(self, accession: str) -> list[Dataset]:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(ModalityWorklistInformationFind)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="SONOBRIDGE")
        query = Dataset()
        query.AccessionNumber = accession
        query.ScheduledProcedureStepSequence = []
        found = [ds for _, ds in assoc.send_c_find(query, ModalityWorklistInformationFind)
                 if ds is not None]
        assoc.release()
        return found


@pytest.fixture(scope="module")
def modality(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Modality]:
    work: Path = tmp_path_factory.mktemp("mpps")
    port, mllp = free_port(), free_port()
    with serve(f"sqlite:///{work / 'mpps.db'}", work, "--no-sample",
               SONOBRIDGE_DICOM_PORT=str(port), SONOBRIDGE_MLLP_PORT=str(mllp)) as (base, _):
        yield Modality(base, port, mllp)


def _eventually(check: Callable[[], Any], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (AssertionError, KeyError):
            if time.monotonic() > deadline:
                raise
        else:
            return result
        time.sleep(0.2)


def _based_on(modality: Modality, study: str) -> list[str]:
    r = httpx.get(f"{modality.base}/fhir/ImagingStudy/{study}", timeout=30)
    assert r.status_code == 200, r.text
    return [ref["reference"] for ref in r.json().get("basedOn", [])]


def test_images_before_completed_stay_linked_after_more_images(modality):
    order = modality.order("ACC-BEFORE")
    study, series = generate_uid(), generate_uid()
    modality.store(study, series)
    _eventually(lambda: _based_on(modality, study))  # the ImagingStudy exists, unlinked
    assert _based_on(modality, study) == []
    uid = modality.mpps("ACC-BEFORE", study, "COMPLETED", series)
    assert modality.task(uid)["status"] == "completed"
    assert modality.fhir(order)["status"] == "completed"
    assert _based_on(modality, study) == [order]
    modality.store(study, generate_uid())  # the next sync of the study keeps the link

    def two_series() -> list[str]:
        imaging = modality.fhir(f"ImagingStudy/{study}")
        assert imaging["numberOfSeries"] == 2
        return [ref["reference"] for ref in imaging.get("basedOn", [])]

    assert _eventually(two_series) == [order]


def test_images_after_completed_are_linked_when_they_arrive(modality):
    order = modality.order("ACC-AFTER")
    study, series = generate_uid(), generate_uid()
    uid = modality.mpps("ACC-AFTER", study, "COMPLETED", series)
    task = modality.task(uid)
    assert task["output"] == [{"type": {"text": "performed study"},
                               "valueReference": {"reference": f"ImagingStudy/{study}"}}]
    assert httpx.get(f"{modality.base}/fhir/ImagingStudy/{study}").status_code == 404
    modality.store(study, series)
    assert _eventually(lambda: _based_on(modality, study)) == [order]


def test_discontinued_cancels_the_task_and_keeps_the_order_on_the_worklist(modality):
    order = modality.order("ACC-DISC")
    assert len(modality.worklist("ACC-DISC")) == 1
    uid = modality.mpps("ACC-DISC", generate_uid(), "DISCONTINUED")
    task = modality.task(uid)
    assert task["status"] == "cancelled" and task["basedOn"] == [{"reference": order}]
    assert modality.fhir(order)["status"] == "active"
    again = modality.worklist("ACC-DISC")
    assert [str(ds.AccessionNumber) for ds in again] == ["ACC-DISC"]


def test_completed_order_leaves_the_worklist(modality):
    modality.order("ACC-DONE")
    modality.mpps("ACC-DONE", generate_uid(), "COMPLETED")
    assert modality.worklist("ACC-DONE") == []
