"""C-FIND (Patient Root and Study Root) answered from the QIDO-RS index: the same matching
rules (wildcards, ranges, lists, person names incl. Chinese) whichever protocol asks.

The identifier's keys become QIDO parameters; each result carries exactly the keys asked for
(empty when this server has no value for one), as PS3.4 C.4.1 requires.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

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


def find(core: Any, identifier: Dataset, aet: str, limit: int = qido.MAX_LIMIT
         ) -> Iterator[Dataset]:
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
        yield to_dataset(data, wanted, level, aet)


def _first(item: dict[str, Any] | None) -> str:
    values = (item or {}).get("Value") or [""]
    return str(values[0])


def to_dataset(data: dict[str, Any], wanted: list[str], level: str, aet: str) -> Dataset:
    """A C-FIND response identifier with the requested keys, UTF-8 encoded."""
    kept = {tag: data[tag] for tag in wanted if tag in data}
    for tag, item in list(kept.items()):
        if item.get("vr") == "SQ":
            kept[tag] = {"vr": "SQ"}  # sequence keys: not matched, returned empty
    ds = Dataset.from_json(kept)
    for tag in wanted:
        if int(tag, 16) not in ds:
            from pydicom.datadict import dictionary_VR

            try:
                vr = dictionary_VR(int(tag, 16))
            except KeyError:
                vr = "UN"
            ds.add_new(int(tag, 16), vr, DicomSequence([]) if vr == "SQ" else None)
    ds.QueryRetrieveLevel = level
    ds.RetrieveAETitle = aet
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds
