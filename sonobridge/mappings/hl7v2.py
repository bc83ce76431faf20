"""HL7 v2 <-> FHIR, as pure functions: message text in, FHIR JSON (dicts) or HL7 text out.

Parsing and field access use the ``hl7`` package; what each field means is written here after
HL7 v2.3.1/v2.5.1 chapters 2-4 and IHE Scheduled Workflow (ORM^O01, OMI^O23, ADT^A01…A40).
No database, no clock: callers pass ``now`` where a timestamp is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hl7

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ID_SYSTEM = "urn:sonobridge:hl7:id:"  # + assigning authority, when it has no OID
PROCEDURE_SYSTEM = "urn:sonobridge:hl7:procedure"
PLACER_SYSTEM = "urn:sonobridge:hl7:placer:"  # + placer application
FILLER_SYSTEM = "urn:sonobridge:hl7:filler:"
ACCESSION_SYSTEM = "urn:sonobridge:accession"
AE_TITLE_SYSTEM = "urn:sonobridge:dicom:ae-title"
AE_TITLE_TYPE = "application-entity"
REQUESTED_PROCEDURE_SYSTEM = "urn:sonobridge:requested-procedure"  # IPC-2
SCHEDULED_STEP_SYSTEM = "urn:sonobridge:scheduled-procedure-step"  # IPC-4
DICOM_IDENTIFIER_TYPE = "http://hl7.org/fhir/uv/radiation-dose-summary/CodeSystem/" \
    "dicom-identifier-type"
# HL7 table 0396 coding systems (CE/CWE component 3) -> FHIR code systems; anything else
# ("L", "99…", a local name) stays in the local procedure system.
CODING_SYSTEMS = {"LN": "http://loinc.org", "SCT": "http://snomed.info/sct",
                  "SNM": "http://snomed.info/sct", "C4": "http://www.ama-assn.org/go/cpt",
                  "CPT4": "http://www.ama-assn.org/go/cpt", "RADLEX": "http://www.radlex.org",
                  "DCM": "http://dicom.nema.org/resources/ontology/DCM"}

# MSH-18 values (HL7 table 0211) -> Python codecs; empty means ASCII, but Chinese systems often
# send GBK/GB 18030 without saying so, so undeclared bytes are tried as UTF-8 then GB 18030.
CHARSETS = {"ASCII": "ascii", "UNICODE UTF-8": "utf-8", "UNICODE": "utf-8", "UTF-8": "utf-8",
            "GB 18030-2000": "gb18030", "GB 18030": "gb18030", "GB18030": "gb18030",
            "8859/1": "latin-1", "8859/2": "iso8859-2", "8859/5": "iso8859-5",
            "8859/15": "iso8859-15"}
# What this gateway writes in MSH-18 for each codec (the table 0211 spelling).
MSH18 = {"ascii": "ASCII", "utf-8": "UNICODE UTF-8", "gb18030": "GB 18030-2000",
         "latin-1": "8859/1", "iso8859-2": "8859/2", "iso8859-5": "8859/5",
         "iso8859-15": "8859/15"}
SEX = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other", "N": "unknown"}
PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "P": "routine", "T": "urgent"}


class HL7Error(ValueError):
    """A message that cannot be applied. ``code`` is HL7 table 0357; ``location`` is
    (segment, sequence, field); ``reject`` asks for AR instead of AE."""

    def __init__(self, message: str, code: str = "207", location: tuple[str, int, int] |
                 None = None, reject: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.location = location
        self.reject = reject


# ---------------------------------------------------------------------------------- decoding

def header_fields(raw: bytes) -> list[bytes]:
    """MSH fields from the raw bytes (MSH is ASCII whatever the character set):
    ``fields[n]`` is MSH-n (``fields[1]`` is the field separator)."""
    first = raw.replace(b"\n", b"\r").split(b"\r", 1)[0].lstrip()
    if not first.startswith(b"MSH") or len(first) < 8:
        raise HL7Error("the message does not start with an MSH segment", "100",
                       ("MSH", 1, 0), reject=True)
    separator = first[3:4]
    parts = first.split(separator)
    return [b"MSH", separator, *parts[1:]]


PROCESSING_IDS = {"P", "D", "T"}  # HL7 table 0103: production, debugging, training


def check_header(fields: list[bytes]) -> None:
    """What every message must carry before it can be applied (HL7 v2.5 2.9.2): a message
    control ID to answer and deduplicate on, a known processing ID and a 2.x version."""
    def text(n: int) -> str:
        return fields[n].decode("ascii", "replace").strip() if len(fields) > n else ""

    comp = text(2)[:1] or "^"
    if not text(10):
        raise HL7Error("MSH-10 (message control ID) is required", "101", ("MSH", 1, 10),
                       reject=True)
    processing = text(11).split(comp)[0]
    if processing not in PROCESSING_IDS:
        raise HL7Error(f"processing ID {processing!r} (MSH-11) is not P, D or T", "202",
                       ("MSH", 1, 11), reject=True)
    version = text(12).split(comp)[0]
    if not version.startswith("2."):
        raise HL7Error(f"version {version!r} (MSH-12) is not an HL7 v2 version", "203",
                       ("MSH", 1, 12), reject=True)


def charset(raw: bytes) -> str:
    """The codec for the message, from MSH-18."""
    fields = header_fields(raw)
    declared = fields[18].decode("ascii", "replace").split("~")[0].strip() \
        if len(fields) > 18 else ""
    if not declared:
        return ""
    codec = CHARSETS.get(declared.upper())
    if codec is None:
        raise HL7Error(f"character set {declared!r} (MSH-18) is not supported", "103",
                       ("MSH", 1, 18), reject=True)
    return codec


def decode(raw: bytes) -> tuple[str, str]:
    """(text, codec used). Undeclared: UTF-8, else GB 18030 (its superset of GBK)."""
    codec = charset(raw)
    candidates = [codec] if codec else ["utf-8", "gb18030"]
    for name in candidates:
        try:
            return raw.decode(name), name
        except UnicodeDecodeError:
            continue
    raise HL7Error(f"the message is not valid {candidates[0]} text (MSH-18 says "
                   f"{codec or 'nothing'})", "102", ("MSH", 1, 18))


def parse(text: str) -> hl7.Message:
    """The message as an ``hl7.Message`` of its MSH alone: its separators and escape rules
    (what the mapping takes from the ``hl7`` package); the segments are split from the text
    by ``_table``. Building the whole tree, never read, was a tenth of each message."""
    lines = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    try:
        message = hl7.parse(lines.partition("\r")[0])
    except Exception as exc:  # the hl7 package raises several kinds for a broken header
        raise HL7Error(f"the message cannot be parsed: {exc}", "102", reject=True) from None
    message._sonobridge_text = lines  # what ``_table`` splits
    return message


def _table(message: hl7.Message) -> dict[str, list[list[str]]]:
    """Segment name -> each occurrence's fields (``fields[n]`` is field n; for MSH, field 1 is
    the field separator). Built once per message from its text: the ``hl7`` package's generic
    ``extract_field`` walk cost more than the rest of the mapping."""
    cached: dict[str, list[list[str]]] | None = getattr(message, "_sonobridge_table", None)
    if cached is not None:
        return cached
    sep = message.separators[1] if len(message.separators) > 1 else "|"
    table: dict[str, list[list[str]]] = {}
    text = getattr(message, "_sonobridge_text", None)
    for line in (text if text is not None else str(message)).split("\r"):
        if len(line) < 3:
            continue
        parts = line.split(sep)
        fields = [parts[0], sep, *parts[1:]] if parts[0] == "MSH" else parts
        table.setdefault(parts[0], []).append(fields)
    message._sonobridge_table = table
    return table


def repetitions(message: hl7.Message, segment: str, fld: int, occurrence: int = 0,
                unescaped: bool = True) -> list[list[str]]:
    """Each repetition of a field as its list of component texts, escape sequences decoded
    (``unescaped=False`` keeps them, for a caller that still splits subcomponents)."""
    occurrences = _table(message).get(segment, [])
    if occurrence >= len(occurrences) or fld >= len(occurrences[occurrence]):
        return []
    raw = occurrences[occurrence][fld]
    seps = message.separators  # e.g. "\r|~^&"
    rep_sep, comp_sep = seps[2], seps[3]
    reps = [r.split(comp_sep) for r in raw.split(rep_sep) if r]
    if not unescaped:
        return reps
    return [[unescape(message, comp) for comp in comps] for comps in reps]


def value(message: hl7.Message, segment: str, fld: int, component: int = 1,
          repetition: int = 1, occurrence: int = 1) -> str:
    """A component's text (its first subcomponent), escape sequences decoded; '' when the
    segment or field is absent (1-based numbers, as the standard writes them:
    ``value(m, "PID", 5, 2)`` is PID-5.2)."""
    occurrences = _table(message).get(segment, [])
    if occurrence > len(occurrences) or fld >= len(occurrences[occurrence - 1]):
        return ""
    raw = occurrences[occurrence - 1][fld]
    if segment == "MSH" and fld in (1, 2):
        return raw
    seps = message.separators
    reps = raw.split(seps[2])
    if repetition > len(reps):
        return ""
    comps = reps[repetition - 1].split(seps[3])
    if component > len(comps):
        return ""
    text = comps[component - 1].split(seps[4])[0] if len(seps) > 4 else comps[component - 1]
    return unescape(message, text)


# Formatting escapes (2.10.6) as plain text; highlighting (2.10.3) dropped.
_TEXT_ESCAPES = {".br": "\n", ".sp": "\n", ".ce": "\n", "H": "", "N": ""}


def unescape(message: hl7.Message, text: str) -> str:
    """HL7 escape sequences (``\\F\\``, ``\\S\\``, ``\\T\\``, ``\\R\\``, ``\\E\\``,
    ``\\Xhh\\``, ``\\.br\\``) decoded by the ``hl7`` package, after all splitting."""
    return message.unescape(text, _TEXT_ESCAPES) if message.esc in text else text


def message_type(message: hl7.Message) -> tuple[str, str]:
    code = value(message, "MSH", 9, 1)
    event = value(message, "MSH", 9, 2)
    return code, event


# ---------------------------------------------------------------------------------- patients

def hl7_date(text: str) -> str | None:
    digits = "".join(c for c in text if c.isdecimal())
    if len(digits) >= 8:
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"
    if len(digits) == 6:
        return f"{digits[:4]}-{digits[4:6]}"
    if len(digits) == 4:
        return digits
    return None


def hl7_datetime(text: str, offset: str = "+08:00") -> str | None:
    """TS/DTM ``YYYYMMDDHHMM[SS][+ZZZZ]`` to a FHIR dateTime. FHIR needs a zone on any time of
    day; a value without one is taken in ``offset`` (the sender's zone, a setting)."""
    main, plus, zone = text.partition("+")
    if not plus:
        main, minus, zone = text.partition("-")
        plus = minus
    digits = "".join(c for c in main.split(".")[0] if c.isdecimal())
    if len(digits) < 12:
        return hl7_date(digits)
    out = f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}T{digits[8:10]}:{digits[10:12]}:" \
          f"{digits[12:14] or '00'}"
    if plus and len(zone) >= 4:
        return f"{out}{plus}{zone[:2]}:{zone[2:4]}"
    return out + offset


