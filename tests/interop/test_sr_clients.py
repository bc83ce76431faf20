"""SRs from real clients become Observations a real FHIR client reads: a TID 1500 SR
(highdicom) over STOW-RS with ``dicomweb-client``, an OB-GYN TID 5000 SR over C-STORE with
dcmtk's ``storescu``, and the Observations read back with the Python ``fhirclient``, against a
running ``sonobridge serve``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient

from sonobridge.mappings.sr import SR_INSTANCE_SYSTEM
from tests.dicom_data import to_bytes
from tests.live import free_port, needs_dcmtk, serve
from tests.mappings.test_sr_builders import image, tid1500, tid5000


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    with serve(db_url, tmp_path, "--no-sample", SONOBRIDGE_DICOM_PORT=str(port)) as (base, _):
        yield base, port


def observations(base: str, **struct: str) -> list:
    from fhirclient import client
    from fhirclient.models.observation import Observation

    fhir = client.FHIRClient(settings={"app_id": "sr-test", "api_base": f"{base}/fhir"})
    return Observation.where(struct={"_count": "100", **struct}).perform_resources(
        fhir.server)


def test_stow_with_dicomweb_client_then_fhirclient(live):
    base, _ = live
    ev = image(patient_id="SR-STOW", patient_name="Li^Na")
    sr = tid1500(ev, measurements=3, groups=1)
    response = DICOMwebClient(f"{base}/dicomweb").store_instances([ev, sr])
    assert len(response.ReferencedSOPSequence) == 2
    found = observations(base, identifier=f"{SR_INSTANCE_SYSTEM}|urn:oid:{sr.SOPInstanceUID}")
    assert len(found) == 4
    values = sorted(o.valueQuantity.value for o in found if o.valueQuantity)
    assert values == pytest.approx([20.0, 20.1, 20.2])
    assert {o.valueQuantity.system for o in found if o.valueQuantity} == {
        "http://unitsofmeasure.org"}
    (group,) = [o for o in found if o.hasMember]
    assert group.code.coding[0].code == "125007" and len(group.hasMember) == 3
    assert all(o.derivedFrom[0].reference == f"ImagingStudy/{ev.StudyInstanceUID}"
               for o in found)


@needs_dcmtk
def test_c_store_with_storescu_then_fhirclient(live, tmp_path):
    base, port = live
    ev = image(patient_id="SR-CSTORE")
    sr = tid5000(ev, fetus="A", bpd=91.0)
    files = []
    for name, ds in (("us.dcm", ev), ("sr.dcm", sr)):
        (tmp_path / name).write_bytes(to_bytes(ds))
        files.append(str(tmp_path / name))
    result = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", "SONOBRIDGE",
                             "127.0.0.1", str(port), *files], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (bpd,) = observations(base, code="http://loinc.org|11820-8")
    assert bpd.valueQuantity.value == 91 and bpd.valueQuantity.code == "mm"
    assert bpd.subject.reference.startswith("Patient/")
    fetus = [c for c in bpd.component if c.code.coding[0].code == "11951-1"]
    assert fetus[0].valueString == "A"
    assert len(observations(base, code="http://loinc.org|11984-2,http://loinc.org|11979-2,"
                                        "http://loinc.org|11963-6")) == 3
