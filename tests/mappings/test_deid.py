"""PS3.15 Table E.1-1 actions and options on data sets built here (mappings/deid, pure)."""

from __future__ import annotations

import copy
import datetime as dt
import re

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from sonobridge.mappings.deid import TEACHING, Options, context_for, deidentify, hmac_uid
from sonobridge.mappings.deid.attributes import all_text, identifying_in, resolve
from sonobridge.mappings.deid.dates import patient_offset_days, shift_da, shift_dt, shift_fhir
from sonobridge.mappings.deid.table import table
from sonobridge.mappings.deid.text import contains, identifying_strings, scrub

KEY = b"test-key-0123456789"
US = "1.2.840.10008.5.1.4.1.1.6.1"
SR = "1.2.840.10008.5.1.4.1.1.88.33"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def image(sop_class: str = US) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.StudyInstanceUID = "1.2.3.4.5"
    ds.SeriesInstanceUID = "1.2.3.4.5.6"
    ds.FrameOfReferenceUID = "1.2.3.4.9"
    ds.PatientName = "Wang^Fang"
    ds.PatientID = "PID-778899"
    ds.PatientBirthDate = "19850304"
    ds.PatientSex = "F"
    ds.PatientAge = "039Y"
    ds.AccessionNumber = "ACC-5566"
    ds.StudyDate = "20240501"
    ds.SeriesDate = "20240501"
    ds.ContentDate = "20240511"
    ds.StudyTime = "101500"
    ds.AcquisitionDate = "20240501"
    ds.AcquisitionDateTime = "20240501101500.123+0800"
    ds.InstitutionName = "Township Clinic No. 3"
    ds.StationName = "CART-07"
    ds.DeviceSerialNumber = "SN-12345"
    ds.StudyDescription = "Abdomen for Wang Fang PID-778899 on 2024-05-01"
    ds.ReferringPhysicianName = "Li^Wei"
    ds.OperatorsName = "Zhao^Min"
    ds.StudyID = "S778"
    ds.Manufacturer = "Acme"
    ds.ImageComments = "liver ok"
    ds.VerifyingObserverName = "Chen^Jie"  # a D row (normally inside a sequence)
    ref = Dataset()
    ref.ReferencedSOPClassUID = US
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.6.8"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.add_new(0x00090010, "LO", "ACME 1.0")  # private creator
    ds.add_new(0x00091001, "LO", "Wang Fang private note")
    ds.add_new(0x00091002, "DS", "3.5")
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60003000, "OW", b"\xff\xff")
    ds.add_new(0x60004000, "LT", "overlay by Wang Fang")
    return ds


def run(ds: Dataset, options: Options = Options(),
        safe: frozenset[tuple[str, int, int]] = frozenset()) -> Dataset:
    ctx = context_for(KEY, options, "issuer|" + str(ds.PatientID), identifying_in(ds), safe)
    deidentify(ds, ctx)
    return ds


def test_table_is_the_2024b_data() -> None:
    tab = table()
    assert len(tab.by_tag) + 4 == 621
    assert tab.rule(0x00100010).basic == "Z"  # type: ignore[union-attr]
    assert tab.rule(0x00091001) is tab.private
    assert tab.rule(0x50020010) is tab.curve
    assert tab.rule(0x60023000) is tab.overlay_data
    assert tab.rule(0x00280010) is None  # Rows: not in the table, kept
    kinds = {rule.basic for rule in tab.by_tag.values()}
    assert kinds == {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}


def test_basic_profile_actions() -> None:
    ds = run(image())
    # Z
    assert ds.AccessionNumber == "" and ds.PatientBirthDate == "" and ds.StudyDate == ""
    assert ds.ReferringPhysicianName == ""
    # X
    for keyword in ("PatientAge", "StudyDescription", "ImageComments"):
        assert keyword not in ds
    # X/Z, X/D, X/Z/D resolve to X at the top of an image (Type 3)
    for keyword in ("AcquisitionDate", "SeriesDate", "InstitutionName", "StationName",
                    "DeviceSerialNumber", "OperatorsName", "AcquisitionDateTime"):
        assert keyword not in ds, keyword
    # Z/D: Content Date is Type 2C in an image -> zero length
    assert ds.ContentDate == ""
    # D
    assert ds.VerifyingObserverName == "ANONYMOUS"
    # U: consistent keyed UIDs
    assert ds.SOPInstanceUID == hmac_uid(KEY, "1.2.3.4.5.6.7")
    assert UID_RE.match(ds.StudyInstanceUID) and UID_RE.match(ds.FrameOfReferenceUID)
    # X/Z/U*: a Type 3 reference at the top of an image goes
    assert "ReferencedImageSequence" not in ds
    # private and overlays (no option): removed, the whole overlay group with its data
    assert not [e for e in ds if e.tag.group in (0x0009, 0x6000)]
    assert ds.PatientSex == ""  # Z
    # kept: not in the table
    assert ds.Manufacturer == "Acme"
    # pseudonyms and marks
    assert str(ds.PatientName).startswith("TEACHING^CASE") and ds.PatientID.startswith("TC")
    assert ds.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    for text in all_text(ds):
        assert "Wang" not in text and "778899" not in text and "5566" not in text


