"""TLS server contexts for every listener: HTTPS, DICOM TLS, MLLP over TLS.

One policy for all three (GB/T 22239 network security, and DICOM PS3.15 B.1 "The Basic TLS
Secure Transport Connection Profile" as updated by BCP 195): TLS 1.2 at least, the system's
modern cipher list, the server's certificate chain and key from PEM files. With a CA file
(``SONOBRIDGE_TLS_CA``) peers must present a certificate it signed: DICOM and MLLP peers are
machines, and mutual TLS is how a modality or a HIS proves which one it is. HTTPS clients are
people and apps, who authenticate with OAuth (SMART), so the HTTP listener does not ask for a
client certificate.
"""

from __future__ import annotations

import ssl

from sonobridge.config import ConfigError, Settings


def server_context(settings: Settings, *, client_certificates: bool) -> ssl.SSLContext:
    """A server context from the settings; ``client_certificates``: require a certificate
    signed by ``tls_ca`` when one is configured."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {settings.tls_cert!r} and key "
                          f"{settings.tls_key!r}: {exc}") from None
    if client_certificates and settings.tls_ca:
        try:
            context.load_verify_locations(cafile=settings.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the peers' CA {settings.tls_ca!r}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context
