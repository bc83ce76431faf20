"""DICOM study, series and instance attributes -> a FHIR R4 ImagingStudy (a pure function).

Input is what the DICOM index holds (DICOM JSON of the study and each series, plus per-instance
summaries); output is the ImagingStudy as a dict, ready for the FHIR store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SOP_CLASS_SYSTEM = "urn:ietf:rfc:3986"


@dataclass(frozen=True)
class InstanceSummary:
    sop_uid: str
    sop_class_uid: str
    number: int | None
    frames: int | None


@dataclass(frozen=True)
class SeriesSummary:
    uid: str
    attrs: dict[str, Any]  # series-level DICOM JSON
    instances: list[InstanceSummary]


def _value(data: dict[str, Any], tag: str) -> Any:
    values = (data.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def _zone(offset: Any, default: str) -> str:
    """Timezone Offset From UTC (0008,0201) ``+0800`` as ``+08:00``; else ``default``."""
    text = str(offset or "")
    if len(text) == 5 and text[0] in "+-" and text[1:].isdecimal():
        return f"{text[:3]}:{text[3:]}"
    return default


def _datetime(date: str | None, time: str | None, zone: str = "Z") -> str | None:
    """DICOM DA + TM (local times) -> FHIR dateTime in ``zone`` (date only without a time)."""
    if not date or len(date) != 8 or not date.isdecimal():
        return None
    out = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    if time and len(time) >= 4 and time[:4].isdecimal():
        seconds = time[4:6] if len(time) >= 6 and time[4:6].isdecimal() else "00"
        return f"{out}T{time[:2]}:{time[2:4]}:{seconds}{zone}"
    return out


def imaging_study(study_uid: str, study: dict[str, Any], series: list[SeriesSummary], *,
                  patient_ref: str | None, endpoint_ref: str | None,
                  based_on: list[str] | None = None, zone: str = "Z") -> dict[str, Any]:
    """The ImagingStudy for a DICOM study. Its id is the Study Instance UID (a valid FHIR id).
    DICOM times are local: in the study's Timezone Offset From UTC when it has one, else in
    ``zone`` (the site's)."""
    zone = _zone(_value(study, "00080201"), zone)
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": study_uid,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
        "status": "available",
    }
    accession = _value(study, "00080050")
    if accession:
        resource["identifier"].append({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": "ACSN"}]},
            "value": accession})
    modalities = sorted({m for s in series if (m := _value(s.attrs, "00080060"))})
    if modalities:
        resource["modality"] = [{"system": DCM, "code": m} for m in modalities]
    resource["subject"] = {"reference": patient_ref} if patient_ref else {
        "display": "unknown patient"}
    started = _datetime(_value(study, "00080020"), _value(study, "00080030"), zone)
    if started:
        resource["started"] = started
    if based_on:
        resource["basedOn"] = [{"reference": ref} for ref in based_on]
    if endpoint_ref:
        resource["endpoint"] = [{"reference": endpoint_ref}]
    resource["numberOfSeries"] = len(series)
    resource["numberOfInstances"] = sum(len(s.instances) for s in series)
    description = _value(study, "00081030")
    if description:
        resource["description"] = description
    resource["series"] = [_series(s, zone) for s in series]
    return resource


def _series(summary: SeriesSummary, zone: str = "Z") -> dict[str, Any]:
    attrs = summary.attrs
    out: dict[str, Any] = {"uid": summary.uid}
    number = _value(attrs, "00200011")
    if isinstance(number, int | float):
        out["number"] = int(number)
    out["modality"] = {"system": DCM, "code": _value(attrs, "00080060") or "OT"}
    description = _value(attrs, "0008103E")
    if description:
        out["description"] = description
    out["numberOfInstances"] = len(summary.instances)
    body_part = _value(attrs, "00180015")
    if body_part:
        out["bodySite"] = {"display": str(body_part)}  # DICOM body part, not yet coded
    started = _datetime(_value(attrs, "00080021"), _value(attrs, "00080031"),
                        _zone(_value(attrs, "00080201"), zone))
    if started:
        out["started"] = started
    out["instance"] = [_instance(i) for i in summary.instances]
    return out


def _instance(summary: InstanceSummary) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": summary.sop_uid,
                           "sopClass": {"system": SOP_CLASS_SYSTEM,
                                        "code": f"urn:oid:{summary.sop_class_uid}"}}
    if summary.number is not None:
        out["number"] = summary.number
    return out


_SEX = {"M": "male", "F": "female", "O": "other"}


def _human_names(pn: str) -> list[dict[str, Any]]:
    """DICOM PN (``Family^Given^Middle^Prefix^Suffix=ideographic=phonetic``) -> HumanNames."""
    names = []
    for index, group in enumerate(pn.split("=")):
        if not group.strip("^ "):
            continue
        parts = (group.split("^") + [""] * 5)[:5]
        family, given, middle, prefix, suffix = (p.strip() for p in parts)
        name: dict[str, Any] = {"use": "official" if index == 0 else "usual"}
        if family:
            name["family"] = family
        givens = [g for g in (given, middle) if g]
        if givens:
            name["given"] = givens
        if prefix:
            name["prefix"] = [prefix]
        if suffix:
            name["suffix"] = [suffix]
        if index == 1:  # ideographic, e.g. 王^伟: keep the written form as text too
            name["text"] = f"{family}{given}"
        names.append(name)
    return names


def patient_from_dicom(study: dict[str, Any], system: str) -> dict[str, Any]:
    """A Patient from the DICOM patient module (used when no Patient has the DICOM Patient ID)."""
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": str(_value(study, "00100020"))}],
    }
    name = _value(study, "00100010")
    if isinstance(name, dict):
        pn = "=".join(name.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic"))
        names = _human_names(pn.rstrip("="))
        if names:
            patient["name"] = names
    sex = _SEX.get(str(_value(study, "00100040") or "").upper())
    if sex:
        patient["gender"] = sex
    birth = _value(study, "00100030")
    if isinstance(birth, str) and len(birth) == 8 and birth.isdecimal():
        patient["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    return patient
