"""The pure HL7 v2 mappings: fields in, FHIR out, ACKs built from the raw header."""

from __future__ import annotations

import pytest

from sonobridge.mappings import hl7v2
from sonobridge.mappings.hl7v2 import HL7Error


def parsed(*segments: str, charset: str = "") -> object:
    msh = "MSH|^~\\&|HIS|H|US|T|20261127||ADT^A04|1|P|2.5.1" + (
        f"||||||{charset}" if charset else "")
    return hl7v2.parse("\r".join([msh, *segments]))


def test_patient_fields():
    m = parsed("PID|1||123^^^&1.2.156.1&ISO^MR~A99^^^CITY^NI||王^小明^^^Dr||20010203|F|||"
               "1 Road^Apt 2^Qingshui^Gansu^741000^CN||^PRN^PH^^^^13912345678")
    p = hl7v2.patient(m)
    assert p["identifier"][0] == {"system": "urn:oid:1.2.156.1", "value": "123", "type": {
        "coding": [{"system": hl7v2.V2_0203, "code": "MR"}]}}
    assert p["identifier"][1]["system"] == "urn:sonobridge:hl7:id:CITY"
    assert p["name"][0] == {"family": "王", "given": ["小明"], "prefix": ["Dr"], "text": "王小明"}
    assert p["birthDate"] == "2001-02-03" and p["gender"] == "female"
    assert p["address"][0] == {"city": "Qingshui", "state": "Gansu", "postalCode": "741000",
                               "country": "CN", "line": ["1 Road", "Apt 2"]}
    assert p["telecom"] == [{"system": "phone", "value": "13912345678", "use": "home"}]


def test_patient_needs_an_identifier():
    with pytest.raises(HL7Error) as err:
        hl7v2.patient(parsed("PID|1||||Nobody"))
    assert err.value.code == "101" and err.value.location == ("PID", 1, 3)


@pytest.mark.parametrize("text,expected", [
    ("20250101120000", "2025-01-01T12:00:00+08:00"),
    ("202501011200+0100", "2025-01-01T12:00:00+01:00"),
    ("20250101", "2025-01-01"), ("2025", "2025")])
def test_datetimes(text, expected):
    assert hl7v2.hl7_datetime(text) == expected


def test_charsets():
    raw = "MSH|^~\\&|A|B|C|D|20261127||ADT^A04|1|P|2.5||||||GB 18030\rPID|1||1^^^A^MR||张".encode(
        "gb18030")
    assert hl7v2.decode(raw) == (raw.decode("gb18030"), "gb18030")
    undeclared = "MSH|^~\\&|A|B|C|D|1||ADT^A04|1|P|2.5\rPID|1||1||李".encode("gb18030")
    assert hl7v2.decode(undeclared)[1] == "gb18030"  # not UTF-8: tried as GB 18030
    with pytest.raises(HL7Error):
        hl7v2.decode(b"PID|1||x")


def test_ack_with_error_escapes_delimiters():
    header = hl7v2.header_fields(b"MSH|^~\\&|HIS|H|US|T|1||ORM^O01|C9|P|2.5.1")
    error = HL7Error("bad | value ^ here", "102", ("OBR", 1, 4))
    ack = hl7v2.ack(header, "AE", str(error), error, "A1", "20261127").split("\r")
    assert ack[0] == "MSH|^~\\&|US|T|HIS|H|20261127||ACK^O01^ACK|A1|P|2.5.1"
    assert ack[1] == "MSA|AE|C9|bad \\F\\ value \\S\\ here"
    assert ack[2] == ("ERR||OBR^1^4|102^Data type error^HL70357|E||||"
                      "bad \\F\\ value \\S\\ here")


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4"])
def test_ack_error_before_2_5_is_err_1(version):
    """v2.3/2.4 have no ERR-2..8: the location and code go in ERR-1 (CM)."""
    header = hl7v2.header_fields(f"MSH|^~\\&|HIS|H|US|T|1||ORM^O01|C9|P|{version}".encode())
    error = HL7Error("OBR-4 is required", "101", ("OBR", 1, 4))
    ack = hl7v2.ack(header, "AE", str(error), error, "A1", "1").split("\r")
    assert ack[2] == "ERR|OBR^1^4^101&Required field missing&HL70357"


@pytest.mark.parametrize("msh,code,location", [
    ("MSH|^~\\&|A|B|C|D|1||ADT^A04||P|2.5", "101", ("MSH", 1, 10)),
    ("MSH|^~\\&|A|B|C|D|1||ADT^A04|C1|Z|2.5", "202", ("MSH", 1, 11)),
    ("MSH|^~\\&|A|B|C|D|1||ADT^A04|C1|P|3.0", "203", ("MSH", 1, 12)),
    ("MSH|^~\\&|A|B|C|D|1||ADT^A04|C1|P", "203", ("MSH", 1, 12))])