def test_combined_actions_follow_the_iod() -> None:
    assert resolve("Z/D", 0x00080023, US, False) == "Z"
    assert resolve("Z/D", 0x00080023, SR, False) == "D"  # Type 1 in SR Document General
    assert resolve("Z/D", 0x00100020, US, False) == "Z"
    assert resolve("X/Z", 0x00080022, US, False) == "X"
    assert resolve("X/D", 0x00080021, US, False) == "X"
    assert resolve("X/Z/D", 0x00080080, US, False) == "X"
    assert resolve("X/Z/D", 0x00081111, SR, False) == "Z"
    assert resolve("X/Z/U*", 0x00081140, US, False) == "X"
    assert resolve("X/Z/U*", 0x00081140, US, True) == "U*"
    assert resolve("X/Z/U*", 0x00081140, GSPS, False) == "U*"


def test_sr_content_date_is_dummy_not_empty_without_date_option() -> None:
    ds = image(SR)
    ds = run(ds)
    assert ds.ContentDate == "19000101"


def test_references_inside_sequences_keep_resolving() -> None:
    ds = image(GSPS)
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.4.5.6"
    ref = Dataset()
    ref.ReferencedSOPClassUID = US
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7"
    series.ReferencedImageSequence = Sequence([ref])
    ds.ReferencedSeriesSequence = Sequence([series])
    run(ds)
    item = ds.ReferencedSeriesSequence[0]
    assert item.SeriesInstanceUID == hmac_uid(KEY, "1.2.3.4.5.6")
    assert item.ReferencedImageSequence[0].ReferencedSOPInstanceUID == \
        hmac_uid(KEY, "1.2.3.4.5.6.7")
    assert item.ReferencedImageSequence[0].ReferencedSOPClassUID == US  # not an instance UID


def test_retain_longitudinal_full_keeps_dates() -> None:
    ds = run(image(), Options(retain_longitudinal_full=True))
    assert ds.StudyDate == "20240501" and ds.AcquisitionDate == "20240501"
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]


def test_retain_longitudinal_modified_shifts_and_keeps_intervals() -> None:
    ds = run(image(), Options(retain_longitudinal_modified=True))
    offset = patient_offset_days(KEY, "issuer|PID-778899")
    assert -4015 <= offset <= -365
    assert ds.StudyDate == shift_da("20240501", offset) != "20240501"
    # 10 days between study and content date, as before
    interval = (dt.date.fromisoformat(ds.ContentDate) - dt.date.fromisoformat(ds.StudyDate))
    assert interval.days == 10
    assert ds.AcquisitionDateTime == shift_dt("20240501101500.123+0800", offset)
    assert ds.AcquisitionDateTime.endswith("101500.123+0800")
    assert ds.StudyTime == "101500"  # whole days: time of day kept
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.PatientBirthDate == ""  # not under the option: still Z


