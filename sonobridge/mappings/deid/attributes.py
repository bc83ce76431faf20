"""The attribute actions of PS3.15 Table E.1-1 applied to a pydicom data set (pixels aside).

Written here with pydicom rather than taken from ``deid`` or ``dicognito``: ``deid``'s
recipes are hand-kept lists (not the 2024b table with its option columns), and ``dicognito``
has its own fixed rules (random-looking but not keyed UIDs, its own date offset, no option
columns); neither applies the table's actions per option, nor resolves the combined actions
(X/Z, Z/D, X/Z/U*) the way an IOD needs. What the table cannot say, and is therefore decided
here by hand, is marked where it happens:

* combined actions need the attribute's type in the IOD; ``_TYPE1``/``_TYPE2`` hold the few
  that are Type 1 or 2 in the IODs SonoBridge de-identifies (US Image, US Multi-frame, SR,
  Key Object Selection, Presentation States);
* "dummy" values per VR (action D);
* what C ("clean") does per VR: dates shifted (Modified Dates), text scrubbed of the
  patient's names, IDs and dates (``text.py``), AE titles replaced by a keyed pseudonym;
* free text inside Content Sequence and Graphic Annotation Sequence (Text Value, Unformatted
  Text Value are not rows of the table: their sequence is);
* a last pass over every remaining text value takes out the patient's own name and IDs
  wherever they were typed (defence in depth: a site's free-text attribute unknown to the
  table is still cleaned of the identity this very object holds).

Pure: the key, the date shift and the pseudonyms are given; no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from sonobridge.mappings.deid.dates import shift_da, shift_dt
from sonobridge.mappings.deid.options import Options
from sonobridge.mappings.deid.table import Rule, table
from sonobridge.mappings.deid.text import identifying_strings, scrub
from sonobridge.mappings.deid.uids import hmac_uid, pseudonym

PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
CONTENT_SEQUENCE, GRAPHIC_ANNOTATION = 0x0040A730, 0x00700001
CONTENT_DATE, CONTENT_TIME = 0x00080023, 0x00080033
# SR Document General (C.17.2) and Key Object Document (C.17.6.2): Content Date/Time Type 1.
_DOCUMENT_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.",)
_PRESENTATION_PREFIX = "1.2.840.10008.5.1.4.1.1.11."
# By hand (the table has no IOD types): Type 1 / Type 2 attributes among the combined-action
# rows, in the IODs de-identified here. Content Date/Time are Type 1 in documents (above) and
# Type 2C in the General Image module of a cine (temporally related frames).
_TYPE1_DOCUMENT = frozenset({CONTENT_DATE, CONTENT_TIME})
_TYPE2 = frozenset({PATIENT_ID, CONTENT_DATE, CONTENT_TIME,
                    0x00700084,  # Content Creator's Name: Presentation State Identification
                    0x00081111,  # Referenced Performed Procedure Step Seq.: SR Document General
                    })
# Coded entries keep their codes in any mode (they name concepts, not people).
_CODE_ATTRIBUTES = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080105,
                              0x00080106, 0x0008010F, 0x00080117, 0x00080119, 0x00080120,
                              0x00080118})
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "AE", "UR"})
_FREE_TEXT_VRS = frozenset({"ST", "LT", "UT", "UC", "PN", "LO", "SH"})
_DUMMY: dict[str, Any] = {"PN": "ANONYMOUS", "LO": "REMOVED", "SH": "REMOVED",
                          "LT": "REMOVED", "ST": "REMOVED", "UT": "REMOVED", "UC": "REMOVED",
                          "CS": "REMOVED", "AE": "REMOVED", "DA": "19000101",
                          "DT": "19000101000000", "TM": "000000", "AS": "000Y", "IS": "0",
                          "DS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0,
                          "FD": 0.0, "UV": 0, "SV": 0, "UR": "", "OB": b"\0\0",
                          "OW": b"\0\0", "UN": b"\0\0"}
REMOVED_MARK = "REMOVED"
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_OWN_VALUES = frozenset({PATIENT_NAME, PATIENT_ID, 0x00120063})  # pseudonyms, method text


@dataclass(frozen=True)
class Context:
    """What one de-identification run needs to know: options, the key, the patient's date
    shift and pseudonyms, and the strings that identify the patient (to take out of text)."""

    options: Options
    key: bytes
    date_shift_days: int
    pseudo_name: str
    pseudo_id: str
    identifying: tuple[str, ...]
    # Retain Safe Private: (private creator, group, element low byte) known to be safe.
    # PS3.15 Table E.3.10-1 is not in the shipped table, so the list is the site's own.
    safe_private: frozenset[tuple[str, int, int]] = frozenset()


@dataclass
class Outcome:
    """What was done, for the caller's record and checks."""

    removed: int = 0
    replaced: int = 0
    uids: dict[str, str] = field(default_factory=dict)
    overlay_groups: list[int] = field(default_factory=list)  # kept for the pixel cleaner
    kept_private: int = 0


