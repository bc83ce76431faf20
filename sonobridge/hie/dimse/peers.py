"""The known remote AEs: ``AET@host:port`` from SONOBRIDGE_DICOM_PEERS and the peers file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sonobridge.config import ConfigError, Settings


@dataclass(frozen=True)
class Peer:
    aet: str
    host: str
    port: int


def parse_peer(text: str) -> Peer:
    aet, at, address = text.strip().partition("@")
    host, colon, port = address.rpartition(":")
    if not at or not colon or not aet or not host or not port.isdigit() or len(aet) > 16:
        raise ConfigError(f"a DICOM peer is AET@host:port (AET up to 16 characters), not "
                          f"{text.strip()!r}")
    return Peer(aet, host.strip("[]"), int(port))


def load_peers(settings: Settings) -> dict[str, Peer]:
    entries = [p for p in settings.dicom_peers.split(",") if p.strip()]
    if settings.dicom_peers_file:
        path = Path(settings.dicom_peers_file)
        try:
            lines = path.read_text("utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the DICOM peers file {path}: {exc}") from exc
        entries += [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    peers = [parse_peer(entry) for entry in entries]
    return {peer.aet: peer for peer in peers}
