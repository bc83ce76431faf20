"""What a document is made from: the report or consultation and what they refer to, read on
the server's account (in the writer's transaction when there is one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sonobridge.jsonio import loads as json_loads
from sonobridge.mappings.cda import codes as C
from sonobridge.mappings.cda.consultation import ConsultationSources
from sonobridge.mappings.cda.header import reference_id
from sonobridge.mappings.cda.problems import MappingError
from sonobridge.mappings.cda.report import ReportSources
from sonobridge.store.resources import Writer

if TYPE_CHECKING:
    from sonobridge.core.services import Core

MAX_OBSERVATIONS = 500  # measurements put in one document

Resource = dict[str, Any]
Get = Callable[[str, str], Resource | None]


def getter(core: Core, writer: Writer | None) -> Get:
    """Reads by type and id on the server's account, in the writer's transaction if any."""
    def get(res_type: str, res_id: str) -> Resource | None:
        if writer is not None:
            return core.resources.current(writer, res_type, res_id)
        stored = core.store.read(res_type, res_id)
        if stored is None or stored.deleted or stored.content is None:
            return None
        body: Resource = json_loads(stored.content)
        return body
    return get


def find_ids(core: Core, writer: Writer | None, res_type: str, query: list[tuple[str, str]],
          limit: int) -> list[str]:
    """Ids matching a search on the server's account: in the writer's transaction, or on a
    read connection (a GET never opens a write transaction)."""
    if writer is not None:
        return core.resources.find(writer, res_type, query, core.settings.public_base, limit)
    with core.store.reader.connect() as conn:
        return [res_id for _, res_id in core.search.matches(
            conn, res_type, query, core.settings.public_base, limit, None)]


def referred(get: Get, ref: Any, res_type: str) -> Resource | None:
    res_id = reference_id(ref, res_type)
    return get(res_type, res_id) if res_id else None


def imported(report: Resource) -> bool:
    """A report read from a CDA keeps the document's id: its document exists already."""
    return any(i.get("system") == f"urn:oid:{C.DOCUMENT_ID}"
               for i in report.get("identifier") or [])


# ---------------------------------------------------------------------- sources

def report_sources(get: Get, report: Resource) -> ReportSources:
    """The report and what it refers to. Author (检查报告医师) = ``resultsInterpreter``, else
    the first Practitioner performer; verifier (审核医师) = a Practitioner performer other than
    the author, else the author. Organisation: a performer Organization (a 科室 with
    ``partOf`` makes its parent the institution), else the request's performer, else the
    patient's managing organisation."""
    patient = referred(get, report.get("subject"), "Patient")
    if patient is None:
        raise MappingError("the report's subject is not a known Patient",
                           "DiagnosticReport.subject")
    practitioners: list[Resource] = []
    organizations: list[Resource] = []
    for ref in report.get("performer") or []:
        found = referred(get, ref, "Practitioner")
        if found is not None:
            practitioners.append(found)
            continue
        org = referred(get, ref, "Organization")
        if org is not None:
            organizations.append(org)
            continue
        role = referred(get, ref, "PractitionerRole")
        if role is not None:
            person = referred(get, role.get("practitioner"), "Practitioner")
            if person is not None:
                practitioners.append(person)
            org = referred(get, role.get("organization"), "Organization")
            if org is not None:
                organizations.append(org)
    interpreters = [p for p in (person_of(get, r)[0]
                                for r in report.get("resultsInterpreter") or []) if p]
    author = interpreters[0] if interpreters else (practitioners[0] if practitioners else None)
    others = [p for p in practitioners if author is None or p.get("id") != author.get("id")]
    verifier = others[0] if others else author
    request = next((r for r in (referred(get, b, "ServiceRequest")
                                for b in report.get("basedOn") or []) if r), None)
    department = None
    organization = organizations[0] if organizations else None
    if organization is not None and organization.get("partOf"):
        parent = referred(get, organization["partOf"], "Organization")
        if parent is not None:
            department, organization = organization, parent
    if organization is None and request is not None:
        organization = next((o for o in (referred(get, r, "Organization")
                                         for r in request.get("performer") or []) if o), None)
    if organization is None:
        organization = referred(get, patient.get("managingOrganization"), "Organization")
    subject = (report.get("subject") or {}).get("reference")
    observations = []
    for ref in (report.get("result") or [])[:MAX_OBSERVATIONS]:
        obs = referred(get, ref, "Observation")
        if obs is not None and (obs.get("subject") or {}).get("reference") == subject:
            observations.append(obs)
    return ReportSources(report=report, patient=patient, organization=organization,
                         author=author, verifier=verifier, request=request,
                         department=department, observations=observations)


def person_of(get: Get, ref: Any) -> tuple[Resource | None, Resource | None]:
    """(the Practitioner, the Organization) a reference names: a Practitioner, or a
    PractitionerRole's practitioner and organization."""
    found = referred(get, ref, "Practitioner")
    if found is not None:
        return found, None
    role = referred(get, ref, "PractitionerRole")
    if role is None:
        return None, None
    return (referred(get, role.get("practitioner"), "Practitioner"),
            referred(get, role.get("organization"), "Organization"))


def _first(items: Any) -> Any:
    return next((i for i in items if i is not None), None)


def consultation_sources(core: Core, get: Get, task: Resource,
                         writer: Writer | None = None) -> ConsultationSources:
    """A consultation: the Task, its request (``basedOn``), its report (a DiagnosticReport in
    ``Task.output``, else the request's final report by ``based-on``), the consultant
    (Task.owner as a Practitioner or PractitionerRole, else the report's performer or
    interpreter), the consulting institution (the request's performer Organization, else the
    owner's), the requester (the request's requester) and the requesting institution (the
    Task's requester organisation, the requester's, else the patient's managing one)."""
    request = _first(referred(get, b, "ServiceRequest") for b in task.get("basedOn") or [])
    if request is None:
        raise MappingError("the consultation Task is not basedOn a ServiceRequest",
                           "Task.basedOn")
    patient = referred(get, task.get("for") or request.get("subject"), "Patient")
    if patient is None:
        raise MappingError("the consultation's patient is not known", "Task.for")
    report = _first(referred(get, o.get("valueReference"), "DiagnosticReport")
                    for o in task.get("output") or [])
    if report is None:
        found = find_ids(core, writer, "DiagnosticReport",
                         [("based-on", f"ServiceRequest/{request['id']}"),
                          ("status", "final,amended,corrected,appended")], limit=1)
        report = get("DiagnosticReport", found[0]) if found else None
    consultant, owner_org = person_of(get, task.get("owner"))
    if consultant is None and report is not None:
        signers = (report.get("performer") or []) + (report.get("resultsInterpreter") or [])
        consultant = _first(person_of(get, r)[0] for r in signers)
    consulting = _first(referred(get, r, "Organization") for r in request.get("performer")
                        or []) or referred(get, task.get("owner"), "Organization") or owner_org
    requester, requester_org = person_of(get, request.get("requester") or task.get("requester"))
    requesting = referred(get, task.get("requester"), "Organization") or requester_org or \
        referred(get, patient.get("managingOrganization"), "Organization")
    return ConsultationSources(task=task, request=request, patient=patient,
                               consultant=consultant, requester=requester,
                               consulting_org=consulting, requesting_org=requesting,
                               report=report)
