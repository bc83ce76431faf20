"""A teaching case seen as a viewer sees it: a cine with the patient's identity burned into
every frame is stored with dicomweb-client, published with $teaching-case over HTTP against a
live server, and the copy retrieved with dicomweb-client again: QIDO finds it under its own
study and pseudo patient, its metadata and frames carry no identity, and the original is not
reachable from it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread

from tests.core.test_deid_pixels import BAND, NAME, PID, burned_cine
from tests.live import serve


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[str]:
    with serve(db_url, tmp_path, "--no-sample") as (base, _):
        yield base


def test_publish_and_retrieve_the_copy(live, tmp_path: Path):
    client = DICOMwebClient(f"{live}/dicomweb")
    original, _ = burned_cine(tmp_path / "cine.dcm", "jpeg", frames=4)
    response = client.store_instances([dcmread(tmp_path / "cine.dcm")])
    assert "FailedSOPSequence" not in response
    study = str(original.StudyInstanceUID)
    r = httpx.post(f"{live}/fhir/ImagingStudy/{study}/$teaching-case", timeout=60,
                   headers={"Content-Type": "application/fhir+json"},
                   json={"resourceType": "Parameters", "parameter": [
                       {"name": "keyword", "valueString": "liver"}]})
    assert r.status_code == 201, r.text
    copy = next(x["reference"] for x in r.json()["context"]["related"]
                if x["reference"].startswith("ImagingStudy/")).split("/")[1]
    found = client.search_for_studies(search_filters={"StudyInstanceUID": copy})
    assert len(found) == 1
    assert found[0]["00100020"]["Value"][0].startswith("TC")
    assert not client.search_for_studies(search_filters={"PatientID": PID,
                                                         "StudyInstanceUID": copy})
    instances = client.search_for_instances(copy)
    assert len(instances) == 2  # the cine and the KOS "For Teaching"
    [instance] = [i for i in instances
                  if i["00080016"]["Value"][0] == str(original.SOPClassUID)]
    series = instance["0020000E"]["Value"][0]
    sop = instance["00080018"]["Value"][0]
    metadata = client.retrieve_instance_metadata(copy, series, sop)
    text = json.dumps(metadata)
    for word in ("Doe", "Jane", PID, str(original.SOPInstanceUID), study,
                 str(original.SeriesInstanceUID)):
        assert word not in text, word
    assert metadata["00120062"]["Value"] == ["YES"]
    frames = client.retrieve_instance_frames(copy, series, sop, [1, 2, 3, 4])
    for frame in frames:
        pixels = np.asarray(Image.open(io.BytesIO(frame)).convert("RGB"))
        assert pixels[:BAND - 8].max() <= 3
    assert NAME
    # the original is still there under its own study, untouched
    assert client.retrieve_instance(study, str(original.SeriesInstanceUID),
                                    str(original.SOPInstanceUID)).PatientName == NAME
