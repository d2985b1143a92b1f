"""TLS contexts for SIP over TLS (RFC 3261 §26.2.1: TLS between hops; RFC 5922 §7: the server identity
is checked against the host the request is sent to). TLS 1.2 is the minimum (RFC 7525 §3.1.1)."""

from __future__ import annotations

import ssl


def server_context(cert_file: str, key_file: str, *, ca_file: str | None = None,
                   verify_clients: bool = False) -> ssl.SSLContext:
    """The listener's context; raises OSError / ssl.SSLError when the files are unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if verify_clients:
        context.verify_mode = ssl.CERT_REQUIRED
        if ca_file is not None:
            context.load_verify_locations(ca_file)
        else:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return context


def client_context(*, ca_file: str | None = None, verify: bool = True,
                   cert_file: str | None = None, key_file: str | None = None) -> ssl.SSLContext:
    """Outbound: the peer's certificate is verified against ``ca_file`` (or the system CAs) and its
    name against the host we dial, unless ``verify`` is off (a trunk with ``tls_verify: false``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        if ca_file is not None:
            context.load_verify_locations(ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(cert_file, key_file)  # a client certificate, for peers that ask
    return context
