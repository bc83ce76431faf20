"""Builders of real DICOM SRs for the SR tests and the benchmark.

TID 1500 with highdicom's ``Comprehensive3DSR`` + ``MeasurementReport`` (the template classes);
TID 5000 (OB-GYN), 5100 (vascular) and 5200 (adult echo) as content trees of highdicom content
items in a ``ComprehensiveSR``, with the codes the templates name (LOINC biometry, PSV/EDV,
LVIDd/LVEF; DCM section and group codes from CID 12xxx).
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
from highdicom.sr import (
    CodeContentItem,
    ContainerContentItem,
    NumContentItem,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from tests.dicom_data import cine

CONTAINS = RelationshipTypeValues.CONTAINS
MOD = RelationshipTypeValues.HAS_CONCEPT_MOD
CONTEXT = RelationshipTypeValues.HAS_OBS_CONTEXT
PROPERTIES = RelationshipTypeValues.HAS_PROPERTIES

MM = Code("mm", "UCUM", "mm")
CM_S = Code("cm/s", "UCUM", "cm/s")
PERCENT = Code("%", "UCUM", "%")
DAYS = Code("d", "UCUM", "days")
BPM = Code("/min", "UCUM", "beats/min")
BPD = Code("11820-8", "LN", "Biparietal Diameter")
HC = Code("11984-2", "LN", "Head Circumference")
AC = Code("11979-2", "LN", "Abdominal Circumference")
FL = Code("11963-6", "LN", "Femur Length")
FHR = Code("11948-7", "LN", "Fetal Heart Rate")
FETUS_ID = Code("11951-1", "LN", "Fetus ID")
LVIDD = Code("29436-3", "LN", "Left Ventricle Internal End Diastolic Dimension")
LVEF = Code("18043-0", "LN", "Left Ventricular Ejection Fraction")
IVSD = Code("18154-5", "LN", "Interventricular Septum Diastolic Thickness")


def image(study: str | None = None, **extra: Any) -> Dataset:
    """A one-frame ultrasound image the SR's evidence names (patient and study from it)."""
    return cine("native", frames=1, study=study or generate_uid(), **extra)


def _sr(kind: type[Any], evidence: Dataset, content: Dataset, *, final: bool = True,
        sop_uid: str | None = None, series_uid: str | None = None) -> Dataset:
    sr = kind(evidence=[evidence], content=content,
              series_instance_uid=series_uid or generate_uid(), series_number=90,
              sop_instance_uid=sop_uid or generate_uid(), instance_number=1,
              manufacturer="SonoBridge tests", is_complete=final, is_verified=final,
              verifying_observer_name="Wang^Expert" if final else None,
              verifying_organization="County Hospital" if final else None)
    return sr


def tid1500(evidence: Dataset, measurements: int = 2, groups: int = 1, *,
            sop_uid: str | None = None, series_uid: str | None = None, final: bool = True,
            qualitative: bool = False) -> Dataset:
    """A TID 1500 Measurement Report: ``groups`` liver-lesion groups of ``measurements``
    diameters each (the first a mean, with its method)."""
    context = hd.sr.ObservationContext(observer_person_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name="Wang^Expert")))
    made = []
    for g in range(groups):
        items = [hd.sr.Measurement(
            name=codes.SCT.Diameter, value=20.0 + g + i / 10, unit=MM,
            derivation=codes.SCT.Mean if i == 0 else None,
            method=Code("125220", "DCM", "Area-Length Single Plane") if i == 0 else None,
            finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Liver)])
            for i in range(measurements)]
        made.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(),
                                                         identifier=f"lesion {g + 1}"),
            measurements=items, finding_type=codes.SCT.Nodule,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                name=Code("370856009", "SCT", "Echogenicity"),
                value=Code("263709002", "SCT", "Hypoechoic"))] if qualitative else None,
            finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Liver)]))
    report = hd.sr.MeasurementReport(observation_context=context,
                                     procedure_reported=Code("24558-9", "LN", "US Abdomen"),
                                     imaging_measurements=made)
    return _sr(hd.sr.Comprehensive3DSR, evidence, report[0], final=final, sop_uid=sop_uid,
               series_uid=series_uid)


def num(name: Code, value: float, unit: Code, relation: Any = CONTAINS,
        children: list[Dataset] | None = None) -> NumContentItem:
    item = NumContentItem(name=name, value=value, unit=unit, relationship_type=relation)
    if children:
        item.ContentSequence = children
    return item


