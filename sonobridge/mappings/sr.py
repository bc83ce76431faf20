"""DICOM Structured Reports -> FHIR Observations (STANDARDS.md §8).

Follows HL7's "DICOM SR to FHIR Resource Mapping" IG for **TID 1500** (Measurement Report): a
measurement group becomes an imaging-measurement-group Observation whose ``hasMember`` lists one
Observation per numeric (NUM) measurement. The ultrasound templates **TID 5000** (OB-GYN),
**TID 5100** (vascular) and **TID 5200** (adult echo) nest their measurements the same way (a
section or group CONTAINER that CONTAINS NUM items), so one walk serves all four; what differs
per template is only how the root is recognised.

What the content items say is kept: the concept name as ``code`` with its coding system (DCM,
LOINC, SNOMED CT), UCUM units as ``valueQuantity``, finding site (SCT 363698007, or an anatomic
container such as a vessel or a cardiac chamber) as ``bodySite``, measurement method as
``method``, derivation (mean, last, ...), laterality, the fetus ID of the subject context,
growth percentile rank and Z-score as ``component``; the observation UID (0040,A171) as a
``urn:dicom:uid`` identifier. Every Observation also carries a stable identifier made of the SR
SOP Instance UID and the item's position in the tree, and an id derived from it, so storing the
same SR again replaces its Observations instead of adding new ones.

Pure: no database, network or clock. Ill-formed items (no units, a value that is not a number,
a missing relationship type) are skipped with a warning; the rest maps.

**Valid by construction.** What is written here is a fixed structure of R4 Observation elements;
the only values taken from the SR are cleaned to what their FHIR type allows (codes with single
inner spaces, strings without control characters, URIs without spaces, OIDs of digits and dots,
dates and time zones that exist) or the item is skipped, and the profile is claimed only for a
``Patient`` subject. So the core writes these Observations without building an R4 model of each
or walking the profile for each (most of what storing an SR cost): ``tests/mappings/
test_sr_valid.py`` holds the mapping to that with arbitrary content, through the same validator
and profile the REST API applies.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date as _date
from typing import Any
from urllib.parse import quote

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

Json = dict[str, Any]  # one data set in DICOM JSON (PS3.18 F.2)
INVALID = "x-invalid"  # an element pydicom could not convert: its raw text (not DICOM JSON)

DCM = "http://dicom.nema.org/resources/ontology/DCM"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DICOM_UID = "urn:dicom:uid"
# Identifier systems of the Observations made here: the SR they came from, and the item.
SR_INSTANCE_SYSTEM = "http://sonobridge.org/fhir/sid/sr-instance"
SR_ITEM_SYSTEM = "http://sonobridge.org/fhir/sid/sr-item"
OBSERVATION_PROFILE = "http://sonobridge.org/fhir/StructureDefinition/sono-ultrasound-observation"
# Claim the profile (so the core's profile validator checks every Observation on write; it is
# most of what storing an SR costs: bench/sr.py measures it both ways).
CLAIM_PROFILE = True

SCHEMES = {"DCM": DCM, "LN": LOINC, "SCT": SCT, "SRT": SCT, "SNM3": SCT, "UCUM": UCUM,
           "ICD10": "http://hl7.org/fhir/sid/icd-10"}

# Storage SOP classes whose content tree is walked.
SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR",
}
# Root concept name -> template, for SRs without a Content Template Sequence.
ROOTS = {("DCM", "126000"): "1500", ("DCM", "125000"): "5000",
         ("DCM", "125100"): "5100", ("DCM", "125200"): "5200"}
TEMPLATES = frozenset(ROOTS.values())

# Concept names (scheme, code) of the modifiers and context items read off the tree.
FINDING_SITE = {("SCT", "363698007"), ("SRT", "G-C0E3")}
LATERALITY = {("SCT", "272741003"), ("SRT", "G-C171")}
METHOD = {("SCT", "370129005"), ("SRT", "G-C036")}
DERIVATION = {("DCM", "121401")}
FINDING = {("DCM", "121071")}
TRACKING_ID = {("DCM", "112039")}
TRACKING_UID = {("DCM", "112040")}
FETUS_ID = {("LN", "11951-1")}
PERCENTILE = {("DCM", "125012")}
Z_SCORE = {("DCM", "125013")}
# CODE items read as context or components, never as qualitative evaluations of their own.
CONTEXT_NAMES = FINDING_SITE | LATERALITY | METHOD | DERIVATION | FINDING
# Containers that structure a report (not anatomy): never taken for a body site.
STRUCTURAL_SCHEMES = {"DCM", "LN", "99SONO"}

# Characters FHIR strings may not hold (below U+0020 but tab, CR, LF), and an OID.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")

MAX_DEPTH = 16  # content trees nest a handful of levels; deeper is broken or hostile
MAX_OBSERVATIONS = 2000  # per SR: bounded work and bounded writes


@dataclass
class SrMapping:
    """What an SR maps to: ``template`` (``None`` when not one of the four), the Observations
    (groups first, each with its id), and warnings about the items that were skipped."""

    template: str | None
    observations: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Context:
    """What an item inherits from the containers above it."""

    body_site: dict[str, Any] | None = None
    laterality: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    fetus: str | None = None
    effective: str | None = None


def _context_components(context: _Context) -> list[dict[str, Any]]:
    """What the SR says of every measurement in a group, as components: laterality, and which
    fetus (TID 5000's Fetus ID)."""
    out: list[dict[str, Any]] = []
    if context.laterality:
        out.append({"code": _cc(SCT, "272741003", "Laterality"),
                    "valueCodeableConcept": context.laterality})
    if context.fetus:
        out.append({"code": _cc(LOINC, "11951-1", "Fetus ID"), "valueString": context.fetus})
    return out


def observation_id(sop_uid: str, path: str) -> str:
    """A stable FHIR id for the item at ``path`` of SR ``sop_uid`` (64 characters at most).

    The SR's part comes first, so an SR's Observations sit side by side in every index keyed
    by id (the resource ids, ``has-member`` and reverse references): storing an SR then
    touches a few index pages instead of one per Observation (about 150 pages fewer)."""
    sr = hashlib.sha256(sop_uid.encode()).hexdigest()[:20]
    item = hashlib.sha256(f"{sop_uid}/{path}".encode()).hexdigest()[:20]
    return f"sr-{sr}-{item}"


def template_of(dataset: Dataset | Json) -> str | None:
    """The root template: the Content Template Sequence when it names a DCMR template, else
    the root concept name (TID 1500/5000/5100/5200), else ``None``."""
    dataset = as_json(dataset)
    for item in _seq(dataset, "ContentTemplateSequence") or []:
        tid = str(_v(item, "TemplateIdentifier") or "").strip()
        if tid in TEMPLATES and str(_v(item, "MappingResource") or "DCMR") == "DCMR":
            return tid
    key = _key(dataset)
    return ROOTS.get(key) if key else None


def as_json(dataset: Dataset | Json) -> Json:
    """The data set in DICOM JSON: the form the archive keeps (walked without pydicom's
    per-attribute lookups, ten times faster); elements pydicom cannot convert are left out
    (and the items that needed them are skipped with a warning)."""
    if isinstance(dataset, Dataset):
        try:
            return dataset.to_json_dict(bulk_data_threshold=1 << 30)
        except (ValueError, TypeError, OverflowError):
            return _lenient_json(dataset)
    return dataset


def _lenient_json(dataset: Dataset) -> Json:
    """Element by element, leaving out only what cannot be converted (pydicom's own
    ``suppress_invalid_tags`` drops the whole sequence around a bad value)."""
    out: Json = {}
    for tag in list(dataset.keys()):
        try:
            element = dataset[tag]
            if element.VR == "SQ":
                out[f"{tag:08X}"] = {"vr": "SQ", "Value": [_lenient_json(item)
                                                           for item in element.value]}
            else:
                out[f"{tag:08X}"] = element.to_json_dict(None, 1 << 30)
        except (ValueError, TypeError, OverflowError):
            raw = dataset.get_item(tag)
            value = raw.value if raw is not None else None
            shown = value.decode("latin-1", "replace") if isinstance(value, bytes) else ""
            out[f"{tag:08X}"] = {"vr": raw.VR if raw is not None else "UN",
                                 INVALID: shown[:32]}
    return out


def map_sr(dataset: Dataset | Json, *, sop_uid: str, study_ref: str, subject_ref: str | None,
           zone: str = "Z") -> SrMapping:
    """The Observations an SR holds. ``study_ref`` is the ImagingStudy it derives from
    (``ImagingStudy/<id>``), ``subject_ref`` its Patient, ``zone`` the site's offset for DICOM
    times that carry none."""
    dataset = as_json(dataset)
    template = template_of(dataset)
    result = SrMapping(template)
    if template is None:
        return result
    final = (str(_v(dataset, "CompletionFlag")) == "COMPLETE"
             and str(_v(dataset, "VerificationFlag")) == "VERIFIED")
    walker = _Walker(result, sop_uid=sop_uid, study_ref=study_ref, subject_ref=subject_ref,
                     zone=_zone(_v(dataset, "TimezoneOffsetFromUTC"), zone),
                     status="final" if final else "preliminary", template=template)
    context = _Context(effective=walker.datetime(_v(dataset, "ContentDate"),
                                                 _v(dataset, "ContentTime")))
    walker.container(dataset, "1", context, 0)
    return result


class _Walker:
    def __init__(self, result: SrMapping, *, sop_uid: str, study_ref: str,
                 subject_ref: str | None, zone: str, status: str, template: str) -> None:
        self.result = result
        self.sop_uid = sop_uid
        self.study_ref = study_ref
        self.subject_ref = subject_ref
        self.zone = zone
        self.status = status
        self.template = template
        self.full = False
        # Each item's concept name key, by the item's id: asked for up to four times per
        # item (its container, its context, its group); the items live as long as the walk.
        self.keys: dict[int, tuple[str, str] | None] = {}

    def key(self, item: Json) -> tuple[str, str] | None:
        ident = id(item)
        if ident in self.keys:
            return self.keys[ident]
        found = self.keys[ident] = _key(item)
        return found

    def warn(self, path: str, message: str) -> None:
        self.result.warnings.append(f"content item {path}: {message}")

    def datetime(self, date: Any, time: Any) -> str | None:
        return _datetime(str(date or ""), str(time or ""), self.zone)

    # ------------------------------------------------------------------ the tree

    def container(self, item: Json, path: str, context: _Context, depth: int) -> None:
        """A CONTAINER: its modifiers refine the context; NUM children make it a group."""
        if depth > MAX_DEPTH:
            self.warn(path, f"nested deeper than {MAX_DEPTH} levels: not read")
            return
        children = list(_children(item))
        context = self.refine(item, children, context, anatomic=depth > 0)
        members: list[str] = []
        group_path = path
        for index, child in enumerate(children, start=1):
            child_path = f"{path}.{index}"
            kind = str(_v(child, "ValueType") or "")
            relation = str(_v(child, "RelationshipType") or "")
            if not relation:
                self.warn(child_path, "no relationship type (0040,A010): subtree skipped")
                continue
            if relation != "CONTAINS":
                continue
            if kind == "CONTAINER":
                self.container(child, child_path, context, depth + 1)
            elif kind == "NUM":
                made = self.measurement(child, child_path, context, depth + 1)
                if made is not None:
                    members.append(made)
            elif kind == "CODE" and self.key(child) not in CONTEXT_NAMES:
                made = self.qualitative(child, child_path, context)
                if made is not None:
                    members.append(made)
        if members and not self.full:
            self.group(item, group_path, context, members, children)

    def refine(self, item: Json, children: list[Json], context: _Context, *,
               anatomic: bool) -> _Context:
        """The context below an item: with ``anatomic`` (a container below the root), a
        concept name that is not a report-structure code (a vessel, a chamber) becomes the
        body site; the item's finding site, laterality, method and fetus ID override."""
        refined = _Context(context.body_site, context.laterality, context.method,
                           context.fetus, context.effective)
        key = self.key(item)
        if anatomic and key is not None and key[0] not in STRUCTURAL_SCHEMES:
            refined.body_site = _concept(_seq(item, "ConceptNameCodeSequence")[0])
        for child in children:
            relation = str(_v(child, "RelationshipType") or "")
            if relation not in ("HAS CONCEPT MOD", "HAS OBS CONTEXT", "HAS ACQ CONTEXT"):
                continue
            name = self.key(child)
            if name in FINDING_SITE:
                refined.body_site = _code_value(child) or refined.body_site
            elif name in LATERALITY:
                refined.laterality = _code_value(child) or refined.laterality
            elif name in METHOD:
                refined.method = _code_value(child) or refined.method
            elif name in FETUS_ID:
                refined.fetus = _text(child) or refined.fetus
        observed = str(_v(item, "ObservationDateTime") or "")
        when = self.datetime(observed[:8], observed[8:])
        if when:
            refined.effective = when
        return refined

    def qualitative(self, item: Json, path: str, context: _Context) -> str | None:
        """A CODE item a group CONTAINS (TID 1501 qualitative evaluation, an OB-GYN finding)
        -> an Observation with ``valueCodeableConcept`` among the group's members."""
        if len(self.result.observations) >= MAX_OBSERVATIONS or self.key(item) is None:
            return None
        value = _code_value(item)
        if value is None:
            return None
        obs = self.base(path, _concept(_seq(item, "ConceptNameCodeSequence")[0]), item,
                        context.effective)
        obs["valueCodeableConcept"] = value
        if context.body_site:
            obs["bodySite"] = context.body_site
        self.result.observations.append(obs)
        return str(obs["id"])

    def measurement(self, item: Json, path: str, context: _Context, depth: int
                    ) -> str | None:
        """A NUM item -> one Observation (its id), or ``None`` when it is ill-formed."""
        if len(self.result.observations) >= MAX_OBSERVATIONS:
            if not self.full:
                self.warn(path, f"more than {MAX_OBSERVATIONS} measurements: the rest skipped")
            self.full = True
            return None
        if self.key(item) is None:
            self.warn(path, "NUM without a concept name: skipped")
            return None
        value = _quantity(item)
        if isinstance(value, str):
            self.warn(path, f"{_meaning(item)}: {value}: skipped")
            return None
        children = list(_children(item))
        local = self.refine(item, children, context, anatomic=False) \
            if children else context
        obs = self.base(path, _concept(_seq(item, "ConceptNameCodeSequence")[0]), item,
                        local.effective)
        obs["valueQuantity"] = value
        if local.body_site:
            obs["bodySite"] = local.body_site
        if local.method:
            obs["method"] = local.method
        components = self.components(children, path, local)
        if components:
            obs["component"] = components
        self.result.observations.append(obs)
        return str(obs["id"])

    def components(self, children: list[Json], path: str, context: _Context
                   ) -> list[dict[str, Any]]:
        out = _context_components(context)
        for index, child in enumerate(children, start=1):
            name = self.key(child)
            kind = str(_v(child, "ValueType") or "")
            if name in DERIVATION and kind == "CODE":
                derivation = _code_value(child)
                if derivation:
                    out.append({"code": _cc(DCM, "121401", "Derivation"),
                                "valueCodeableConcept": derivation})
            elif (name in PERCENTILE or name in Z_SCORE) and kind == "NUM":
                value = _quantity(child)
                if isinstance(value, str):
                    self.warn(f"{path}.{index}", f"{_meaning(child)}: {value}: skipped")
                    continue
                out.append({"code": _concept(_seq(child, "ConceptNameCodeSequence")[0]),
                            "valueQuantity": value})
        return out

    def group(self, item: Json, path: str, context: _Context, members: list[str],
              children: list[Json]) -> None:
        """The container of measurements -> the measurement-group Observation (hasMember).
        TID 1500 groups carry DCM 125007 as the IG says; the ultrasound templates their own
        section or group name (BPD's "Biometry Group", a vessel, a chamber)."""
        concept = _concept(_seq(item, "ConceptNameCodeSequence")[0]) \
            if self.key(item) is not None else _cc(DCM, "125007", "Measurement Group")
        obs = self.base(path, concept, item, context.effective)
        obs["hasMember"] = [{"reference": f"Observation/{m}"} for m in members]
        if context.body_site:
            obs["bodySite"] = context.body_site
        if context.method:
            obs["method"] = context.method
        components: list[dict[str, Any]] = []
        for child in children:
            name = self.key(child)
            if name in TRACKING_UID:
                uid = _uid(_v(child, "UID"))
                if uid:
                    obs["identifier"].append({"system": DICOM_UID, "value": f"urn:oid:{uid}"})
            elif name in TRACKING_ID:
                text = _text(child)
                if text:
                    obs["identifier"].append({"type": {"text": "Tracking Identifier"},
                                              "value": text})
            elif name in FINDING:
                finding = _code_value(child)
                if finding:
                    components.append({"code": _cc(DCM, "121071", "Finding"),
                                       "valueCodeableConcept": finding})
        components.extend(_context_components(context))
        if components:
            obs["component"] = components
        # Groups go before their members in the list (members were appended first).
        first_member = next(i for i, o in enumerate(self.result.observations)
                            if o["id"] in set(members))
        self.result.observations.insert(first_member, obs)

    def base(self, path: str, code: dict[str, Any], item: Json, effective: str | None
             ) -> dict[str, Any]:
        identifiers: list[dict[str, Any]] = []
        observation_uid = _uid(_v(item, "ObservationUID"))
        if observation_uid:
            identifiers.append({"system": DICOM_UID, "value": f"urn:oid:{observation_uid}"})
        identifiers.append({"system": SR_ITEM_SYSTEM, "value": f"{self.sop_uid}/{path}"})
        identifiers.append({"system": SR_INSTANCE_SYSTEM, "value": f"urn:oid:{self.sop_uid}"})
        obs: dict[str, Any] = {
            "resourceType": "Observation", "id": observation_id(self.sop_uid, path),
            "identifier": identifiers, "status": self.status,
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": "imaging",
                                      "display": "Imaging"}]}],
            "code": code,
        }
        if self.subject_ref:
            if CLAIM_PROFILE and self.subject_ref.startswith("Patient/"):
                obs["meta"] = {"profile": [OBSERVATION_PROFILE]}  # the profile's subject
            obs["subject"] = {"reference": self.subject_ref}
        if effective:
            obs["effectiveDateTime"] = effective
        obs["partOf"] = [{"reference": self.study_ref}]
        obs["derivedFrom"] = [{"reference": self.study_ref,
                               "display": f"DICOM SR {self.sop_uid} (TID {self.template})"}]
        return obs


# ---------------------------------------------------------------------- content items

class _Tags(dict[str, str]):
    """Keyword -> DICOM JSON tag (``0040A040``), looked up once per keyword."""

    def __missing__(self, keyword: str) -> str:
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        found = self[keyword] = f"{tag:08X}"
        return found


_TAGS = _Tags()


def _v(item: Json, keyword: str) -> Any:
    """The first value of an attribute (``None`` when absent or empty)."""
    element = item.get(_TAGS[keyword])
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _seq(item: Json, keyword: str) -> list[Json]:
    """The items of a sequence (dicts only: anything else in the JSON is ignored)."""
    element = item.get(_TAGS[keyword])
    values = element.get("Value") if isinstance(element, dict) else None
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def _children(item: Json) -> Iterable[Json]:
    yield from _seq(item, "ContentSequence") or []


def _key(item: Json) -> tuple[str, str] | None:
    names = _seq(item, "ConceptNameCodeSequence") or []
    if not names:
        return None
    code = names[0]
    value = _code_of(code)
    scheme = str(_v(code, "CodingSchemeDesignator") or "").strip()
    return (scheme, value) if value else None


def _code_of(code: Json) -> str:
    """The code value as a FHIR ``code`` (no leading, trailing or repeated whitespace)."""
    return " ".join(str(_v(code, "CodeValue") or _v(code, "LongCodeValue")
                        or _v(code, "URNCodeValue") or "").split())


