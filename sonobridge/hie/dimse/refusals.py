"""Refusing a C-MOVE or C-GET with a status, before any sub-operation.

pynetdicom's Move SCP associates with the destination as soon as the handler names it, and
its Get SCP answers "success, nothing to send" when the handler counts no match: neither lets
a handler refuse a caller with a failure status of its own. The calling AE title's rights are
known when the association is accepted, so the SCP methods ask the association first
(``assoc.sonobridge_refusal``, set by the listener): a refused request gets its final
response, status 0x0124 (Refused: Not Authorized, PS3.7 C), and nothing else happens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.service_class import QueryRetrieveServiceClass

# (service, operation) -> a refusal status, or None to go on
Refusal = Callable[[str, str], int | None]
_PATCHED = False


def _refused(service: Any, req: Any, context: Any, primitive: type, name: str,
             operation: str) -> bool:
    refusal: Refusal | None = getattr(service.assoc, "sonobridge_refusal", None)
    status = refusal(name, operation) if refusal is not None else None
    if status is None:
        return False
    rsp = primitive()
    rsp.MessageIDBeingRespondedTo = req.MessageID
    rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
    rsp.Status = status
    service.dimse.send_msg(rsp, context.context_id)
    return True


def install() -> None:
    """Wrap the Move and Get SCP methods once per process."""
    global _PATCHED
    if _PATCHED:
        return
    move, get = QueryRetrieveServiceClass._move_scp, QueryRetrieveServiceClass._get_scp

    def move_scp(self: Any, req: Any, context: Any) -> None:
        if not _refused(self, req, context, C_MOVE, "move", "C-MOVE"):
            move(self, req, context)

    def get_scp(self: Any, req: Any, context: Any) -> None:
        if not _refused(self, req, context, C_GET, "get", "C-GET"):
            get(self, req, context)

    # Replaced on purpose (pynetdicom has no hook before a retrieval), which mypy refuses for
    # any method.
    QueryRetrieveServiceClass._move_scp = move_scp  # type: ignore[method-assign]
    QueryRetrieveServiceClass._get_scp = get_scp  # type: ignore[method-assign]
    _PATCHED = True