def identifier_system(authority: list[str] | str) -> str:
    """HD assigning authority -> a system URI: its OID (``urn:oid:``) when given, else ours."""
    parts = authority if isinstance(authority, list) else authority.split("&")
    namespace = parts[0] if parts else ""
    universal = parts[1] if len(parts) > 1 else ""
    kind = parts[2].upper() if len(parts) > 2 else ""
    if universal and kind in ("ISO", ""):
        return f"urn:oid:{universal}"
    return f"{ID_SYSTEM}{namespace or 'local'}"


def patient_identifiers(message: hl7.Message, segment: str = "PID", fld: int = 3,
                        occurrence: int = 0) -> list[dict[str, Any]]:
    out = []
    sub = message.separators[4] if len(message.separators) > 4 else "&"
    for comps in repetitions(message, segment, fld, occurrence, unescaped=False):
        if not comps or not comps[0]:
            continue
        authority = [unescape(message, part) for part in comps[3].split(sub)] \
            if len(comps) > 3 else []
        ident: dict[str, Any] = {"system": identifier_system(authority),
                                 "value": unescape(message, comps[0])}
        type_code = unescape(message, comps[4]) if len(comps) > 4 else ""
        if type_code:
            ident["type"] = {"coding": [{"system": V2_0203, "code": type_code}]}
        out.append(ident)
    return out