def _string(value: Any) -> str:
    """Text as a FHIR ``string``: no control characters, no surrounding spaces ("" for
    none, which the callers leave out)."""
    return _CONTROL.sub("", str(value or "")).strip() if value is not None else ""


def _uid(value: Any) -> str:
    """A DICOM UID when it is one (digits and dots), else ""."""
    text = str(value or "").strip()
    return text if len(text) <= 64 and _OID.fullmatch(text) else ""


def _meaning(item: Json) -> str:
    names = _seq(item, "ConceptNameCodeSequence") or []
    return _string(_v(names[0], "CodeMeaning")) if names else "?"


def _coding(code: Json) -> dict[str, Any]:
    scheme = str(_v(code, "CodingSchemeDesignator") or "").strip()
    system = SCHEMES.get(scheme) or f"urn:dicom:cs:{quote(_string(scheme) or 'unknown')}"
    coding: dict[str, Any] = {"system": system, "code": _code_of(code)}
    meaning = _string(_v(code, "CodeMeaning"))
    if meaning:
        coding["display"] = meaning
    return coding


def _concept(code: Json) -> dict[str, Any]:
    coding = _coding(code)
    concept: dict[str, Any] = {"coding": [coding]}
    if coding.get("display"):
        concept["text"] = coding["display"]
    return concept


