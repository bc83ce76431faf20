"""A bounded fuzz pass (security hardening): mutated FHIR JSON and XML, random search
parameters, DICOM objects with damaged headers, HL7 messages with mangled segments and MLLP
framing gone wrong. Whatever comes in, the answer is the protocol's own error (a 4xx with an
OperationOutcome, a DICOM failure status, an HL7 ``AE``/``AR``), never a 500 or a traceback, and
the process's peak memory grows by less than a bound.

Every case comes from a fixed seed, so a failure names a case that can be run again; the
counts keep the pass to seconds. The Starlette test client re-raises any exception the app
does not turn into a response, so an unhandled error fails the test with its traceback.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from sonobridge.core.search.registry import Registry
from sonobridge.fhir.xml import resource_to_xml
from sonobridge.hie.mllp.inbound import Inbound
from tests.dicom_data import cine, to_bytes
from tests.dicomweb.helpers import BOUNDARY, multipart
from tests.live import free_port, serve

EXAMPLES = Path(__file__).parents[1] / "fixtures" / "examples"
HL7 = Path(__file__).parents[1] / "fixtures" / "hl7"
MEMORY_BOUND_MB = 300
INTERESTING = [b'"', b"{", b"}", b"[", b"]", b",", b":", b"\x00", b"\xff\xfe", b"\\u0000",
               b"\\ud800", b"1e999999", b"-0", b"9" * 400, b"null", b"true", b"<", b"&amp;",
               b"]]>", b"<!DOCTYPE x [<!ENTITY a 'a'>]>", "张".encode(), b"\r\n", b"%00"]
WEIRD = [None, True, False, 0, -1, 2**63, 1e308, -1e-308, "", " ", "\x00", "\ud7ff" * 3,
         "张伟" * 50, "x" * 5000, "2026-13-45", "9999-12-31T23:59:59Z", "Patient/../x",
         "urn:uuid:not-a-uuid", "javascript:alert(1)", [], {}, [None], [[[]]], {"": ""},
         {"reference": "Patient/p1"}, {"extension": [{"url": 7}]}]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def bounded_memory() -> Iterator[None]:
    before = peak_mb()
    yield
    grown = peak_mb() - before
    assert grown < MEMORY_BOUND_MB, f"peak memory grew by {grown:.0f} MB"


def no_server_error(response: Any, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:400]}"
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
            "application/fhir+json"):
        assert response.json()["resourceType"] == "OperationOutcome", what


# ---------------------------------------------------------------- mutations

def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        at = rng.randrange(len(out))
        choice = rng.randrange(5)
        if choice == 0:
            out[at] = rng.randrange(256)
        elif choice == 1:
            del out[at:at + rng.randint(1, 40)]
        elif choice == 2:
            out[at:at] = rng.choice(INTERESTING)
        elif choice == 3:
            span = out[at:at + rng.randint(1, 60)]
            out[at:at] = span * rng.randint(2, 20)
        else:
            del out[at:]
    return bytes(out)


def nodes(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from nodes(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from nodes(child, (*path, index))


def mutate_tree(resource_: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out = copy.deepcopy(resource_)
    for _ in range(rng.randint(1, 3)):
        path, _ = rng.choice([n for n in nodes(out) if n[0]])
        parent: Any = out
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        choice = rng.randrange(4)
        if choice == 0:
            parent[key] = copy.deepcopy(rng.choice(WEIRD))
        elif choice == 1 and isinstance(parent, dict):
            del parent[key]
        elif choice == 2:
            deep: Any = "x"
            for _ in range(rng.choice([10, 80, 500])):
                deep = {"extension": [{"url": "urn:x", "valueString": "y"}], "id": deep} \
                    if rng.random() < 0.5 else [deep]
            parent[key] = deep
        elif isinstance(parent, dict):
            parent[rng.choice(["_" + str(key), "unknownElement", "resourceType",
                               "contained", "meta"])] = copy.deepcopy(rng.choice(WEIRD))
    return out


def examples(count: int) -> list[dict[str, Any]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.json")):
        resource_ = json.loads(path.read_text())
        if resource_.get("resourceType") not in ("Bundle", "Binary", "Parameters"):
            found.append(resource_)
    return found[:count]


# ---------------------------------------------------------------- FHIR

def test_mutated_fhir_json_gets_an_operation_outcome(client, bounded_memory):
    rng = random.Random(20261203)
    for index, base in enumerate(examples(40)):
        for case in range(6):
            what = f"json {base['resourceType']}/{base.get('id')} case {index}.{case}"
            res_type = base["resourceType"]
            if case % 2:
                body = mutate_bytes(json.dumps(base).encode(), rng)
            else:
                body = json.dumps(mutate_tree(base, rng)).encode()
            headers = {"Content-Type": "application/fhir+json"}
            if case % 3 == 0:
                response = client.put(f"/fhir/{res_type}/{base.get('id') or 'x1'}",
                                       content=body, headers=headers)
            else:
                response = client.post(f"/fhir/{res_type}", content=body, headers=headers)
            no_server_error(response, what)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{random.Random(n).getrandbits(128):032x}"[:45],
         "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
        for n, r in enumerate(examples(8))]}
    for case in range(60):
        body = (json.dumps(mutate_tree(bundle, rng)).encode() if case % 2
                else mutate_bytes(json.dumps(bundle).encode(), rng))
        no_server_error(client.post("/fhir", content=body,
                                    headers={"Content-Type": "application/fhir+json"}),
                        f"transaction case {case}")


def test_mutated_fhir_xml_gets_an_operation_outcome(client, bounded_memory):
    rng = random.Random(1203)
    headers = {"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"}
    for index, base in enumerate(examples(25)):
        try:
            xml = resource_to_xml(base)
        except Exception:  # an example our writer cannot express is no fuzz seed
            continue
        for case in range(6):
            body = mutate_bytes(xml, rng)
            response = client.post(f"/fhir/{base['resourceType']}", content=body,
                                   headers=headers)
            assert response.status_code < 500, (index, case, response.text[:400])


SEARCH_TYPES = ["Patient", "Observation", "ImagingStudy", "DiagnosticReport", "ServiceRequest",
                "Encounter", "Task", "DocumentReference"]
MODIFIERS = ["", ":exact", ":contains", ":missing", ":not", ":text", ":above", ":below",
             ":in", ":of-type", ":identifier", ":Patient", ":iterate", ":bogus", ":"]
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "zz"]
VALUES = ["", "x", "true", "2026", "2026-02-30", "9999-12-31T23:59:59Z", "0001-01-01",
          "1e999999", "-0.0", "99999999999999999999", "١٢٣", "NaN", "urn:a|b", "|b", "a|",
          "a|b|c", "Patient/p1", "Patient/", "/..//", "%00", "\\,\\|\\$", "a,b,,", "$",
          "张", "x" * 3000, "2026-01-01T25:61:61", "5||mg", "5|http://unitsofmeasure.org|mg",
          "p1$http://x|y", "*", "'; DROP TABLE resources; --"]
CONTROL = ["_count", "_offset", "_sort", "_include", "_revinclude", "_elements", "_summary",
           "_total", "_contained", "_has:Observation:subject:code", "_lastUpdated", "_id",
           "_tag", "_profile", "_text", "_content", "_list", "_type", "_format", "_page",
           "subject:Patient.name", "subject.name", "patient:missing"]


def test_random_search_parameters_get_a_bundle_or_an_operation_outcome(client,
                                                                        bounded_memory):
    rng = random.Random(31)
    registry = Registry()
    for case in range(400):
        res_type = rng.choice(SEARCH_TYPES)
        names = list(registry.params(res_type)) + CONTROL
        params = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            name = rng.choice(names) + rng.choice(MODIFIERS)
            value = rng.choice(PREFIXES) + rng.choice(VALUES)
            params.append((name, value))
        response = client.get(f"/fhir/{res_type}", params=params)
        no_server_error(response, f"search case {case}: {res_type}?{params}")
        if case % 10 == 0:
            no_server_error(client.post(f"/fhir/{res_type}/_search", data=dict(params)),
                            f"POST search case {case}")


# ---------------------------------------------------------------- DICOM

def damaged(rng: random.Random) -> bytes:
    ds = cine(frames=2, study=generate_uid(), patient_id=f"FUZZ-{rng.randrange(10**6)}")
    for _ in range(rng.randint(1, 3)):
        # pydicom refuses some values as they are set: that damage is not done
        with contextlib.suppress(ValueError, TypeError):
            damage(ds, rng)
    try:
        data = to_bytes(ds)
    except Exception:  # pydicom refuses to write some damage: damage the bytes instead
        data = to_bytes(cine(frames=2))
    return data if rng.random() < 0.8 else mutate_bytes(data, rng)


def damage(ds: Any, rng: random.Random) -> None:
    choice = rng.randrange(12)
    if choice == 0:
        ds.Rows = rng.choice([0, 1, 47, 65535])
    elif choice == 1:
        ds.NumberOfFrames = rng.choice(["0", "-1", "abc", "99999999", "2.5", ""])
    elif choice == 2:
        ds.BitsAllocated = rng.choice([0, 1, 7, 12, 64])
    elif choice == 3:
        ds.PhotometricInterpretation = rng.choice(["", "PALETTE COLOR", "XYZ", "YBR_RCT"])
    elif choice == 4:
        ds.SamplesPerPixel = rng.choice([0, 2, 4])
    elif choice == 5:
        ds.PatientName = rng.choice(["张^伟" * 30, "\x00\x01", "^^^^^^", "a" * 70])
    elif choice == 6:
        ds.StudyDate = rng.choice(["99999999", "20261340", "abc", "2026-01-01"])
    elif choice == 7:
        ds.SpecificCharacterSet = rng.choice(["ISO_IR 999", "GB18030", "\\ISO 2022 IR 58",
                                              ""])
    elif choice == 8:
        for keyword in rng.sample(["SOPInstanceUID", "SeriesInstanceUID",
                                   "StudyInstanceUID", "SOPClassUID", "PixelData"], 1):
            if keyword in ds:
                delattr(ds, keyword)
    elif choice == 9:
        ds.SeriesInstanceUID = rng.choice(["1.2..3", "abc", "1." * 40, "0.01"])
    elif choice == 10:
        ds.file_meta.TransferSyntaxUID = rng.choice(
            ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90", "1.2.3.4", "1.2.840.10008.1.2.5"])
    else:
        ds.FrameTime = rng.choice(["0", "-5", "abc", "1e300"])


def test_damaged_dicom_gets_a_failure_status_and_renders_or_refuses(client, bounded_memory):
    rng = random.Random(7)
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    stored: list[tuple[str, str, str]] = []
    for case in range(60):
        response = client.post("/dicomweb/studies", content=multipart([damaged(rng)]),
                               headers={"Content-Type": content_type,
                                        "Accept": "application/dicom+json"})
        assert response.status_code < 500, (case, response.text[:400])
        if response.status_code == 200:
            for item in response.json().get("00081199", {}).get("Value", []):
                url = item["00081190"]["Value"][0]
                stored.append(tuple(url.split("/studies/")[1].split("/")[::2]))  # type: ignore
    for study, series, instance in stored:
        base = f"/dicomweb/studies/{study}/series/{series}/instances/{instance}"
        for path, accept in ((f"{base}/metadata", "application/dicom+json"),
                             (f"{base}/rendered", "image/jpeg"),
                             (f"{base}/thumbnail", "image/jpeg"),
                             (f"{base}/frames/1", "multipart/related; type=\"*/*\""),
                             (f"{base}/rendered", "video/mp4")):
            response = client.get(path, headers={"Accept": accept})
            assert response.status_code < 500, (path, accept, response.text[:400])


# ---------------------------------------------------------------- HL7 and MLLP

def hl7_messages() -> list[bytes]:
    return [path.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
            for path in sorted(HL7.glob("*.hl7"))] + [
        b"MSH|^~\\&|HIS|HOSP|SONOBRIDGE||20260101000000||ADT^A04^ADT_A01|A1|P|2.5.1\r"
        b"EVN|A04|20260101\rPID|1||P-1^^^HOSP^MR||Li^Na||19800203|F\rPV1|1|O"]


def mangle(message: bytes, rng: random.Random) -> bytes:
    segments = message.split(b"\r")
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(segments))
        fields = segments[at].split(b"|")
        choice = rng.randrange(8)
        if choice == 0 and len(fields) > 1:
            fields[rng.randrange(1, len(fields))] = rng.choice([
                b"", b"^^^^^^^^", b"~" * 200, b"\\X00\\", b"\\E\\\\F\\", b"\\H\\\\N\\",
                b"99991231235959", b"00000000", "张^伟".encode("gb18030"), b"\xff\xfe",
                b"&" * 100, b"x" * 70000])
        elif choice == 1:
            del fields[rng.randrange(len(fields)):]
        elif choice == 2:
            segments.insert(at, rng.choice([b"ZZZ|1", b"MSH|^~\\&", b"", b"PID", b"OBX|1|ED|"]))
        elif choice == 3:
            segments[at:at + 1] = []
        elif choice == 4:
            fields.extend([b"x"] * rng.randint(1, 300))
        elif choice == 5:
            segments = segments * rng.randint(2, 30)
        elif choice == 6:
            fields[0] = rng.choice([b"MSH", b"msh", b"MS", b"\x00SH"])
        if choice not in (2, 3, 5):
            segments[at] = b"|".join(fields)
    out = b"\r".join(segments)
    return out if rng.random() < 0.8 else mutate_bytes(out, rng)


def test_mangled_hl7_gets_an_acknowledgement(core, bounded_memory):
    rng = random.Random(2503)
    inbound = Inbound(core)
    for case in range(200):
        raw = mangle(rng.choice(hl7_messages()), rng)
        ack = inbound.handle(raw, "127.0.0.1")
        assert isinstance(ack, bytes), case
        if ack:
            assert ack.startswith(b"MSH") and b"\rMSA|A" in ack, (case, ack[:300])


@pytest.fixture(scope="module")
def mllp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    work = tmp_path_factory.mktemp("mllp-fuzz")
    port = free_port()
    with serve(f"sqlite:///{work / 'f.db'}", work, "--no-sample",
               SONOBRIDGE_MLLP_PORT=str(port), SONOBRIDGE_HL7_IDLE_TIMEOUT="1",
               SONOBRIDGE_HL7_MESSAGE_TIMEOUT="1") as (_, log):
        yield port, log


def test_broken_mllp_framing_is_survived(mllp):
    port, log = mllp
    rng = random.Random(11)
    good = hl7_messages()[-1]
    for case in range(60):
        framed = b"\x0b" + good + b"\x1c\r"
        choice = case % 6
        if choice == 0:
            data = mutate_bytes(framed, rng)
        elif choice == 1:
            data = b"\x0b" * rng.randint(1, 50) + good  # starts, never ends
        elif choice == 2:
            data = framed[:rng.randrange(1, len(framed))]
        elif choice == 3:
            data = b"\x1c\r" + framed + b"junk" + b"\x0b\x0b"
        elif choice == 4:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3000)))
        else:
            data = framed.replace(b"\r", b"\n") + framed
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(data)
            if case % 3:  # and the peer hangs up; otherwise the idle timeout closes it
                sock.shutdown(socket.SHUT_WR)
            sock.settimeout(3)
            try:
                while sock.recv(65536):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x0b" + good.replace(b"|A1|", b"|AFTER|") + b"\x1c\r")
        reply = b""
        while not reply.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            assert chunk, "the listener closed instead of answering"
            reply += chunk
    assert b"MSA|AA|AFTER" in reply, reply
    assert "Traceback" not in log.read_text(errors="replace")
