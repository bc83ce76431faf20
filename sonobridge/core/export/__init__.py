"""FHIR Bulk Data Access v2 ``$export`` (system, ``Patient/$export``, ``Group/[id]/$export``).

``service.py`` holds the jobs' life (kick-off, status, cancel, files, restart), ``params.py`` the
kick-off's parameters, ``runner.py`` the reading and the NDJSON files, ``jobs.py`` the job files.
The FHIR edge routes the kick-off here as an operation and serves the status and file URLs
(``fhir/bulk.py``) through ``service_of(core)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sonobridge.core.export.service import FILES_PATH, STATUS_PATH, Answer, ExportService
from sonobridge.core.operations import Operation

if TYPE_CHECKING:
    from sonobridge.core.services import Core

__all__ = ["FILES_PATH", "STATUS_PATH", "Answer", "ExportService", "attach", "service_of"]

DEFINITION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
_DOC = ("FHIR Bulk Data Access v2: asynchronous NDJSON export (Prefer: respond-async; _type, "
        "_since, _typeFilter, _elements, patient) for backend services with system/ scopes.")


def attach(core: Core) -> None:
    service = ExportService(core)
    setattr(core, "_export", service)  # noqa: B010
    core.operations.register(Operation(
        "export", frozenset({"system"}), service.kickoff,
        definition=DEFINITION + "export", documentation=_DOC))
    core.operations.register(Operation(
        "export", frozenset({"type"}), service.kickoff, types=frozenset({"Patient"}),
        definition=DEFINITION + "patient-export", documentation=_DOC))
    core.operations.register(Operation(
        "export", frozenset({"instance"}), service.kickoff, types=frozenset({"Group"}),
        definition=DEFINITION + "group-export", documentation=_DOC))


def service_of(core: Core) -> ExportService | None:
    """The export service attached to this core (None when the domain is not listed)."""
    service = getattr(core, "_export", None)
    return service if isinstance(service, ExportService) else None