def human_names(message: hl7.Message, segment: str = "PID", fld: int = 5
                ) -> list[dict[str, Any]]:
    names = []
    for comps in repetitions(message, segment, fld):
        family = comps[0] if comps else ""
        given = [g for g in comps[1:3] if g] if len(comps) > 1 else []
        if not family and not given:
            continue
        name: dict[str, Any] = {}
        if family:
            name["family"] = family
        if given:
            name["given"] = given
        if len(comps) > 3 and comps[3]:
            name["suffix"] = [comps[3]]
        if len(comps) > 4 and comps[4]:
            name["prefix"] = [comps[4]]
        if len(comps) > 6 and comps[6]:
            name["use"] = {"L": "official", "D": "usual", "A": "nickname", "M": "maiden",
                           "C": "anonymous"}.get(comps[6], "official")
        # Chinese names: family and given joined without a space in the text.
        if any("\u4e00" <= c <= "\u9fff" for c in family + "".join(given)):
            name["text"] = family + "".join(given)
        names.append(name)
    return names


def patient(message: hl7.Message) -> dict[str, Any]:
    """The PID segment as a FHIR Patient (no id: the caller matches on identifiers)."""
    identifiers = patient_identifiers(message)
    if not identifiers:
        raise HL7Error("PID-3 (patient identifier list) is required", "101", ("PID", 1, 3))
    resource: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers,
                                "active": True}
    names = human_names(message)
    if names:
        resource["name"] = names
    birth = hl7_date(value(message, "PID", 7))
    if birth:
        resource["birthDate"] = birth
    sex = SEX.get(value(message, "PID", 8).upper()[:1])
    if sex:
        resource["gender"] = sex
    addresses = []
    for comps in repetitions(message, "PID", 11):
        comps = comps + [""] * (6 - len(comps))
        address: dict[str, str | list[str]] = {
            k: v for k, v in (("city", comps[2]), ("state", comps[3]), ("postalCode", comps[4]),
                              ("country", comps[5])) if v}
        lines = [c for c in comps[:2] if c]
        if lines:
            address["line"] = lines
        if address:
            addresses.append(address)
    if addresses:
        resource["address"] = addresses
    telecom = []
    for fld, use in ((13, "home"), (14, "work")):
        for comps in repetitions(message, "PID", fld):
            number = comps[0] or (comps[11] if len(comps) > 11 else "") or \
                (comps[6] if len(comps) > 6 else "")
            if number:
                system = "email" if "@" in number else "phone"
                telecom.append({"system": system, "value": number, "use": use})
    if telecom:
        resource["telecom"] = telecom
    return resource