def identifying_in(ds: Dataset) -> tuple[str, ...]:
    """The strings in this data set that name the patient: names, IDs, accession number,
    birth date (and the same in the Other Patient IDs Sequence)."""
    names = [_text(ds.get(k)) for k in ("PatientName", "OtherPatientNames", "PatientBirthName",
                                         "PatientMotherBirthName", "ResponsiblePerson")]
    ids = [_text(ds.get(k)) for k in ("PatientID", "OtherPatientIDs", "AccessionNumber",
                                      "MedicalRecordLocator")]
    for item in ds.get("OtherPatientIDsSequence", []) or []:
        ids.append(_text(item.get("PatientID")))
    dates = [_text(ds.get("PatientBirthDate"))]
    names = [n for value in names for n in value.split("\\")]
    ids = [i for value in ids for i in value.split("\\") if i]
    return identifying_strings(names, ids, dates)


def deidentify(ds: Dataset, ctx: Context) -> Outcome:
    """Apply the profile to ``ds`` in place (file meta aside: the writer makes a new one) and
    mark it (Patient Identity Removed, the method codes, Longitudinal Temporal Information
    Modified). Pixel Data is left to ``core/deid/pixels.py``."""
    outcome = Outcome()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    _walk(ds, ctx, outcome, sop_class, nested=False, mode=None)
    ds.PatientName = ctx.pseudo_name  # Z allows a dummy: the teaching case's own patient
    ds.PatientID = ctx.pseudo_id
    _final_scrub(ds, ctx)
    mark(ds, ctx.options)
    return outcome


