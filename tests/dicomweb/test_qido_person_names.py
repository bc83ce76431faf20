"""Person names match per component group: ``张*`` finds ``Zhang^Wei=张^伟`` by its
ideographic group in QIDO-RS as in C-FIND; the index keeps the groups apart, and the migration
that added those columns fills them for studies stored before it."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from tests.dicom_data import cine
from tests.dicomweb.helpers import stow


@pytest.fixture
def names(client):
    a, b = generate_uid(), generate_uid()
    zhang = cine("jpeg", study=a, patient_name="Zhang^Wei=张^伟=ジャン^ウェイ")
    zhang.SpecificCharacterSet = "ISO_IR 192"
    li = cine("jpeg", study=b, patient_name="Li^Na")
    assert stow(client, [zhang, li]).status_code == 200
    return a, b


def _uids(client, level: str, name: str) -> set[str]:
    r = client.get(f"/dicomweb/{level}", params={"PatientName": name,
                                                 "includefield": "0020000D"})
    assert r.status_code in (200, 204), r.text
    return {s["0020000D"]["Value"][0] for s in r.json()} if r.status_code == 200 else set()


@pytest.mark.parametrize("level", ["studies", "series", "instances"])
def test_ideographic_group_matches_at_every_level(client, names, level):
    zhang, li = names
    assert _uids(client, level, "张*") == {zhang}
    assert _uids(client, level, "张^伟") == {zhang}
    assert _uids(client, level, "ジャン*") == {zhang}  # phonetic
    assert _uids(client, level, "Zhang^Wei") == {zhang}  # alphabetic, exactly
    assert _uids(client, level, "Zhang^Wei=张^伟") == {zhang}  # group by group
    assert _uids(client, level, "Zhang^Wei=李*") == set()
    assert _uids(client, level, "*") == {zhang, li}  # universal
    assert _uids(client, level, "Li^Na") == {li}


def test_migration_fills_the_groups_of_stored_names(tmp_path):
    from sqlalchemy import text

    from sonobridge.store import migrate
    from sonobridge.store.db import make_engine
    from sonobridge.store.tables import dicom_studies as ST

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0007")
    with engine.begin() as conn:  # a study indexed before the group columns existed
        conn.execute(text("INSERT INTO dicom_studies (study_uid, patient_name, num_series, "
                          "num_instances, updated, attrs) VALUES ('2.25.1', :name, 0, 0, 0, "
                          ":attrs)"), {"name": "Zhang^Wei=张^伟", "attrs": b"{}"})
    migrate.upgrade(engine)
    with engine.connect() as conn:
        row = conn.execute(select(ST).where(ST.c.study_uid == "2.25.1")).one()
    engine.dispose()
    assert (row.patient_name_alphabetic, row.patient_name_ideographic,
            row.patient_name_phonetic) == ("Zhang^Wei", "张^伟", None)
