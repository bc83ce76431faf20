"""C-FIND (Patient Root and Study Root) answered from the QIDO-RS index: the same matching
rules (wildcards, ranges, lists, person names incl. Chinese) whichever protocol asks.

The identifier's keys become QIDO parameters; each result carries exactly the keys asked for
(empty when this server has no value for one), as PS3.4 C.4.1 requires. Every match is
answered: the index is read a page at a time in a stable order, with no cap. Pending responses
say 0xFF01 when a key with a value could not be matched on (C.4.1.1.4).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import time
    StudyRootQueryRetrieveInformationModelFind as StudyRootFind,
)

from sonobridge.core.errors import CoreError
from sonobridge.core.imaging import query as qido
from sonobridge.core.imaging.archive import Archive
from sonobridge.core.imaging.metadata import pn_text

LEVELS = {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
PATIENT_KEYS = {"00100010", "00100020", "00100030", "00100040", "00101000", "00100021"}
SKIP = {"00080005", "00080052", "00080054", "00080056", "00081190"}
PENDING, PENDING_UNSUPPORTED_KEYS = 0xFF00, 0xFF01
PAGE = 500  # index rows read per query; a response at a time goes out


class FindError(ValueError):
    """The identifier cannot be answered; ``status`` is the C-FIND failure status."""

    def __init__(self, message: str, status: int = 0xA900) -> None:
        super().__init__(message)
        self.status = status


def params_of(identifier: Dataset) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(QIDO parameters, requested tags, sequence keys with values, which are not matched on).
    A value of ``*`` alone is universal matching, like an empty one."""
    params: list[tuple[str, str]] = []
    wanted: list[str] = []
    unmatched: list[str] = []
    for element in identifier:
        tag = f"{element.tag:08X}"
        if tag in SKIP or element.tag.group == 0x0000:
            continue
        wanted.append(tag)
        if element.VR == "SQ":
            if any(_has_value(item) for item in element.value or []):
                unmatched.append(tag)
            continue
        raw = element.value
        if raw is None or raw == "":
            continue
        if isinstance(raw, list | tuple) or type(raw).__name__ == "MultiValue":
            text = "\\".join(str(v) for v in raw)
        else:
            text = str(raw)
        if text.strip("*") == "":
            continue
        params.append((tag, text))
    return params, wanted, unmatched


def _has_value(item: Dataset) -> bool:
    for element in item:
        if element.VR == "SQ":
            if any(_has_value(sub) for sub in element.value or []):
                return True
        elif element.value not in (None, "", b"") and str(element.value).strip("*"):
            return True
    return False


@dataclass
class Search:
    """What a C-FIND answers: the pending status for every match, and the matches."""

    status: int
    results: Iterator[Dataset]
    unsupported: list[str] = field(default_factory=list)


def find(archive: Archive, identifier: Dataset, aet: str, model: str = StudyRootFind,
         implicit_vr: bool = False, page: int = PAGE) -> Search:
    """Checks the identifier (raising :class:`FindError`), then the responses' identifiers as
    they are read, ready to be written in the association's transfer syntax (``implicit_vr``:
    Implicit VR Little Endian, else Explicit VR Little Endian)."""
    level = str(identifier.get("QueryRetrieveLevel", "")).upper()
    if level not in ("PATIENT", *LEVELS):
        raise FindError(f"QueryRetrieveLevel {level!r} is not PATIENT, STUDY, SERIES or IMAGE")
    if level == "PATIENT" and model == StudyRootFind:
        raise FindError("QueryRetrieveLevel PATIENT is not a level of the Study Root model")
    params, wanted, unmatched = params_of(identifier)
    qido_level = LEVELS.get(level, "study")
    try:
        query = qido.parse_query(qido_level, params)
    except CoreError as exc:
        raise FindError(exc.message) from None
    query.include |= set(wanted)
    query.limit = page
    unsupported = [*query.warnings, *(f"{tag}: sequence matching is not supported"
                                      for tag in unmatched)]
    status = PENDING_UNSUPPORTED_KEYS if unsupported else PENDING
    return Search(status, _answers(archive, query, wanted, level, aet, implicit_vr),
                  unsupported)


def _answers(archive: Archive, query: qido.Query, wanted: list[str], level: str, aet: str,
             implicit_vr: bool) -> Iterator[Dataset]:
    """Every match, a page of index rows at a time (``Archive.query_pages``)."""
    build = {"study": qido.study_result, "series": qido.series_result,
             "instance": qido.instance_result}[query.level]
    seen_patients: set[str] = set()
    for rows in archive.query_pages(query):
        for row in rows:
            data = build(row, query)
            if level == "PATIENT":
                patient_id = _first(data.get("00100020"))
                if patient_id in seen_patients:
                    continue
                seen_patients.add(patient_id)
            yield to_dataset(data, wanted, level, aet, implicit_vr)


def _first(item: dict[str, Any] | None) -> str:
    values = (item or {}).get("Value") or [""]
    return str(values[0])


def to_dataset(data: dict[str, Any], wanted: list[str], level: str, aet: str,
               implicit_vr: bool = False) -> Dataset:
    """A C-FIND response identifier with the requested keys, UTF-8 encoded.

    Text values are put in already encoded, and the data set says which encoding they are in,
    so that writing it copies bytes: ``Dataset.from_json`` and pydicom's writer converting
    every value cost 0.2 ms per response, which a broad query paid a hundred times over."""
    ds = Dataset()
    ds.set_original_encoding(implicit_vr, True, _UTF8_CODECS)
    elements = ds._dict
    answer = {**data, "00080005": _UTF8, "00080052": {"vr": "CS", "Value": [level]},
              "00080054": {"vr": "AE", "Value": [aet]}}
    for tag in (*wanted, "00080005", "00080052", "00080054"):
        number = int(tag, 16)
        item = answer.get(tag)
        if item is None:
            try:
                vr = dictionary_VR(number).split(" ")[0]  # "US or SS": either, it is empty
            except KeyError:
                vr = "UN"
            item = {"vr": vr}  # asked for, not known here: returned empty
        raw = _raw(number, item, implicit_vr)
        if raw is not None:
            elements[raw.tag] = raw
        elif item.get("vr") == "SQ":  # sequence keys are not matched, and come back empty
            ds.add_new(number, "SQ", DicomSequence([]))
        else:
            elements[BaseTag(number)] = Dataset.from_json({tag: item})[number]
    return ds


_UTF8 = {"vr": "CS", "Value": ["ISO_IR 192"]}
_UTF8_CODECS = convert_encodings("ISO_IR 192")
# Text VRs whose DICOM JSON values map one to one onto their UTF-8 bytes (PS3.18 F.2.3).
# DS is left to pydicom (a JSON number may need reformatting to fit 16 characters).
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
             "UI", "UR", "UT", "UN"}


def _raw(number: int, item: dict[str, Any], implicit_vr: bool) -> RawDataElement | None:
    """The element already encoded (the value bytes are the same in implicit and explicit VR
    little endian), or ``None`` for what pydicom must convert."""
    vr = item.get("vr")
    if vr not in _TEXT_VRS or "InlineBinary" in item or "BulkDataURI" in item:
        return None
    texts = []
    for value in item.get("Value") or []:
        if isinstance(value, dict):  # PN
            value = pn_text(value)
        elif value is None:
            value = ""
        elif not isinstance(value, str | int):
            return None
        texts.append(str(value))
    encoded = "\\".join(texts).encode("utf-8")
    if len(encoded) % 2:
        encoded += b"\0" if vr == "UI" else b" "
    return RawDataElement(BaseTag(number), vr, len(encoded), encoded, 0, implicit_vr, True)
