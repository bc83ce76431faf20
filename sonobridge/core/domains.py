"""The remote-ultrasound domains attached to a core when it is built.

Each domain module has ``attach(core)``: it registers its FHIR operations
(``core.operations``) and listens to the core's events (``core.events``: ``ResourceWriting``
to refuse what its rules forbid, ``ResourceChanged``/``InstanceStored`` to derive what follows).
Listed here by module path, in the order they attach, so that adding a domain is one line and
the core's construction does not change.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sonobridge.core.services import Core

DOMAINS: tuple[str, ...] = (
    "sonobridge.core.profiles",
    "sonobridge.core.consultation",
    "sonobridge.core.scheduling",
    "sonobridge.core.views.service",
    "sonobridge.core.reports",
    "sonobridge.core.critical",
    "sonobridge.core.documents",
    "sonobridge.core.measures",
    "sonobridge.core.subscriptions",
    "sonobridge.core.teaching",
    "sonobridge.core.qc",
    "sonobridge.core.exchange",
    "sonobridge.core.export",
    "sonobridge.core.pdf.report",
    "sonobridge.core.training",
    # An edge's listener (by name: core imports no edge): a final report's document queued
    # for ITI-41 to the regional platform when SONOBRIDGE_XDS_REPOSITORY_URL is set.
    "sonobridge.hie.xds.outbound",
)


def attach_domains(core: Core) -> None:
    for path in DOMAINS:
        import_module(path).attach(core)
