"""One patient, end to end: a served process, dcmtk's ``storescu`` as the modality and the
``hl7`` package's ``mllp_send`` as the HIS, on SQLite and PostgreSQL, with no configuration.

A cine stored by C-STORE before its HIS order (ORM^O01, ``PID-3 = MRN^^^HOSP^MR``, name 张三),
and the order before the image, both end with one Patient carrying the HIS's identifier and
name, the ImagingStudy and the ServiceRequest on it. Then the ambiguous case: another HIS's
patient with the same MRN makes an unqualified ID ambiguous, so the next image makes a new,
tagged Patient, counted in ``/metrics`` and listed by ``sonobridge dicom status``; a cart
configured with ``:issuer=HOSP`` still lands on HOSP's patient.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.dicom_data import cine, to_bytes
from tests.live import free_port, needs_dcmtk, serve

pytestmark = needs_dcmtk

FIXTURES = Path(__file__).parents[1] / "fixtures"
MLLP_SEND = str(Path(sys.executable).parent / "mllp_send")
HOSP = "urn:sonobridge:hl7:id:HOSP"
CONFLICT = "urn:sonobridge:patient-identity"


class Site:
    def __init__(self, base: str, work: Path, dicom: int, mllp: int, db_url: str) -> None:
        self.base, self.work, self.dicom, self.mllp, self.db_url = (base, work, dicom, mllp,
                                                                    db_url)

    def store(self, patient_id: str, study: str, aet: str = "STORESCU",
              accession: str = "ACC7001") -> None:
        """The modality: storescu sends a cine with no Issuer of Patient ID."""
        ds = cine("native", frames=2, study=study, patient_id=patient_id,
                  patient_name="ZHANG^SAN", accession=accession)
        path = self.work / f"{study}.dcm"
        path.write_bytes(to_bytes(ds))
        result = subprocess.run(
            ["storescu", "-aet", aet, "-aec", "SONOBRIDGE", "-xf",
             str(FIXTURES / "storescu-us.cfg"), "US", "127.0.0.1", str(self.dicom), str(path)],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr + result.stdout
        # the study's ImagingStudy is rebuilt once the association ends
        deadline = time.monotonic() + 30
        while httpx.get(f"{self.base}/fhir/ImagingStudy/{study}", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, f"no ImagingStudy/{study}"
            time.sleep(0.1)

    def order(self, mrn: str, authority: str, name: str, accession: str, n: int) -> None:
        """The HIS: mllp_send sends an ORM^O01 (UTF-8, MSH-18)."""
        message = "\n".join([
            f"MSH|^~\\&|RIS|{authority}|USSRV|TELEUS|20250101120000||ORM^O01|MSG{n:05d}|P|2.3"
            "|||||CHN|UNICODE UTF-8",
            f"PID|1||{mrn}^^^{authority}^MR||{name}||19750304|M",
            "PV1|1|O",
            f"ORC|NW|ORD{n:04d}|{accession}||SC",
            f"OBR|1|ORD{n:04d}|{accession}|US-ABD^US ABDOMEN COMPLETE^L|||20250101120000",
        ]) + "\n"
        path = self.work / f"orm{n}.hl7"
        path.write_bytes(message.encode("utf-8"))
        result = subprocess.run([MLLP_SEND, "--loose", "--file", str(path), "--port",
                                 str(self.mllp), "127.0.0.1"],
                                capture_output=True, timeout=60)
        assert b"MSA|AA" in result.stdout, result.stdout + result.stderr

    def fhir(self, path: str, **params: str) -> dict:
        r = httpx.get(f"{self.base}/fhir/{path}", params=params or None, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def patients(self) -> list[dict]:
        return [e["resource"] for e in self.fhir("Patient", _count="100").get("entry", [])]

    def status(self) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "sonobridge", "dicom", "status", "--data-dir",
             str(self.work / "data"), "--database-url", self.db_url],
            capture_output=True, text=True, timeout=120,
            env={**__import__("os").environ, "COLUMNS": "200", "SONOBRIDGE_AUDIT": "off"})
        assert result.returncode == 0, result.stderr
        return result.stdout


def conflict_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("patient identity conflicts:")]


@pytest.mark.parametrize("first", ["image", "order"])
def test_one_patient_whichever_comes_first(db_url, tmp_path, first):
    dicom, mllp = free_port(), free_port()
    with serve(db_url, tmp_path, "--no-sample", SONOBRIDGE_DICOM_PORT=str(dicom),
               SONOBRIDGE_MLLP_PORT=str(mllp),
               SONOBRIDGE_DICOM_PEERS="CART1@127.0.0.1:1:rights=echo+store:issuer=HOSP"
               ) as (base, _log):
        site = Site(base, tmp_path, dicom, mllp, db_url)
        study = generate_uid()
        if first == "image":
            site.store("MRN7001", study)
            [made] = site.patients()
            assert made["name"][0]["family"] == "ZHANG"  # from the header, for now
            site.order("MRN7001", "HOSP", "张^三", "ACC7001", 1)
        else:
            site.order("MRN7001", "HOSP", "张^三", "ACC7001", 1)
            site.store("MRN7001", study)

        [patient] = site.patients()  # one person, one Patient
        identifiers = {(i["system"], i["value"]) for i in patient["identifier"]}
        assert (HOSP, "MRN7001") in identifiers
        assert patient["name"][0]["family"] == "张" and patient["name"][0]["given"] == ["三"]
        assert patient["birthDate"] == "1975-03-04" and patient["gender"] == "male"
        assert not patient.get("meta", {}).get("tag")
        imaging = site.fhir(f"ImagingStudy/{study}")
        assert imaging["subject"]["reference"] == f"Patient/{patient['id']}"
        [order] = [e["resource"] for e in site.fhir("ServiceRequest").get("entry", [])]
        assert order["subject"]["reference"] == f"Patient/{patient['id']}"
        if first == "order":  # (an order after its images is not linked until a re-sync)
            assert [b["reference"] for b in imaging.get("basedOn", [])] == \
                [f"ServiceRequest/{order['id']}"]
        # the HIS's name is what a search by the study's patient finds
        found = site.fhir("ImagingStudy", **{"patient.name": "张"}).get("entry", [])
        assert [e["resource"]["id"] for e in found] == [study]
        assert conflict_lines(site.status()) == [
            f"patient identity conflicts: 0 (Patients made new because a Patient ID matched "
            f"more than one; FHIR: Patient?_tag={CONFLICT}|conflict)"]

        # another HIS's MRN7001 is another person, not a conflict ...
        site.order("MRN7001", "OTHER", "李^四", "ACC7002", 2)
        assert len(site.patients()) == 2
        # ... but it makes an unqualified MRN7001 ambiguous: a new, tagged patient
        ambiguous = generate_uid()
        site.store("MRN7001", ambiguous, accession="ACC7999")
        patients = {p["id"]: p for p in site.patients()}
        assert len(patients) == 3
        subject = site.fhir(f"ImagingStudy/{ambiguous}")["subject"]["reference"]
        made = patients[subject.removeprefix("Patient/")]
        assert made["id"] != patient["id"]
        assert [t["code"] for t in made["meta"]["tag"] if t["system"] == CONFLICT] == \
            ["conflict"]
        tagged = site.fhir("Patient", _tag=f"{CONFLICT}|conflict").get("entry", [])
        assert [e["resource"]["id"] for e in tagged] == [made["id"]]
        status = site.status()
        assert conflict_lines(status)[0].startswith("patient identity conflicts: 1 ")
        assert made["id"] in status
        metrics = httpx.get(f"{base}/metrics", timeout=30).text
        assert 'sonobridge_patient_identity_conflicts_total{source="dicom"} 1.0' in metrics

        # a cart whose IDs are HOSP's (peers file :issuer=HOSP) lands on HOSP's patient
        from_cart = generate_uid()
        site.store("MRN7001", from_cart, aet="CART1", accession="ACC7998")
        assert site.fhir(f"ImagingStudy/{from_cart}")["subject"]["reference"] == \
            f"Patient/{patient['id']}"
        assert len(site.patients()) == 3
        assert conflict_lines(site.status())[0].startswith("patient identity conflicts: 1 ")