def test_retain_patient_characteristics_device_institution_uids() -> None:
    ds = run(image(), Options(retain_patient_characteristics=True, retain_device_identity=True,
                              retain_institution_identity=True, retain_uids=True))
    assert ds.PatientAge == "039Y" and ds.PatientSex == "F"
    assert ds.StationName == "CART-07" and ds.DeviceSerialNumber == "SN-12345"
    assert ds.InstitutionName == "Township Clinic No. 3"
    assert ds.SOPInstanceUID == "1.2.3.4.5.6.7"
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.5.6.8"
    codes = [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113108", "113109", "113110", "113112"]


def test_clean_descriptors_scrubs_identity_keeps_the_rest() -> None:
    ds = run(image(), Options(clean_descriptors=True))
    assert ds.StudyDescription == "Abdomen for *** *** on ***"
    assert ds.ImageComments == "liver ok"


def test_retain_safe_private_keeps_only_listed() -> None:
    safe = frozenset({("ACME 1.0", 0x0009, 0x02)})
    ds = run(image(), Options(retain_safe_private=True), safe)
    assert ds[0x00091002].value == "3.5" and ds[0x00090010].value == "ACME 1.0"
    assert 0x00091001 not in ds
    ds = run(image(), Options(retain_safe_private=True))  # nothing listed: nothing kept
    assert not [e for e in ds if e.tag.group == 0x0009]


def test_clean_graphics_keeps_overlay_cleans_comments() -> None:
    ds = image()
    ctx = context_for(KEY, Options(clean_graphics=True), "x", identifying_in(ds))
    outcome = deidentify(ds, ctx)
    assert outcome.overlay_groups == [0x6000]
    assert ds[0x60003000].value == b"\xff\xff"  # its pixels are masked by core/deid/pixels
    assert "Wang" not in ds[0x60004000].value


def sr_with_text() -> Dataset:
    ds = image(SR)
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.ConceptNameCodeSequence = Sequence([code("121071", "DCM", "Finding")])
    text.TextValue = "Patient Wang Fang (PID-778899) has a 2 cm cyst, seen 2024-05-01"
    pname = Dataset()
    pname.RelationshipType, pname.ValueType = "HAS OBS CONTEXT", "PNAME"
    pname.ConceptNameCodeSequence = Sequence([code("121008", "DCM", "Person Observer Name")])
    pname.PersonName = "Li^Wei"
    date = Dataset()
    date.RelationshipType, date.ValueType = "CONTAINS", "DATE"
    date.ConceptNameCodeSequence = Sequence([code("111060", "DCM", "Study Date")])
    date.Date = "20240501"
    ds.ContentSequence = Sequence([text, pname, date])
    return ds


def test_sr_content_basic_is_dummy() -> None:
    ds = run(sr_with_text())
    text, pname, date = ds.ContentSequence
    assert text.TextValue == "REMOVED"
    assert text.ConceptNameCodeSequence[0].CodeMeaning == "Finding"  # codes kept
    assert pname.PersonName == "ANONYMOUS"
    assert date.Date == "19000101"


def test_sr_content_clean_structured_content() -> None:
    ds = run(sr_with_text(), Options(clean_structured_content=True,
                                     retain_longitudinal_modified=True))
    text, pname, date = ds.ContentSequence
    assert "2 cm cyst" in text.TextValue
    assert not contains(text.TextValue, ["Wang", "Fang", "PID-778899"])
    assert "2024-05-01" not in text.TextValue
    assert pname.PersonName == "ANONYMOUS"  # Person Name is D, not cleaned
    assert date.Date == shift_da("20240501", patient_offset_days(KEY, "issuer|PID-778899"))


def test_graphic_annotation_text() -> None:
    ds = image(GSPS)
    annotation = Dataset()
    text_object = Dataset()
    text_object.UnformattedTextValue = "Wang Fang LIVER"
    annotation.TextObjectSequence = Sequence([text_object])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    basic = run(copy.deepcopy(ds))
    assert basic.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue == \
        "REMOVED"
    clean = run(ds, Options(clean_graphics=True))
    assert clean.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue == \
        "*** LIVER"


def test_unknown_free_text_still_loses_the_patients_name() -> None:
    ds = image()
    ds.add_new(0x00181030 + 0x100000, "LO", "x")  # a harmless unknown-to-table attribute
    ds.ProtocolName = "x"
    ds.PerformedProcedureStepDescription = "scan of Wang Fang"  # in the table: X
    ds.SoftwareVersions = "for PID-778899"  # not in the table: kept, but cleaned
    run(ds)
    assert ds.SoftwareVersions == "for ***"


def test_same_key_same_uids_other_key_other_uids() -> None:
    a, b = run(image()), run(image())
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.PatientID == b.PatientID
    other = image()
    deidentify(other, context_for(b"another-key-000000", Options(), "issuer|PID-778899", ()))
    assert other.SOPInstanceUID != a.SOPInstanceUID
    assert len(hmac_uid(KEY, "1." * 31 + "1")) <= 64


def test_options_validation() -> None:
    with pytest.raises(ValueError):
        Options(retain_longitudinal_full=True, retain_longitudinal_modified=True)
    with pytest.raises(ValueError, match="unknown"):
        Options.of(["clean_everything"])
    assert Options.of(["clean_graphics"]).clean_graphics
    assert TEACHING.clean_pixel_data and TEACHING.retain_longitudinal_modified


def test_dates() -> None:
    assert shift_da("20240301", -1) == "20240229"
    assert shift_da("2024-03-01", -1) is None
    assert shift_dt("2024", -1) == "2023"
    assert shift_dt("202403", -1) == "202402"
    assert shift_dt("20240301120000", -1) == "20240229120000"
    assert shift_dt("garbage", 1) is None
    assert shift_fhir("2024-03-01T10:00:00+08:00", -1) == "2024-02-29T10:00:00+08:00"
    assert shift_fhir("2024-03", -40) == "2024-01"
    assert shift_fhir("2024", 1) == "2024"
    assert shift_fhir("not a date", 1) is None


def test_text_scrub() -> None:
    strings = identifying_strings(["Li^Wei"], ["PID-1"], ["19850304"])
    assert scrub("Linear probe, Li Wei", strings) == "Linear probe, ***"
    assert scrub("born 1985-03-04", strings) == "born ***"
    assert scrub("王芳 复查", identifying_strings(["王芳"], [])) == "*** 复查"
    assert scrub("seen 2024年5月1日", ()) == "seen ***"
    assert not contains("Linear", strings)


def test_clean_on_bytes_empties_them() -> None:
    """C on a value that cannot be read as text (UN, OB) cannot be cleaned: it is emptied."""
    ds = image()
    ds.add_new(0x00081030, "OB", b"Wang Fang abdomen")  # Study Description as bytes
    run(ds, Options(clean_descriptors=True))
    assert ds[0x00081030].value == b""
