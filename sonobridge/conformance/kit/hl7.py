"""The HL7 v2 suite: MLLP framing (HL7 v2 Transport Specification: MLLP release 2) and the
acknowledgment of an ADT^A04 (HL7 v2.5.1 chapter 2, original acknowledgment mode)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sonobridge.conformance.kit.model import (
    Check,
    Context,
    Evidence,
    Failed,
    Group,
    Requirement,
    Skipped,
    Suite,
)
from sonobridge.conformance.kit.model import TestDef as T

START, END = b"\x0b", b"\x1c\x0d"
MLLP_SPEC = "https://www.hl7.org/implement/standards/product_brief.cfm?product_id=55"
CH2 = "https://hl7-definitions.caristix.com/v2/HL7v2.5.1/TriggerEvents/ACK"


def _address(ctx: Context) -> tuple[str, int]:
    given = ctx.options.mllp
    if not given:
        raise Skipped("no MLLP listener: give --mllp host:port")
    host, _, port = given.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise Failed(f"--mllp must be host:port, not {given!r}") from None


def adt_a04(control: str, kind: str = "ADT^A04^ADT_A01") -> str:
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    mrn = "KIT" + uuid.uuid4().hex[:10].upper()
    return "\r".join([
        f"MSH|^~\\&|SBKIT|KITHOSP|SONOBRIDGE|SONOBRIDGE|{now}||{kind}|{control}|P|2.5.1",
        f"EVN|A04|{now}",
        f"PID|1||{mrn}^^^KITHOSP^MR||KIT^CONFORMANCE||19800101|O",
        "PV1|1|O",
    ]) + "\r"


def exchange(check: Check, payload: bytes) -> bytes:
    """Send ``payload`` as is and read one framed answer."""
    host, port = _address(check.ctx)
    started = time.monotonic()
    answer = b""
    try:
        with socket.create_connection((host, port), timeout=check.options.timeout) as sock:
            sock.sendall(payload)
            while not answer.endswith(END):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except TimeoutError:
        outcome = "timeout"
    except OSError as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    else:
        outcome = "answered" if answer else "connection closed without an answer"
    check.record(Evidence("mllp", f"MLLP {host}:{port} → {outcome}",
                          request=payload.decode("utf-8", "replace").replace("\r", "\n"),
                          response=answer.decode("utf-8", "replace").replace("\r", "\n"),
                          elapsed_ms=(time.monotonic() - started) * 1000))
    if outcome != "answered":
        raise Failed(f"MLLP {host}:{port}: {outcome}")
    return answer


def _segments(check: Check, framed: bytes) -> dict[str, list[str]]:
    check.expect(framed.startswith(START) and framed.endswith(END),
                 "the answer is framed <VT> message <FS><CR>")
    text = framed[1:-2].decode("utf-8", "replace")
    out: dict[str, list[str]] = {}
    for segment in filter(None, text.replace("\n", "\r").split("\r")):
        fields = segment.split("|")
        out.setdefault(fields[0], fields)
    return out


segments = _segments  # for the other suites that speak HL7 v2 (the worklist order)


def framing(check: Check) -> None:
    control = "K" + uuid.uuid4().hex[:18]
    answer = exchange(check, START + adt_a04(control).encode() + END)
    segments = _segments(check, answer)
    check.expect("MSH" in segments, "the answer begins with an MSH segment")


def ack(check: Check) -> None:
    control = "K" + uuid.uuid4().hex[:18]
    segments = _segments(check, exchange(check, START + adt_a04(control).encode() + END))
    msh, msa = segments.get("MSH", []), segments.get("MSA", [])
    check.expect(msa, "the answer has an MSA segment")
    check.expect(len(msh) > 8 and msh[8].split("^")[0] == "ACK",
                 f"MSH-9 is ACK; got {msh[8] if len(msh) > 8 else None}")
    check.expect(msa[1] in ("AA", "CA"), f"MSA-1 is AA (accepted); got {msa[1]}")
    check.expect(len(msa) > 2 and msa[2] == control,
                 f"MSA-2 echoes MSH-10 {control}; got {msa[2] if len(msa) > 2 else None}")


def two_in_one_connection(check: Check) -> None:
    host, port = _address(check.ctx)
    controls = ["K" + uuid.uuid4().hex[:18] for _ in range(2)]
    answers: list[bytes] = []
    try:
        with socket.create_connection((host, port), timeout=check.options.timeout) as sock:
            for control in controls:
                sock.sendall(START + adt_a04(control).encode() + END)
                buf = b""
                while not buf.endswith(END):
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise Failed("the listener closed the connection after one message")
                    buf += chunk
                answers.append(buf)
    except TimeoutError:
        raise Failed("timeout waiting for the second ACK on the same connection") from None
    except OSError as exc:
        raise Failed(f"{type(exc).__name__}: {exc}") from None
    for control, answer in zip(controls, answers, strict=True):
        check.record(Evidence("mllp", f"ACK for {control}",
                              response=answer.decode("utf-8", "replace").replace("\r", "\n")))
        msa = _segments(check, answer).get("MSA", [])
        check.expect(len(msa) > 2 and msa[2] == control, f"each ACK answers its own message "
                                                         f"({control})")


def bad_message(check: Check) -> None:
    control = "K" + uuid.uuid4().hex[:18]
    message = adt_a04(control, kind="ZZZ^Z99")
    segments = _segments(check, exchange(check, START + message.encode() + END))
    msa = segments.get("MSA", [])
    check.expect(msa and msa[1] in ("AE", "AR", "CE", "CR"),
                 f"an unsupported message type is answered AE/AR; got "
                 f"{msa[1] if msa else 'no MSA'}")


def _t(id_: str, title: str, text: str, url: str, fn: Callable[[Check], None]) -> T:
    return T(id_, title, Requirement(text, url), fn)


TESTS = [
    _t("hl7-mllp-01", "MLLP framing", "A message sent <VT>…<FS><CR> is answered in the same "
       "framing.", MLLP_SPEC, framing),
    _t("hl7-ack-01", "ACK for ADT^A04", "An accepted ADT^A04 is acknowledged: MSH-9 ACK, MSA-1 "
       "AA, MSA-2 the message control ID.", CH2, ack),
    _t("hl7-mllp-02", "Several messages on one connection", "The listener keeps the connection "
       "open and acknowledges each message in turn.", MLLP_SPEC, two_in_one_connection),
    _t("hl7-ack-02", "Unsupported message type", "A message the receiver does not support is "
       "acknowledged with AE or AR, not silently dropped.", CH2, bad_message),
]


def groups(ctx: Context) -> Iterable[Group]:
    _address(ctx)
    return [Group("hl7", "HL7 v2 over MLLP", TESTS)]


SUITE = Suite("hl7", "HL7 v2 (MLLP)", groups)
