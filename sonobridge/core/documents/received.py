"""Receiving a referring hospital's WS/T 500.6 document: checked, its patient matched by
identifiers, its DiagnosticReport written with the caller's rights."""

from __future__ import annotations

import base64
import copy
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sonobridge.core.documents.sources import Resource
from sonobridge.core.errors import CoreError, Issue
from sonobridge.core.policy import Caller
from sonobridge.mappings.cda import codes as C
from sonobridge.mappings.cda.documentref import version_of
from sonobridge.mappings.cda.header import reference_id
from sonobridge.mappings.cda.parse import ParsedReport, read_report
from sonobridge.mappings.cda.problems import CdaError
from sonobridge.mappings.cda.xml import MAX_DOCUMENT_BYTES
from sonobridge.store.resources import Writer, new_id

if TYPE_CHECKING:
    from sonobridge.core.services import Core

XML_TYPES = ("application/xml", "text/xml", "application/hl7-cda+xml", "application/cda+xml")


def refusal(exc: CdaError, expression: str) -> CoreError:
    issues = [Issue("invalid", f"{p.rule}: {p.message}"
                    + (f" (line {p.line})" if p.line else "")
                    + (f" at {p.path}" if p.path else ""), expression=[expression])
              for p in exc.problems[:20]]
    return CoreError(422, "invalid", f"the CDA document is not a valid WS/T 500.6 检查报告: "
                     f"{exc}", issues=issues)


def match_patient(core: Core, writer: Writer, parsed: ParsedReport, expression: str) -> str:
    pairs = [(i["system"], i["value"]) for i in parsed.identifiers]
    if not pairs:
        raise CoreError(422, "processing", "the document names the patient by no identifier "
                        "SonoBridge matches on (身份证号, 健康卡号, 门(急)诊号, 住院号)",
                        expression=[expression])
    matched = core.resources.identifier_matches(writer, "Patient", pairs)
    for pair in pairs:  # in order: 身份证号 first
        ids = sorted(set(matched.get(pair) or []))
        if len(ids) > 1:
            raise CoreError(422, "processing", f"the identifier {pair[0]}|{pair[1]} belongs "
                            f"to {len(ids)} patients: the document is not filed until they "
                            "are merged", expression=[expression])
        if ids:
            return ids[0]
    raise CoreError(422, "processing", "no patient here carries the document's identifiers ("
                    + ", ".join(f"{s}|{v}" for s, v in pairs) + "); register the patient "
                    "first", expression=[expression])


def checked(data: bytes, expression: str) -> ParsedReport:
    """The document read, or the 422 naming every problem (rule, line, XPath)."""
    try:
        return read_report(data)
    except CdaError as exc:
        raise refusal(exc, expression) from None


def import_report(core: Core, writer: Writer, caller: Caller, parsed: ParsedReport,
                  expression: str, subject: Resource | None
                  ) -> tuple[str, str, Resource | None]:
    """File a checked document: match the patient, write its DiagnosticReport (or update the
    one the replaced version made). Returns (patient id, report id, the replaced
    DocumentReference)."""
    filed = core.resources.find(writer, "DocumentReference", [(
        "identifier", f"urn:oid:{C.DOCUMENT_ID}|{parsed.info.document_id}")], caller.base, 1)
    if filed:
        raise CoreError(409, "duplicate", f"document {parsed.info.document_id} is already "
                        f"filed (DocumentReference/{filed[0]}); a new version needs a new "
                        "versionNumber", expression=[expression])
    patient_id = match_patient(core, writer, parsed, expression)
    if subject is not None and reference_id(subject, "Patient") != patient_id:
        raise CoreError(422, "processing", f"the document's patient is Patient/{patient_id}, "
                        f"not {subject.get('reference')}", expression=[expression])
    report = {**parsed.report, "subject": {"reference": f"Patient/{patient_id}"}}
    previous = None
    if parsed.replaces is not None:
        found = core.resources.find(writer, "DocumentReference",
                                    [("identifier", f"urn:sonobridge:cda:set|"
                                                    f"{parsed.replaces[0]}"),
                                     ("status", "current")], caller.base, limit=5)
        docs = [d for d in (core.resources.current(writer, "DocumentReference", i)
                            for i in found) if d is not None]
        previous = next((d for d in docs if version_of(d) == parsed.replaces[1]), None)
    old_report = None
    if previous is not None:
        for related in (previous.get("context") or {}).get("related") or []:
            old_report = reference_id(related, "DiagnosticReport") or old_report
    if old_report is not None and core.resources.exists("DiagnosticReport", old_report,
                                                        writer):
        core.resources.update(caller, "DiagnosticReport", old_report,
                              {**report, "id": old_report}, writer=writer)
        report_id = old_report
    else:
        report_id = new_id()
        core.resources.create(caller, "DiagnosticReport", report, assigned_id=report_id,
                              writer=writer)
    return patient_id, report_id, previous


def decoded(attachment: Resource, expression: str) -> bytes | None:
    """The attachment's bytes when it carries an XML document inline, else None."""
    raw = attachment.get("data")
    if not isinstance(raw, str):
        return None
    kind = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
    if kind and kind not in XML_TYPES:
        return None
    if len(raw) > MAX_DOCUMENT_BYTES * 4 // 3 + 4:
        raise CoreError(413, "too-costly", f"the attached document is over "
                        f"{MAX_DOCUMENT_BYTES} bytes", expression=[expression])
    try:
        data = base64.b64decode(raw, validate=True)
    except ValueError:
        raise CoreError(400, "invalid", "attachment.data is not base64",
                        expression=[expression]) from None
    return data if data.lstrip()[:1] == b"<" else None


@dataclass
class Pending:
    """A transaction's posted CDA Binaries (filed at commit) and the DocumentReferences it
    created pointing at a Binary (``Binary/x`` -> DocumentReference id)."""

    binaries: dict[str, tuple[bytes, ParsedReport, Caller]] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)


def completed(doc: Resource, made: Resource, data: bytes, report_id: str,
               index: int) -> Resource:
    """A client's DocumentReference completed with what the document says (its own values
    kept): subject, identity, type, format, size and hash, the filed report."""
    out = copy.deepcopy(doc)
    content = out["content"][index]
    attachment = content.setdefault("attachment", {})
    attachment.setdefault("size", len(data))
    attachment.setdefault("hash", base64.b64encode(hashlib.sha1(data).digest()).decode())
    content.setdefault("format", made["content"][0]["format"])
    for key in ("subject", "masterIdentifier", "type", "docStatus", "securityLabel",
                "relatesTo", "date", "author", "custodian"):
        if key in made:
            out.setdefault(key, made[key])
    out["identifier"] = [*out.get("identifier", []), *made["identifier"]]
    out["extension"] = [*out.get("extension", []), *made["extension"]]
    context = out.setdefault("context", {})
    context["related"] = [*context.get("related", []),
                          {"reference": f"DiagnosticReport/{report_id}"}]
    return out