def container(name: Code, children: list[Dataset], template: str | None = None,
              relation: Any = CONTAINS) -> ContainerContentItem:
    item = ContainerContentItem(name=name, template_id=template,
                                relationship_type=relation)
    item.ContentSequence = children
    return item


def tid5000(evidence: Dataset, *, fetus: str = "A", bpd: float = 88.0,
            sop_uid: str | None = None) -> Dataset:
    """OB-GYN (TID 5000): a Fetal Biometry section for one fetus (Fetus ID in the subject
    context), a Biometry Group with BPD (mean, percentile and Z-score), HC, AC, FL, and a
    Fetal Heart Rate in the summary."""
    bpd_item = num(BPD, bpd, MM, children=[
        CodeContentItem(name=codes.DCM.Derivation, value=codes.SCT.Mean,
                        relationship_type=MOD),
        num(codes.DCM.GrowthPercentileRank, 45, PERCENT, PROPERTIES),
        num(codes.DCM.GrowthZScore, -0.2, Code("1", "UCUM", "no units"), PROPERTIES)])
    group = container(codes.DCM.BiometryGroup, [
        bpd_item, num(HC, 320.5, MM), num(AC, 300.0, MM), num(FL, 68.0, MM)])
    section = container(codes.DCM.FetalBiometry, [
        TextContentItem(name=FETUS_ID, value=fetus, relationship_type=CONTEXT), group])
    summary = container(Code("121111", "DCM", "Summary"), [
        TextContentItem(name=FETUS_ID, value=fetus, relationship_type=CONTEXT),
        num(FHR, 142, BPM)])
    root = container(codes.DCM.OBGYNUltrasoundProcedureReport, [summary, section],
                     template="5000", relation=None)
    return _sr(hd.sr.ComprehensiveSR, evidence, root, sop_uid=sop_uid)


def tid5100(evidence: Dataset, *, psv: float = 85.0, edv: float = 22.0) -> Dataset:
    """Vascular (TID 5100): a neck section, a right common carotid artery group with PSV and
    EDV."""
    vessel = container(codes.SCT.CommonCarotidArtery, [
        CodeContentItem(name=codes.SCT.Laterality, value=codes.SCT.Right,
                        relationship_type=MOD),
        num(codes.LN.PeakSystolicVelocity, psv, CM_S),
        num(codes.LN.EndDiastolicVelocity, edv, CM_S)])
    section = container(codes.SCT.Neck, [vessel])
    root = container(codes.DCM.VascularUltrasoundProcedureReport, [section], template="5100",
                     relation=None)
    return _sr(hd.sr.ComprehensiveSR, evidence, root)


def tid5200(evidence: Dataset, *, lvef: float = 60.0, lvidd: float = 48.0) -> Dataset:
    """Adult echo (TID 5200): a left ventricle section with LVIDd, IVSd and LVEF (Teichholz)."""
    section = container(codes.SCT.LeftVentricle, [
        num(LVIDD, lvidd, MM), num(IVSD, 9.0, MM),
        num(LVEF, lvef, PERCENT, children=[
            CodeContentItem(name=codes.SCT.MeasurementMethod, value=codes.DCM.Teichholz,
                            relationship_type=MOD)])])
    root = container(codes.DCM.AdultEchocardiographyProcedureReport, [section],
                     template="5200", relation=None)
    return _sr(hd.sr.ComprehensiveSR, evidence, root)


def other_template(evidence: Dataset) -> Dataset:
    """A Comprehensive SR of a template not mapped here (TID 2000 Basic Diagnostic Imaging
    Report) with a number in it: kept, but no Observations."""
    root = container(Code("18748-4", "LN", "Diagnostic Imaging Report"), [
        container(Code("121070", "DCM", "Findings"), [num(codes.SCT.Diameter, 12.0, MM)])],
        template="2000", relation=None)
    return _sr(hd.sr.ComprehensiveSR, evidence, root)


def test_builders_make_the_templates_they_say():
    ev = image()
    for build, tid in ((tid1500, "1500"), (tid5000, "5000"), (tid5100, "5100"),
                       (tid5200, "5200"), (other_template, "2000")):
        sr = build(ev)
        assert sr.ContentTemplateSequence[0].TemplateIdentifier == tid
        assert sr.StudyInstanceUID == ev.StudyInstanceUID
        assert sr.PatientID == ev.PatientID