def mark(ds: Dataset, options: Options) -> None:
    """PatientIdentityRemoved YES, DeidentificationMethod, its CID 7050 codes, and (0028,0303)."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = ["PS3.15 E.1-1 2024b Basic Profile"] + [
        meaning[:64] for _, meaning in options.method_codes()[1:]]
    codes = []
    for value, meaning in options.method_codes():
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    ds.LongitudinalTemporalInformationModified = options.temporal


def resolve(action: str, tag: int, sop_class: str, nested: bool) -> str:
    """A combined action (X/Z, Z/D, X/D, X/Z/D, X/Z/U*) as the IOD needs it: D for a Type 1
    attribute, Z for a Type 2 one, else X. X/Z/U* keeps the references (their UIDs replaced)
    inside sequences and in documents and presentation states, where they are how the
    object points at its images; at the top level of an image they are Type 3 and go."""
    if "/" not in action:
        return action
    document = sop_class.startswith(_DOCUMENT_PREFIXES)
    if action == "X/Z/U*":
        return "U*" if nested or document or sop_class.startswith(_PRESENTATION_PREFIX) \
            else "X"
    if "D" in action and document and tag in _TYPE1_DOCUMENT:
        return "D"
    if tag in _TYPE2 or (document and tag in _TYPE1_DOCUMENT):
        return "Z" if "Z" in action else "D"
    return "X"


def _walk(ds: Dataset, ctx: Context, outcome: Outcome, sop_class: str, *, nested: bool,
          mode: str | None) -> None:
    """Apply the table to every element of ``ds``; ``mode`` is how free text not named by
    the table is treated inside a sequence whose row said D ("dummy") or C ("clean")."""
    tab = table()
    overlay_actions: dict[int, str] = {}
    for elem in _elements(ds):
        tag = int(elem.tag)
        group = tag >> 16
        rule = tab.rule(tag)
        if group % 2:
            _private(ds, elem, ctx, outcome)
            continue
        if 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
            if rule is not None:  # the group goes or stays as a whole (below)
                overlay_actions[group] = rule.action(ctx.options)
                if rule is tab.overlay_comments and overlay_actions[group] == "C":
                    elem.value = scrub(_text(elem.value), ctx.identifying)
            continue
        if rule is None:
            _unlisted(elem, ctx, outcome, sop_class, mode)
            continue
        _apply(ds, elem, rule, ctx, outcome, sop_class, nested, mode)
    for group, action in overlay_actions.items():
        curve = 0x5000 <= group <= 0x501E
        if curve or action != "C":
            # Curves are retired (no IOD here carries them): removed even under Clean Graphics.
            for elem in [e for e in _elements(ds) if e.tag.group == group]:
                del ds[elem.tag]
                outcome.removed += 1
        elif group not in outcome.overlay_groups:
            outcome.overlay_groups.append(group)


def _apply(ds: Dataset, elem: DataElement, rule: Rule, ctx: Context, outcome: Outcome,
           sop_class: str, nested: bool, mode: str | None) -> None:
    tag = int(elem.tag)
    action = resolve(rule.action(ctx.options), tag, sop_class, nested)
    if tag in (PATIENT_NAME, PATIENT_ID):
        return  # replaced by the pseudonyms after the walk
    if action == "X":
        del ds[elem.tag]
        outcome.removed += 1
    elif action == "Z":
        elem.value = Sequence() if elem.VR == "SQ" else (b"" if elem.VR in ("OB", "OW", "UN")
                                                          else "")
        outcome.replaced += 1
    elif action == "K":
        if elem.VR == "SQ":
            _items(elem, ctx, outcome, sop_class, mode)
    elif action in ("U", "U*"):
        if elem.VR == "UI":
            elem.value = _map_uids(elem.value, ctx, outcome)
            outcome.replaced += 1
        elif elem.VR == "SQ":
            _items(elem, ctx, outcome, sop_class, mode)
    elif action == "D":
        _dummy(elem, ctx, outcome, sop_class, tag)
    elif action == "C":
        _clean(ds, elem, ctx, outcome, sop_class, tag)
    else:  # the table's loader refuses other actions; a new edition's must be added here
        raise ValueError(f"unhandled action {action!r} for {rule.tag}")


def _dummy(elem: DataElement, ctx: Context, outcome: Outcome, sop_class: str,
           tag: int) -> None:
    outcome.replaced += 1
    if elem.VR == "SQ":  # a D sequence keeps its structure; its free text becomes dummy
        _items(elem, ctx, outcome, sop_class, "dummy")
    elif elem.VR == "UI":
        elem.value = _map_uids(elem.value, ctx, outcome)
    elif elem.VR == "AE":
        elem.value = pseudonym(ctx.key, _text(elem.value), "AE", 10)
    else:
        elem.value = _DUMMY.get(elem.VR, "")


def _clean(ds: Dataset, elem: DataElement, ctx: Context, outcome: Outcome, sop_class: str,
           tag: int) -> None:
    outcome.replaced += 1
    vr = elem.VR
    if vr == "SQ":
        _items(elem, ctx, outcome, sop_class, "clean")
    elif vr in ("DA", "DT"):
        _shift(ds, elem, ctx)
    elif vr == "TM":
        return  # whole days are shifted: the time of day stays
    elif vr == "UI":
        elem.value = _map_uids(elem.value, ctx, outcome)
    elif vr == "AE":
        elem.value = _each(elem.value, lambda v: pseudonym(ctx.key, v, "AE", 10))
    elif vr in _TEXT_VRS:
        elem.value = _each(elem.value, lambda v: scrub(v, ctx.identifying))
    elif vr in _BYTES_VRS:  # bytes cannot be read to be cleaned: cleaned to nothing
        elem.value = b""


def _unlisted(elem: DataElement, ctx: Context, outcome: Outcome, sop_class: str,
              mode: str | None) -> None:
    """An attribute the table does not name: kept (standard attributes not in Table E.1-1
    are not identifying), its sequences walked, and inside a D/C sequence its free text
    made dummy or cleaned."""
    tag = int(elem.tag)
    if elem.VR == "SQ":
        _items(elem, ctx, outcome, sop_class, mode)
        return
    if mode is None or tag in _CODE_ATTRIBUTES or elem.VR not in _FREE_TEXT_VRS:
        return
    if mode == "dummy":
        elem.value = _DUMMY[elem.VR]
    else:
        elem.value = _each(elem.value, lambda v: scrub(v, ctx.identifying))
    outcome.replaced += 1


def _items(elem: DataElement, ctx: Context, outcome: Outcome, sop_class: str,
           mode: str | None) -> None:
    for item in elem.value or []:
        _walk(item, ctx, outcome, sop_class, nested=True, mode=mode)


def _private(ds: Dataset, elem: DataElement, ctx: Context, outcome: Outcome) -> None:
    """Private attributes go (X) unless Retain Safe Private names them (C: kept as they are
    known to hold nothing identifying); a private creator stays only for a kept block."""
    tag = elem.tag
    if ctx.options.retain_safe_private and ctx.safe_private:
        if 0x0010 <= tag.element <= 0x00FF:  # a creator: kept if any of its block is safe
            creator = _text(elem.value)
            if any(c == creator and g == tag.group for c, g, _ in ctx.safe_private):
                return
        else:
            creator_tag = (tag.group << 16) | (tag.element >> 8)
            creator_elem = ds.get(creator_tag)
            creator = _text(creator_elem.value) if creator_elem is not None else ""
            if (creator, tag.group, tag.element & 0xFF) in ctx.safe_private:
                outcome.kept_private += 1
                return
    del ds[tag]
    outcome.removed += 1


def _shift(ds: Dataset, elem: DataElement, ctx: Context) -> None:
    shift = shift_da if elem.VR == "DA" else shift_dt
    values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
    shifted = [shift(str(v), ctx.date_shift_days) if v else "" for v in values]
    if any(v is None for v in shifted):  # not a date: cannot be shifted, so cannot be kept
        elem.value = ""
        return
    elem.value = shifted if len(shifted) > 1 else shifted[0]


def _map_uids(value: Any, ctx: Context, outcome: Outcome) -> Any:
    def one(uid: str) -> str:
        uid = str(uid).strip()
        if not uid:
            return uid
        new = outcome.uids.get(uid)
        if new is None:
            new = outcome.uids[uid] = hmac_uid(ctx.key, uid)
        return new
    return _each(value, one)


def _elements(ds: Dataset) -> list[DataElement]:
    """The elements of ``ds`` without Pixel Data (and float pixel data): iterating a pydicom
    data set loads every deferred value, and a native cine's pixels would be read whole."""
    return [ds[tag] for tag in list(ds.keys()) if int(tag) not in _PIXEL_TAGS]


