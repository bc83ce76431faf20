"""Archives elsewhere (a legacy PACS that speaks only DIMSE), as the DICOMweb edge sees them.

The PACS proxy (``/dicomweb/peers/{AET}/…``) is served by the DICOMweb edge and carried out
by the DIMSE edge; neither imports the other. This is the shape they agree on; the app gives
the DICOMweb edge the DIMSE implementation (``hie/dimse/proxy.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sonobridge.core.policy import Caller


class RemoteArchive(Protocol):
    def search(self, aet: str, level: str, params: Sequence[tuple[str, str]],
               study: str | None, series: str | None, /) -> list[dict[str, Any]]:
        """QIDO-style search at ``level`` (studies, series, instances) on the peer: DICOM
        JSON of each match. 404 for an unknown peer, 400 for a key it cannot take, 502 when
        the peer fails. Called with positional arguments (from a worker thread)."""
        ...

    def fetch(self, caller: Caller, aet: str, study: str, series: str | None,
              sop: str | None) -> int:
        """Bring what is not here yet through the one ingest path; returns how many
        instances arrived."""
        ...
