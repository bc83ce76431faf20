"""One process's services: the core, and what the edges add to it.

``open_gateway`` opens the core (``core/services.py``) and attaches the edges' listeners to
its events (the HL7 results outbox, DICOM forwarding, when configured), and builds the
authorization service. Every command and the HTTP app open the gateway through here, so a
DICOM object imported from the command line is forwarded like one received by C-STORE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sonobridge.auth.service import AuthService
from sonobridge.config import Settings
from sonobridge.core.services import Core, open_core


@dataclass
class Gateway:
    core: Core
    auth: AuthService

    def close(self) -> None:
        self.core.close()


def attach_listeners(core: Core) -> Core:
    """The edges' listeners of core events, as the settings ask for them, and what the
    edges' settings tell the core (the issuer of each DICOM peer's Patient IDs)."""
    settings = core.settings
    if settings.dicom_peers or settings.dicom_peers_file:
        from sonobridge.hie.dimse.peers import issuers, load_peers

        core.patients.sender_issuers = issuers(load_peers(settings))
    if settings.dicom_forward:
        from sonobridge.hie.dimse.forward import Forwarder
        from sonobridge.store import queues

        Forwarder(settings, queues.dicom_forwards(core.engine)).listen(core.events)
    if settings.sends_results:
        from sonobridge.hie.mllp.outbound import ResultsOutbox
        from sonobridge.store import queues

        ResultsOutbox(settings, queues.hl7_outbox(core.engine)).listen(core.events)
    return core


def protect_data_dir(settings: Settings) -> None:
    """The data directory holds patient data, password hashes and the keys: readable by this
    user only. New files are made so (umask 077); the directory, the SQLite files and the key
    folder are set so at every start, in case they were made before or copied in."""
    os.umask(0o077)
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    for path in (data, data / "keys", data / "blobs"):
        if path.is_dir():
            path.chmod(0o700)
    for path in data.glob("*.db*"):
        if path.is_file():
            path.chmod(0o600)
    keys = data / "keys"
    if keys.is_dir():
        for path in keys.iterdir():
            if path.is_file():
                path.chmod(0o600)


def load_guide_profiles(core: Core) -> Core:
    """Give the core's profile registry this version's implementation guide (profiles,
    extensions, value sets, code systems: ``conformance/ig``, which the core may not import),
    so that resources claiming the guide's profiles are validated on write from the first
    request, whether or not the guide was also put into the store (``ensure_published``)."""
    from sonobridge.conformance.ig.build import definitions
    from sonobridge.core.profiles import registry_for

    registry = registry_for(core.search)
    if registry is not None:
        registry.add(definitions())
    return core


def open_app_core(settings: Settings, *, run_migrations: bool = True) -> Core:
    """The core with the edges' listeners attached, the guide's profiles enforceable (and the
    data directory protected)."""
    protect_data_dir(settings)
    return load_guide_profiles(attach_listeners(open_core(settings,
                                                          run_migrations=run_migrations)))


def open_gateway(settings: Settings, *, run_migrations: bool = True) -> Gateway:
    core = open_app_core(settings, run_migrations=run_migrations)
    return Gateway(core, AuthService(settings, core.engine))