def _walk_text(ds: Dataset, visit: Any) -> None:
    """``Dataset.walk`` without touching the pixel data (see ``_elements``)."""
    for element in _elements(ds):
        if element.VR == "SQ":
            for item in element.value or []:
                _walk_text(item, visit)
        else:
            visit(ds, element)


def _final_scrub(ds: Dataset, ctx: Context) -> None:
    """Take the patient's own name and IDs out of every remaining text value."""
    def visit(dataset: Dataset, element: DataElement) -> None:
        if element.VR in _TEXT_VRS and element.value and int(element.tag) not in (
                PATIENT_NAME, PATIENT_ID) and int(element.tag) not in _CODE_ATTRIBUTES:
            element.value = _each(element.value,
                                  lambda v: scrub(v, ctx.identifying, dates=False))
    _walk_text(ds, visit)


def _each(value: Any, fn: Any) -> Any:
    if isinstance(value, (MultiValue, list)):
        return [fn(str(v)) for v in value]
    return fn(str(value))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, DataElement):
        value = value.value
    if isinstance(value, (MultiValue, list)):
        return "\\".join(str(v) for v in value)
    return str(value)


def text_to_check(ds: Dataset) -> list[tuple[int, str]]:
    """(tag, value) of every text value a patient's identity could still be in: text VRs
    only (a number is not a name), without the pseudonyms and the marks written here
    (Patient's Name and ID, De-identification Method, code meanings)."""
    out: list[tuple[int, str]] = []

    def visit(dataset: Dataset, element: DataElement) -> None:
        tag = int(element.tag)
        if element.VR in _TEXT_VRS and element.value and tag not in _OWN_VALUES \
                and tag not in _CODE_ATTRIBUTES:
            out.append((tag, _text(element.value)))
    _walk_text(ds, visit)
    return out


def all_text(ds: Dataset) -> Iterable[str]:
    """Every text value in ``ds`` and its sequences (for leak checks)."""
    out: list[str] = []

    def visit(dataset: Dataset, element: DataElement) -> None:
        if element.VR not in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN") and \
                element.value is not None:
            out.append(_text(element.value))
    _walk_text(ds, visit)
    return out
