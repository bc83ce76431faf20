"""C-FIND (Patient Root and Study Root) answered from the QIDO-RS index: the same matching
rules (wildcards, ranges, lists, person names incl. Chinese) whichever protocol asks.

The identifier's keys become QIDO parameters; each result carries exactly the keys asked for
(empty when this server has no value for one), as PS3.4 C.4.1 requires.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag

from sonobridge.dicomweb import qido
from sonobridge.dicomweb.errors import DicomwebError

LEVELS = {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
PATIENT_KEYS = {"00100010", "00100020", "00100030", "00100040", "00101000", "00100021"}
SKIP = {"00080005", "00080052", "00080054", "00080056", "00081190"}


class FindError(ValueError):
    """The identifier cannot be answered; ``status`` is the C-FIND failure status."""

    def __init__(self, message: str, status: int = 0xA900) -> None:
        super().__init__(message)
        self.status = status


def params_of(identifier: Dataset) -> tuple[list[tuple[str, str]], list[str]]:
    """(QIDO parameters, requested tags). Sequence keys are returned empty, not matched."""
    params: list[tuple[str, str]] = []
    wanted: list[str] = []
    for element in identifier:
        tag = f"{element.tag:08X}"
        if tag in SKIP or element.tag.group == 0x0000:
            continue
        wanted.append(tag)
        if element.VR == "SQ":
            continue
        raw = element.value
        if raw is None or raw == "":
            continue
        if isinstance(raw, list | tuple) or type(raw).__name__ == "MultiValue":
            text = "\\".join(str(v) for v in raw)
        else:
            text = str(raw)
        params.append((tag, text))
    return params, wanted


def find(core: Any, identifier: Dataset, aet: str, limit: int = qido.MAX_LIMIT,
         implicit_vr: bool = False) -> Iterator[Dataset]:
    """The responses' identifiers, ready to be written in the association's transfer syntax
    (``implicit_vr``: Implicit VR Little Endian, else Explicit VR Little Endian)."""
    level = str(identifier.get("QueryRetrieveLevel", "")).upper()
    if level not in ("PATIENT", *LEVELS):
        raise FindError(f"QueryRetrieveLevel {level!r} is not PATIENT, STUDY, SERIES or IMAGE")
    params, wanted = params_of(identifier)
    qido_level = LEVELS.get(level, "study")
    try:
        query = qido.parse_query(qido_level, [*params, ("limit", str(limit))])
    except DicomwebError as exc:
        raise FindError(exc.message) from None
    query.include |= set(wanted)
    with core.store.reader.connect() as conn:
        rows = qido.run(conn, query)
    build = {"study": qido.study_result, "series": qido.series_result,
             "instance": qido.instance_result}[qido_level]
    seen_patients: set[str] = set()
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
        if isinstance(value, dict):  # PN: Alphabetic=Ideographic=Phonetic
            groups = [value.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
            while groups and not groups[-1]:
                groups.pop()
            value = "=".join(groups)
        elif value is None:
            value = ""
        elif not isinstance(value, str | int):
            return None
        texts.append(str(value))
    encoded = "\\".join(texts).encode("utf-8")
    if len(encoded) % 2:
        encoded += b"\0" if vr == "UI" else b" "
    return RawDataElement(BaseTag(number), vr, len(encoded), encoded, 0, implicit_vr, True)
