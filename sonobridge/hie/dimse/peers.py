"""The known remote AEs: ``AET@host:port[:option=value…]`` from SONOBRIDGE_DICOM_PEERS and the
peers file.

Options (after the port, each ``:key=value``): ``retrieve=get`` (default) or ``retrieve=move``,
how the DICOMweb proxy fetches from that peer: C-GET on its own association, or C-MOVE to this
server's AE title, the objects arriving through the C-STORE listener (for the many PACS that
do not support C-GET; the PACS must know this AE title's address).
"""

from __future__ import annotations

from dataclasses import dataclass

from sonobridge.config import ConfigError, Settings
from sonobridge.hie.addresses import entries, parse_address

RETRIEVE = ("get", "move")


@dataclass(frozen=True)
class Peer:
    aet: str
    host: str
    port: int
    retrieve: str = "get"  # how the proxy fetches from it: C-GET, or C-MOVE to us


def parse_peer(text: str) -> Peer:
    entry = parse_address(text, "a DICOM peer", "AET@host:port (AET up to 16 characters)")
    if len(entry.name) > 16:
        raise ConfigError(f"a DICOM peer is AET@host:port (AET up to 16 characters), not "
                          f"{text.strip()!r}")
    for key, value in entry.options.items():
        if key != "retrieve" or value not in RETRIEVE:
            raise ConfigError(f"DICOM peer {entry.name}: unknown option {key}={value!r} "
                              f"(known: retrieve={'|'.join(RETRIEVE)})")
    return Peer(entry.name, entry.host, entry.port, **entry.options)


def load_peers(settings: Settings) -> dict[str, Peer]:
    peers = [parse_peer(entry) for entry in
             entries(settings.dicom_peers, settings.dicom_peers_file, "DICOM peers")]
    return {peer.aet: peer for peer in peers}
