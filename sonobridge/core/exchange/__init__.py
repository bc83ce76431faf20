"""IHE document sharing and patient identity on the FHIR server (issue 17, items 3-5;
STANDARDS.md §12): MHD (``mhd``), PIXm (``pixm``), PDQm (``pdqm``), and what the ATNA audit feed
reads (``auditfeed``; the sender is ``hie/syslog.py``).

MHD and PDQm are mostly the FHIR server itself: ITI-65 is a transaction Bundle, ITI-66/67/78
are searches (with the IHE search parameters the guide adds in
``conformance/search-parameters.json``), ITI-68 is a Binary read with the document's own
media type. What this package adds is what those do not give by themselves: the MHD rules a
Document Recipient checks at commit, ``Patient/$ihe-pix`` (PIXm ITI-83) and ``Patient/$match``
(PDQm ITI-119, ``pdqm``), and the IHE event types of these transactions in the audit trail
(``audited``; ITI-65 by ``mhd``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sonobridge.core.services import Core


def attach(core: Core) -> None:
    from sonobridge.core.exchange import audited, mhd, pdqm, pixm

    pixm.attach(core)
    pdqm.attach(core)
    mhd.attach(core)
    audited.attach(core)
