"""``name@host:port[:key=value…]``: how both bridges name a remote system in the settings.

DICOM peers (``AET@host:port``, SONOBRIDGE_DICOM_PEERS) and HL7 destinations
(``name@host:port``, SONOBRIDGE_HL7_DESTINATIONS) take per-entry options after the port, each
``:key=value``. An IPv6 address in brackets has no ``=``, so the split cannot cut into it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sonobridge.config import ConfigError

_OPTION = re.compile(r":(?=[a-z_]+=)")


@dataclass(frozen=True)
class Address:
    name: str
    host: str
    port: int
    options: dict[str, str]


def parse_address(text: str, what: str, form: str) -> Address:
    """``what`` and ``form`` name the entry in the error (e.g. "an HL7 destination",
    "name@host:port")."""
    name, at, rest = text.strip().partition("@")
    address, *options = _OPTION.split(rest)
    host, colon, port = address.rpartition(":")
    if not (at and colon and name and host and port.isdecimal()):
        raise ConfigError(f"{what} is {form}, not {text.strip()!r}")
    if len(port) > 5 or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: port {port} of {text.strip()!r} is not from 1 to 65535")
    settings = {}
    for option in options:
        key, _, value = option.partition("=")
        settings[key] = value
    return Address(name, host.strip("[]"), int(port), settings)


def entries(inline: str, file: str, what: str) -> list[str]:
    """The entries of a comma-separated setting, then of its file (one per line, ``#``
    comments)."""
    found = [item.strip() for item in inline.split(",") if item.strip()]
    if file:
        try:
            lines = Path(file).read_text("utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} file {file}: {exc}") from exc
        found += [line.strip() for line in lines
                  if line.strip() and not line.lstrip().startswith("#")]
    return found