def _cc(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _code_value(item: Json) -> dict[str, Any] | None:
    codes = _seq(item, "ConceptCodeSequence") or []
    return _concept(codes[0]) if codes and _code_of(codes[0]) else None


def _text(item: Json) -> str | None:
    return _string(_v(item, "TextValue")) or None


def _quantity(item: Json) -> dict[str, Any] | str:
    """The NUM's value as a FHIR Quantity, or why it has none (no value, no units, not a
    number). UCUM units carry the UCUM system; other schemes only the unit text."""
    measured = _seq(item, "MeasuredValueSequence") or []
    if not measured:
        return "no measured value"
    mv = measured[0]
    raw = _v(mv, "FloatingPointValue")
    if raw is None:
        raw = _v(mv, "NumericValue")
    if raw is None:
        invalid = (mv.get(_TAGS["NumericValue"]) or {}).get(INVALID)
        if invalid is not None:
            return f"value {invalid!r} is not a number"
    try:
        number = float(str(raw).strip()) if raw is not None and str(raw).strip() else None
    except (ValueError, OverflowError):
        return f"value {str(raw)[:32]!r} is not a number"
    if number is None or number != number or number in (float("inf"), float("-inf")):
        return "no numeric value"
    units = _seq(mv, "MeasurementUnitsCodeSequence") or []
    if not units:
        return "no measurement units"
    unit = units[0]
    code = " ".join(str(_v(unit, "CodeValue") or "").split())
    if not code:
        return "no measurement units"
    value: int | float = int(number) if number.is_integer() and abs(number) < 1e15 else number
    quantity: dict[str, Any] = {"value": value,
                                "unit": _string(_v(unit, "CodeMeaning")) or code}
    if str(_v(unit, "CodingSchemeDesignator") or "").strip() == "UCUM":
        quantity["system"] = UCUM
        quantity["code"] = code
    return quantity


def _zone(offset: Any, default: str) -> str:
    """DICOM ``+HHMM`` -> ``+HH:MM`` when it is an offset FHIR allows (up to 14:00)."""
    text = str(offset or "").strip()
    if len(text) == 5 and text[0] in "+-" and text[1:].isascii() and text[1:].isdecimal():
        hours, minutes = int(text[1:3]), int(text[3:])
        if minutes < 60 and (hours < 14 or (hours == 14 and minutes == 0)):
            return f"{text[:3]}:{text[3:]}"
    return default


def _datetime(date: str, time: str, zone: str) -> str | None:
    """DICOM DA + TM (local) -> FHIR dateTime in ``zone``; a date alone stays a date."""
    date, time = date.strip(), time.strip()
    if len(date) != 8 or not date.isascii() or not date.isdecimal():
        return None
    try:  # a date that exists (FHIR's dateTime pattern, and sense)
        _date(int(date[:4]), int(date[4:6]), int(date[6:]))
    except ValueError:
        return None
    out = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    if len(time) >= 4 and time[:4].isascii() and time[:4].isdecimal() \
            and int(time[:2]) < 24 and int(time[2:4]) < 60:
        seconds = time[4:6] if len(time) >= 6 and time[4:6].isascii() \
            and time[4:6].isdecimal() and int(time[4:6]) < 60 else "00"
        return f"{out}T{time[:2]}:{time[2:4]}:{seconds}{zone}"
    return out
