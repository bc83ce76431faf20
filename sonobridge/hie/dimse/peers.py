"""The known remote AEs and what each may ask of us: ``AET@host:port[:option=value…]`` from
SONOBRIDGE_DICOM_PEERS and the peers file.

Options (after the port, each ``:key=value``):

- ``retrieve=get`` (default) or ``retrieve=move``: how the DICOMweb proxy fetches from that
  peer: C-GET on its own association, or C-MOVE to this server's AE title, the objects
  arriving through the C-STORE listener (for the many PACS that do not support C-GET; the PACS
  must know this AE title's address);
- ``rights=find+move+store``: the DIMSE services the peer may use when it calls us, ``+``
  separated, from ``echo store find move get worklist mpps commit`` (or ``all``, the default
  for a listed peer). A calling AE title that is not listed gets
  SONOBRIDGE_DICOM_UNLISTED_RIGHTS (default ``echo+store``, as Orthanc's defaults): it may
  store images but not query or retrieve them;
- ``issuer=HOSP``: the issuer of the Patient IDs the peer sends when its objects name none
  (no Issuer of Patient ID): an assigning authority's namespace, or an HD with its ISO OID
  (``issuer=HOSP&1.2.840.1&ISO``). Its IDs then match the HIS's identifiers of that
  authority (``core/patients.py``); without it, SONOBRIDGE_PATIENT_ID_ISSUER, else unqualified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sonobridge.config import ConfigError, Settings
from sonobridge.core.policy import DIMSE_SERVICES, Policy
from sonobridge.hie.addresses import entries, parse_address

RETRIEVE = ("get", "move")
ALL = frozenset(DIMSE_SERVICES)


def parse_rights(text: str, who: str) -> frozenset[str]:
    """``find+move`` (or ``all``, or ``none``) -> the set of DIMSE services."""
    words = {w.strip().lower() for w in text.replace(",", "+").split("+") if w.strip()}
    if words == {"all"}:
        return ALL
    if words == {"none"}:
        return frozenset()
    unknown = words - ALL
    if unknown:
        raise ConfigError(f"{who}: unknown DIMSE rights {', '.join(sorted(unknown))} (known: "
                          f"{' '.join(DIMSE_SERVICES)}, or all, or none; joined by +)")
    return frozenset(words)


@dataclass(frozen=True)
class Peer:
    aet: str
    host: str
    port: int
    retrieve: str = "get"  # how the proxy fetches from it: C-GET, or C-MOVE to us
    rights: frozenset[str] = field(default=ALL)
    issuer: str = ""  # of the Patient IDs it sends without one (core/patients.py)


def parse_peer(text: str) -> Peer:
    entry = parse_address(text, "a DICOM peer", "AET@host:port (AET up to 16 characters)")
    if len(entry.name) > 16:
        raise ConfigError(f"a DICOM peer is AET@host:port (AET up to 16 characters), not "
                          f"{text.strip()!r}")
    retrieve, rights, issuer = "get", ALL, ""
    for key, value in entry.options.items():
        if key == "retrieve" and value in RETRIEVE:
            retrieve = value
        elif key == "rights":
            rights = parse_rights(value, f"DICOM peer {entry.name}")
        elif key == "issuer" and value.strip() and len(value) <= 64:
            issuer = value.strip()
        else:
            raise ConfigError(f"DICOM peer {entry.name}: unknown option {key}={value!r} "
                              f"(known: retrieve={'|'.join(RETRIEVE)}, rights=find+move+…, "
                              f"issuer=NAMESPACE)")
    return Peer(entry.name, entry.host, entry.port, retrieve, rights, issuer)


def load_peers(settings: Settings) -> dict[str, Peer]:
    peers = [parse_peer(entry) for entry in
             entries(settings.dicom_peers, settings.dicom_peers_file, "DICOM peers")]
    return {peer.aet: peer for peer in peers}


def issuers(peers: dict[str, Peer]) -> dict[str, str]:
    """Calling AE title -> the issuer of the Patient IDs it sends, for the peers that say."""
    return {aet: peer.issuer for aet, peer in peers.items() if peer.issuer}


class Callers:
    """The policy of each calling AE title: a listed peer's rights, else the unlisted ones."""

    def __init__(self, settings: Settings, peers: dict[str, Peer]) -> None:
        self.peers = peers
        self.unlisted = parse_rights(settings.dicom_unlisted_rights,
                                     "SONOBRIDGE_DICOM_UNLISTED_RIGHTS")

    def policy(self, calling_aet: str) -> Policy:
        peer = self.peers.get(calling_aet)
        rights = peer.rights if peer is not None else self.unlisted
        return Policy.system(f"dicom:{calling_aet}", calling_aet, rights)
