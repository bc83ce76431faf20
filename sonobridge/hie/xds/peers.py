"""Who we are and whom we talk to in the affinity domain, from the settings
(``SONOBRIDGE_XDS_*``, docs/exchange.md): the platform's repository and registry URLs, this
gateway's source OID and repository uniqueId (2.25 OIDs derived from the data directory when
unset, so a node keeps the same ones across restarts), the home community id, and the
affinity domain's patient-id assigning authority."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sonobridge.config import Settings


def derived_oid(*parts: str) -> str:
    """A 2.25 OID (ITU-T X.667) from a name: stable, and under no one else's arc."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, '/'.join(parts)).int}"


@dataclass(frozen=True)
class Peers:
    repository_url: str
    registry_url: str
    source_oid: str
    repository_unique_id: str
    home_community_id: str
    affinity_domain: str

    @classmethod
    def of(cls, settings: Settings) -> Peers:
        node = str(settings.data_dir.resolve())
        return cls(
            repository_url=settings.xds_repository_url,
            registry_url=settings.xds_registry_url,
            source_oid=settings.xds_source_oid or derived_oid("sonobridge-xds-source", node),
            repository_unique_id=settings.xds_repository_unique_id
            or derived_oid("sonobridge-xds-repository", node),
            home_community_id=settings.xds_home_community_id,
            affinity_domain=settings.xds_affinity_domain)