def test_header_checks_reject(msh, code, location):
    with pytest.raises(HL7Error) as err:
        hl7v2.check_header(hl7v2.header_fields(msh.encode()))
    assert (err.value.code, err.value.location, err.value.reject) == (code, location, True)


def test_header_checks_accept_what_is_valid():
    for msh in ("MSH|^~\\&|A|B|C|D|1||ADT^A04|C1|P|2.3", "MSH|^~\\&|A|B|C|D|1||ADT^A04|C1|T|2.5.1",
                "MSH|^~\\&|A|B|C|D|1||ADT^A04|C1|D^T|2.8^CHN"):
        hl7v2.check_header(hl7v2.header_fields(msh.encode()))


def test_escape_sequences_are_decoded_after_splitting():
    m = parsed("PID|1||A\\T\\1^^^COUNTY\\F\\X&1.2.3&ISO^MR||O\\T\\Brien\\S\\Jr^Ann"
               "||19800101|F|||Line\\.br\\Two^^Town",
               "NTE|1||50\\E\\ \\X41\\")
    p = hl7v2.patient(m)
    assert p["identifier"][0]["value"] == "A&1"
    assert p["identifier"][0]["system"] == "urn:oid:1.2.3"
    assert p["name"][0]["family"] == "O&Brien^Jr" and p["name"][0]["given"] == ["Ann"]
    assert p["address"][0]["line"] == ["Line\nTwo"]
    assert hl7v2.value(m, "NTE", 3) == "50\\ A"


def test_ack_echoes_the_character_set_in_msh_18():
    raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A04|C1|P|2.5||||||UNICODE UTF-8"
    ack = hl7v2.ack(hl7v2.header_fields(raw), "AA", control_id="X", now="1")
    assert ack.split("\r")[0].split("|")[17] == "UNICODE UTF-8"


def test_order_fields():
    m = hl7v2.parse("\r".join([
        "MSH|^~\\&|RIS|CITYHOSP|USSRV|TELEUS|20261127||ORM^O01|C1|P|2.3.1",
        "PID|1||MR-7^^^CITYHOSP^MR||Li^Na||19900101|F",
        "ORC|NW|PL-7^RIS|FL-7^US||SC||^^^20261203093000^^S||||||D123^Wang^Fang",
        "OBR|1|PL-7^RIS|FL-7^US|US-ABD^US ABDOMEN^L|||20261203093000|||||||||D123^Wang^Fang|"
        "|ACC-7||||||US|||^^^^^S||||^Right upper quadrant pain"]))
    order = hl7v2.order(m, "+08:00")
    r = order.resource
    assert order.control == "NW" and r["status"] == "active"
    ids = {i["type"]["coding"][0]["code"]: (i["system"], i["value"]) for i in r["identifier"]}
    assert ids["PLAC"] == ("urn:sonobridge:hl7:placer:RIS", "PL-7")
    assert ids["FILL"] == ("urn:sonobridge:hl7:filler:US", "FL-7")
    assert ids["ACSN"] == ("urn:sonobridge:accession", "ACC-7")
    assert r["code"]["coding"][0] == {"system": hl7v2.PROCEDURE_SYSTEM, "code": "US-ABD",
                                      "display": "US ABDOMEN"}
    assert r["priority"] == "stat"
    assert r["occurrenceDateTime"] == "2026-12-03T09:30:00+08:00"
    assert r["requester"] == {"display": "Wang Fang", "identifier": {
        "system": "urn:sonobridge:hl7:id:practitioner", "value": "D123"}}
    assert r["reasonCode"] == [{"text": "Right upper quadrant pain"}]
    assert r["performer"] == [{"display": "TELEUS"}]  # the filler's facility, not the placer's
    assert r["category"][0]["coding"][0]["code"] == "US"
    assert order.patient["identifier"][0]["value"] == "MR-7"


@pytest.mark.parametrize("control,order_status,expected", [
    ("CA", "", "revoked"), ("DC", "", "revoked"), ("XO", "", "active"),
    ("SC", "CM", "completed"), ("SC", "HD", "on-hold"), ("SC", "IP", "active")])
def test_order_control_codes(control, order_status, expected):
    m = hl7v2.parse("\r".join([
        "MSH|^~\\&|RIS|H|USSRV|T|20261127||ORM^O01|C1|P|2.3.1", "PID|1||MR-8^^^H^MR",
        f"ORC|{control}|PL-8|FL-8||{order_status}", "OBR|1|PL-8|FL-8|US-TH^US THYROID"]))
    assert hl7v2.order(m).status == expected


def test_unknown_order_control_is_an_error():
    m = hl7v2.parse("\r".join([
        "MSH|^~\\&|RIS|H|USSRV|T|20261127||ORM^O01|C1|P|2.3.1", "PID|1||MR-9^^^H^MR",
        "ORC|ZZ|PL-9|FL-9", "OBR|1|PL-9|FL-9|US-TH"]))
    with pytest.raises(HL7Error) as err:
        hl7v2.order(m)
    assert err.value.code == "103" and err.value.location == ("ORC", 1, 1)
