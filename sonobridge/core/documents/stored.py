"""The documents the server keeps: a Binary holding the CDA and the DocumentReference that
indexes it, one version per change of a final report (RPLC), one 会诊记录 per consultation."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sonobridge.core.documents.sources import (
    Resource,
    consultation_sources,
    find_ids,
    getter,
    report_sources,
)
from sonobridge.jsonio import loads as json_loads
from sonobridge.mappings.cda import codes as C
from sonobridge.mappings.cda.consultation import consultation_document
from sonobridge.mappings.cda.documentref import (
    CONTENT_TYPE,
    DocumentInfo,
    document_reference,
    set_id_of,
    version_of,
)
from sonobridge.mappings.cda.header import DocumentVersion
from sonobridge.mappings.cda.problems import MappingError
from sonobridge.mappings.cda.report import report_document
from sonobridge.mappings.cda.validate import problems
from sonobridge.store.resources import Writer, new_id

if TYPE_CHECKING:
    from sonobridge.core.services import Core

SOURCE_VERSION_EXT = "http://sonobridge.org/fhir/StructureDefinition/cda-source-version"


MAX_VERSIONS = 1000  # versions of one report's document looked at


def document_id_for(report_id: str, version: int) -> str:
    """The DocumentReference id of version N of a report's document. Derived from the report,
    so the current version is found by reading a few ids, not by a search in the report's
    transaction (that search was the largest part of what storing a document cost)."""
    return f"cda-{hashlib.sha1(report_id.encode()).hexdigest()[:24]}-{version}"


def versions(core: Core, writer: Writer | None, report_id: str) -> tuple[Resource | None, int]:
    """(the latest document of the report that is not deleted, the highest version ever
    written: the next one is that + 1, never reusing an id)."""
    latest, highest = None, 0
    related = {"reference": f"DiagnosticReport/{report_id}"}
    for number in range(1, MAX_VERSIONS + 1):
        res_id = document_id_for(report_id, number)
        stored = writer.read("DocumentReference", res_id) if writer is not None else \
            core.store.read("DocumentReference", res_id)
        if stored is None:
            break
        highest = number
        if stored.deleted or stored.content is None:
            continue
        doc: Resource = json_loads(stored.content)
        doc.pop("meta", None)
        if related in (doc.get("context") or {}).get("related", []) and \
                doc_format(doc) == C.REPORT_FORMAT:
            latest = doc
    return latest, highest


def current_document(core: Core, writer: Writer | None, report_id: str) -> Resource | None:
    """The report's current document (status current), if any."""
    latest, _ = versions(core, writer, report_id)
    return latest if latest is not None and latest.get("status") == "current" else None


def doc_format(doc: Resource) -> str | None:
    content = (doc.get("content") or [{}])[0]
    code = (content.get("format") or {}).get("code")
    return str(code) if code else None


def source_version(doc: Resource) -> int | None:
    for ext in doc.get("extension") or []:
        if ext.get("url") == SOURCE_VERSION_EXT and isinstance(ext.get("valueInteger"), int):
            return int(ext["valueInteger"])
    return None


def attachment_of(data: bytes, binary_id: str, created: str | None) -> Resource:
    out: Resource = {"url": f"Binary/{binary_id}", "size": len(data),
                     "hash": base64.b64encode(hashlib.sha1(data).digest()).decode()}
    if created:
        out["creation"] = created
    return out