# ---------------------------------------------------------------------------------- orders

@dataclass
class Order:
    """What an ORM^O01 or OMI^O23 says about one order."""

    control: str  # ORC-1: NW, CA, XO, SC, DC…
    status: str  # the FHIR ServiceRequest status
    identifiers: list[dict[str, Any]]
    resource: dict[str, Any]
    patient: dict[str, Any]
    study_uid: str | None = None
    modality: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _status(control: str, order_status: str) -> str:
    if control in ("CA", "OC", "CR", "DC", "OD"):
        return "revoked"
    if control == "SC":
        return {"CM": "completed", "CA": "revoked", "DC": "revoked", "HD": "on-hold",
                "IP": "active", "SC": "active"}.get(order_status, "active")
    if control in ("NW", "XO", "SN", "OK", "XX"):
        return "active"
    raise HL7Error(f"order control {control!r} (ORC-1) is not supported", "103", ("ORC", 1, 1))


def order(message: hl7.Message, offset: str = "+08:00") -> Order:
    code, _ = message_type(message)
    control = value(message, "ORC", 1).upper()
    if not control:
        raise HL7Error("ORC-1 (order control) is required", "101", ("ORC", 1, 1))
    placer = value(message, "ORC", 2) or value(message, "OBR", 2)
    placer_app = value(message, "ORC", 2, 2) or value(message, "MSH", 3)
    filler = value(message, "ORC", 3) or value(message, "OBR", 3)
    filler_app = value(message, "ORC", 3, 2) or value(message, "MSH", 5)
    if not placer and not filler:
        raise HL7Error("ORC-2 or ORC-3 (placer or filler order number) is required", "101",
                       ("ORC", 1, 2))
    accession = value(message, "IPC", 1) if code == "OMI" else ""
    accession = accession or value(message, "OBR", 18) or filler
    identifiers: list[dict[str, Any]] = []
    if placer:
        identifiers.append({"system": f"{PLACER_SYSTEM}{placer_app or 'local'}",
                            "value": placer, "type": {"coding": [
                                {"system": V2_0203, "code": "PLAC"}]}})
    if filler:
        identifiers.append({"system": f"{FILLER_SYSTEM}{filler_app or 'local'}",
                            "value": filler, "type": {"coding": [
                                {"system": V2_0203, "code": "FILL"}]}})
    if accession:
        identifiers.append({"system": ACCESSION_SYSTEM, "value": accession,
                            "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}})
    procedure = value(message, "OBR", 4)
    if not procedure:
        raise HL7Error("OBR-4 (universal service identifier) is required", "101",
                       ("OBR", 1, 4))
    coding = {"system": CODING_SYSTEMS.get(value(message, "OBR", 4, 3).upper(),
                                           PROCEDURE_SYSTEM), "code": procedure}
    display = value(message, "OBR", 4, 2)
    if display:
        coding["display"] = display
    status = _status(control, value(message, "ORC", 5).upper())
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest", "identifier": identifiers, "status": status,
        "intent": "order", "code": {"coding": [coding], **({"text": display} if display else {})},
    }
    category = value(message, "OBR", 24) or value(message, "IPC", 5)
    if category:
        resource["category"] = [{"coding": [{"system": "http://dicom.nema.org/resources/"
                                                       "ontology/DCM", "code": category}]}]
    priority = PRIORITY.get((value(message, "TQ1", 9) or value(message, "ORC", 7, 6)
                             or value(message, "OBR", 27, 6))[:1].upper())
    if priority:
        resource["priority"] = priority
    when = value(message, "TQ1", 7) or value(message, "ORC", 7, 4) or \
        value(message, "OBR", 36) or value(message, "OBR", 7)
    occurrence = hl7_datetime(when, offset) if when else None
    if occurrence:
        resource["occurrenceDateTime"] = occurrence
    requester = value(message, "ORC", 12, 2) or value(message, "OBR", 16, 2)
    requester_id = value(message, "ORC", 12) or value(message, "OBR", 16)
    if requester or requester_id:
        ref: dict[str, Any] = {"display": " ".join(p for p in (
            requester, value(message, "ORC", 12, 3) or value(message, "OBR", 16, 3)) if p)
            or requester_id}
        if requester_id:
            ref["identifier"] = {"system": f"{ID_SYSTEM}practitioner", "value": requester_id}
        resource["requester"] = ref
    reason = value(message, "OBR", 31, 2) or value(message, "OBR", 31)
    if reason:
        resource["reasonCode"] = [{"text": reason}]
    # The order goes to the filler, whose facility is the message's receiving facility (MSH-6);
    # MSH-4 is the placer's, the ordering hospital.
    performer = value(message, "MSH", 6)
    if performer:
        resource["performer"] = [{"display": performer}]
    study_uid = value(message, "IPC", 3) or value(message, "ZDS", 1) or None
    modality = value(message, "IPC", 5) or value(message, "OBR", 24) or None
    extra: dict[str, Any] = {}
    if code == "OMI":
        extra = {"requested_procedure_id": value(message, "IPC", 2),
                 "scheduled_step_id": value(message, "IPC", 4)}
        station = value(message, "IPC", 9)
        if station:
            extra["station"] = station_device(station, value(message, "IPC", 7))
    return Order(control, status, identifiers, resource, patient(message), study_uid,
                 modality, extra)


def station_device(ae_title: str, name: str = "") -> dict[str, Any]:
    """The scheduled station (IPC-9 AE title, IPC-7 name) as the Device that performs the order:
    its AE title typed as the HL7 Radiation Dose Summary IG types DICOM identifiers, which is
    what the worklist reads a Scheduled Station AE Title from."""
    device: dict[str, Any] = {
        "resourceType": "Device", "status": "active",
        "identifier": [{"type": {"coding": [{"system": DICOM_IDENTIFIER_TYPE,
                                             "code": AE_TITLE_TYPE}]},
                        "system": AE_TITLE_SYSTEM, "value": ae_title[:16]}]}
    if name:
        device["deviceName"] = [{"name": name, "type": "user-friendly-name"}]
    return device


# ---------------------------------------------------------------------------------- ACKs

def ack(raw_header: list[bytes], code: str, text: str = "", error: HL7Error | None = None,
        control_id: str = "", now: str = "") -> str:
    """An ACK (MSA, and ERR when there is an error) for a message whose MSH fields are
    ``raw_header``, built from the raw header so that even an unparsable message gets one."""
    def field_of(n: int) -> str:
        return raw_header[n].decode("ascii", "replace") if len(raw_header) > n else ""

    sep = field_of(1) or "|"
    enc = field_of(2) or "^~\\&"
    comp = enc[0]
    trigger = field_of(9).split(comp)[1] if comp in field_of(9) else ""
    version = field_of(12) or "2.5.1"
    msh = sep.join(["MSH", enc, field_of(5) or "SONOBRIDGE", field_of(6), field_of(3),
                    field_of(4), now, "", f"ACK{comp}{trigger}{comp}ACK" if trigger else "ACK",
                    control_id, field_of(11) or "P", version, "", "", "", "", "",
                    field_of(18)])  # MSH-13 to MSH-17 empty, MSH-18 echoes the character set
    msa = sep.join(["MSA", code, field_of(10), _escape(text, sep, enc)[:80]])
    segments = [msh.rstrip(sep), msa.rstrip(sep)]
    if error is not None:
        seg, seq, fld = error.location or ("", "", "")
        where = comp.join([seg, str(seq), str(fld)]) if seg else ""
        if _before_2_5(version.split(comp)[0]):
            # v2.3/2.4: ERR-1 error code and location, <segment>^<seq>^<field>^<code (CE)>
            sub = enc[3] if len(enc) > 3 else "&"
            code = sub.join([error.code, _error_text(error.code), "HL70357"])
            err = sep.join(["ERR", comp.join([seg, str(seq), str(fld), code])])
        else:
            # v2.5+: ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 user message
            err = sep.join(["ERR", "", where,
                            comp.join([error.code, _error_text(error.code), "HL70357"]),
                            "E", "", "", "", _escape(str(error), sep, enc)[:250]])
        segments.append(err)
    return "\r".join(segments) + "\r"


def _before_2_5(version: str) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) < (2, 5)
    except ValueError:
        return False


_ERRORS = {"0": "Message accepted", "100": "Segment sequence error",
           "101": "Required field missing", "102": "Data type error",
           "103": "Table value not found", "200": "Unsupported message type",
           "201": "Unsupported event code", "202": "Unsupported processing id",
           "203": "Unsupported version id", "204": "Unknown key identifier",
           "205": "Duplicate key identifier", "206": "Application record locked",
           "207": "Application internal error"}


def _error_text(code: str) -> str:
    return _ERRORS.get(code, "Application error")


def _escape(text: str, sep: str, enc: str) -> str:
    """HL7 escape sequences for delimiters inside a text value."""
    escape = enc[2] if len(enc) > 2 else "\\"
    out = text.replace(escape, f"{escape}E{escape}")
    for char, code in ((sep, "F"), (enc[0], "S"), (enc[1], "R"),
                       (enc[3] if len(enc) > 3 else "&", "T")):
        out = out.replace(char, f"{escape}{code}{escape}")
    return out.replace("\r", " ").replace("\n", " ")
