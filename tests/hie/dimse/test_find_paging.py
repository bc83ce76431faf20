"""C-FIND answers every match: the QIDO index is read page by page, none dropped or repeated,
on both databases (no DIMSE needed: the finder is called as the C-FIND handler calls it)."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from sonobridge.hie.dimse import find as finder
from tests.dicom_data import cine
from tests.dicomweb.helpers import stow


def _identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_every_match_at_every_level_in_pages(client, core):
    studies = [generate_uid() for _ in range(7)]
    objects = [cine("native", frames=1, study=uid, patient_id=f"PAGE-{n % 3}")
               for n, uid in enumerate(studies)]
    objects += [cine("native", frames=1, study=studies[0], series=objects[0].SeriesInstanceUID)
                for _ in range(4)]
    assert stow(client, objects).status_code == 200
    for level, key, expected in (("STUDY", "StudyInstanceUID", set(studies)),
                                 ("SERIES", "SeriesInstanceUID",
                                  {o.SeriesInstanceUID for o in objects}),
                                 ("IMAGE", "SOPInstanceUID", {o.SOPInstanceUID for o in objects})):
        search = finder.find(core.archive, _identifier(level, **{key: ""}), "SONOBRIDGE", page=2)
        found = [str(getattr(ds, key)) for ds in search.results]
        assert len(found) == len(expected) and set(found) == expected, level
        assert search.status == finder.PENDING
    patients = finder.find(core.archive, _identifier("PATIENT", PatientID="PAGE-*"), "SONOBRIDGE",
                           model="1.2.840.10008.5.1.4.1.2.1.1", page=2)
    assert sorted(str(ds.PatientID) for ds in patients.results) == ["PAGE-0", "PAGE-1",
                                                                   "PAGE-2"]


def test_more_matches_than_a_qido_page_allows(client, core, monkeypatch):
    """No silent cap: with the QIDO maximum at 3, a C-FIND still answers all 5 studies."""
    from sonobridge.core.imaging import query as qido

    monkeypatch.setattr(qido, "MAX_LIMIT", 3)
    studies = {generate_uid() for _ in range(5)}
    assert stow(client, [cine("native", frames=1, study=uid) for uid in studies]
                ).status_code == 200
    search = finder.find(core.archive, _identifier("STUDY", StudyInstanceUID=""), "SONOBRIDGE")
    assert {str(ds.StudyInstanceUID) for ds in search.results} == studies