def store_report_document(core: Core, writer: Writer, report_id: str, report: Resource,
                          report_version: int, now: datetime) -> str | None:
    """Write the next version of the report's document (Binary + DocumentReference) in the
    writer's transaction; the DocumentReference id, or None when nothing changed."""
    latest, highest = versions(core, writer, report_id)
    previous = latest if latest is not None and latest.get("status") == "current" else None
    if previous is not None and source_version(previous) == report_version:
        return None
    set_id = (set_id_of(latest) if latest else None) or f"DiagnosticReport-{report_id}"
    old = DocumentVersion(set_id, version_of(latest)) if latest else None
    version = DocumentVersion(set_id, max(highest, old.version if old else 0) + 1, old)
    sources = report_sources(getter(core, writer), {**report, "id": report_id})
    data = report_document(sources, version, now)
    found = problems(data)
    if found:  # never store a document that fails its own checks
        raise MappingError("the document made fails " + "; ".join(map(str, found[:3])),
                           "DiagnosticReport")
    server = core.server
    binary_id = new_id()
    core.resources.create(server, "Binary", {
        "resourceType": "Binary", "contentType": CONTENT_TYPE,
        "securityContext": {"reference": f"DiagnosticReport/{report_id}"},
        "data": base64.b64encode(data).decode()}, assigned_id=binary_id, writer=writer)
    when = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    people = [p for p in (sources.author, sources.verifier) if p is not None]
    info = DocumentInfo(set_id=set_id, version=version.version,
                        document_id=version.document_id, kind="report", date=when,
                        authors=[{"reference": f"Practitioner/{p['id']}"} for p in people[:1]],
                        custodian={"reference": f"Organization/{sources.organization['id']}"}
                        if sources.organization and sources.organization.get("id") else None,
                        doc_status="final" if report.get("status") == "final" else "amended")
    doc = document_reference(info, subject=report["subject"],
                             related=[{"reference": f"DiagnosticReport/{report_id}"}],
                             attachment=attachment_of(data, binary_id, when),
                             replaces=f"DocumentReference/{latest['id']}" if latest else None)
    doc["extension"].append({"url": SOURCE_VERSION_EXT, "valueInteger": report_version})
    written = core.resources.create(server, "DocumentReference", doc, writer=writer,
                                    assigned_id=document_id_for(report_id, highest + 1))
    if previous is not None:
        core.resources.update(server, "DocumentReference", str(previous["id"]),
                              {**previous, "status": "superseded"}, writer=writer)
    return written.stored.id


def stored_bytes(core: Core, writer: Writer | None, doc: Resource) -> bytes | None:
    url = str(((doc.get("content") or [{}])[0].get("attachment") or {}).get("url", ""))
    binary = getter(core, writer)("Binary", url.split("/")[-1]) if url else None
    if binary is not None and binary.get("data"):
        return base64.b64decode(binary["data"])
    return None


def current_consultation(core: Core, writer: Writer | None, task_id: str) -> Resource | None:
    found = find_ids(core, writer, "DocumentReference",
                  [("related", f"Task/{task_id}"), ("status", "current")], 1)
    return getter(core, writer)("DocumentReference", found[0]) if found else None


def store_consultation_document(core: Core, writer: Writer, task_id: str, task: Resource,
                                now: datetime) -> str | None:
    """The 会诊记录 of a consultation completed, stored once (Binary + DocumentReference
    related to the Task, its request and its report); None when it is there already."""
    if current_consultation(core, writer, task_id) is not None:
        return None
    sources = consultation_sources(core, getter(core, writer), {**task, "id": task_id},
                                   writer)
    version = DocumentVersion(f"Task-{task_id}")
    data = consultation_document(sources, version, now)
    found = problems(data)
    if found:
        raise MappingError("the document made fails " + "; ".join(map(str, found[:3])), "Task")
    binary_id = new_id()
    core.resources.create(core.server, "Binary", {
        "resourceType": "Binary", "contentType": CONTENT_TYPE,
        "securityContext": {"reference": f"Task/{task_id}"},
        "data": base64.b64encode(data).decode()}, assigned_id=binary_id, writer=writer)
    when = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    consultant = sources.consultant or {}
    org = sources.consulting_org or {}
    info = DocumentInfo(set_id=version.set_id, version=1, document_id=version.document_id,
                        kind="consultation", date=when,
                        authors=[{"reference": f"Practitioner/{consultant['id']}"}]
                        if consultant.get("id") else [],
                        custodian={"reference": f"Organization/{org['id']}"}
                        if org.get("id") else None)
    related = [{"reference": f"Task/{task_id}"},
               {"reference": f"ServiceRequest/{sources.request['id']}"}]
    if sources.report is not None and sources.report.get("id"):
        related.append({"reference": f"DiagnosticReport/{sources.report['id']}"})
    doc = document_reference(info, subject={"reference": f"Patient/{sources.patient['id']}"},
                             related=related, attachment=attachment_of(data, binary_id, when))
    return core.resources.create(core.server, "DocumentReference", doc, writer=writer).stored.id
