"""SDP Security Descriptions for media streams, ``a=crypto`` (RFC 4568 §4, §6.1, §9.1 grammar).

    a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]
    key-params = "inline:" base64(master key || master salt) ["|" lifetime] ["|" MKI ":" length]

Only the two suites of RFC 4568 §6.2 that every SRTP stack speaks are supported:
``AES_CM_128_HMAC_SHA1_80`` and ``AES_CM_128_HMAC_SHA1_32`` (128-bit key, 112-bit salt: 30 bytes inline).
One master key per line and no MKI (we key each stream with a single master key, so an offered MKI is
refused with a clear reason); the only session parameter accepted is ``WSH`` (a replay window, §6.3.7).

Sans-IO: values in, values out.  Keys are raw bytes here; they never go to a log (see
:func:`redact_crypto_keys`).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from enum import Enum

from gateway.sdp.model import Attribute, SdpError

SUITE_80 = "AES_CM_128_HMAC_SHA1_80"
SUITE_32 = "AES_CM_128_HMAC_SHA1_32"
# Our order of preference when we offer, and the suites we accept in an offer.
SUPPORTED_SUITES = (SUITE_80, SUITE_32)
KEY_SALT_LENGTH = 30  # RFC 4568 §6.2.1: 128-bit master key + 112-bit master salt
_TAG = re.compile(r"[0-9]{1,9}")
_LIFETIME = re.compile(r"(?:2\^)?[0-9]{1,20}")
_KEY_FIELD = re.compile(r"(inline:)[A-Za-z0-9+/=]+", re.IGNORECASE)
SAVP_PROFILES = frozenset({"RTP/SAVP", "RTP/SAVPF"})


class SrtpPolicy(Enum):
    """Whether a number or trunk uses SRTP: never, when the peer offers it, or always."""

    OFF = "off"
    ALLOW = "allow"
    REQUIRE = "require"


class CryptoError(SdpError):
    """An ``a=crypto`` line we cannot read or cannot use (answered 488, RFC 4568 §7.1.2)."""

    status_code = 488


@dataclass(frozen=True, slots=True, kw_only=True)
class CryptoAttribute:
    """One ``a=crypto`` line: ``key_salt`` is the decoded inline key (master key || master salt)."""

    tag: int
    suite: str
    key_salt: bytes
    lifetime: str | None = None
    session_params: tuple[str, ...] = ()

    def to_attribute(self) -> Attribute:
        inline = base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            inline += f"|{self.lifetime}"
        value = " ".join((str(self.tag), self.suite, f"inline:{inline}", *self.session_params))
        return Attribute(name="crypto", value=value)

    def __repr__(self) -> str:  # the key stays out of reprs, tracebacks and logs
        return f"CryptoAttribute(tag={self.tag}, suite={self.suite!r}, key_salt=<{len(self.key_salt)} bytes>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class SrtpKeying:
    """The outcome of SDES negotiation for one stream: we protect with ``local_key``, the peer with
    ``remote_key`` (RFC 4568 §6.1: each direction is keyed by the sender's own a=crypto line)."""

    suite: str
    local_key: bytes
    remote_key: bytes

    def __repr__(self) -> str:
        return f"SrtpKeying(suite={self.suite!r}, keys=<redacted>)"


def parse_crypto(value: str) -> CryptoAttribute:
    """The value of one ``a=crypto`` attribute (after ``crypto:``); raises :class:`CryptoError`."""
    fields = value.split()
    if len(fields) < 3:
        raise CryptoError(f"a=crypto needs a tag, a suite and key parameters, got {len(fields)} fields")
    tag_text, suite, key_params, *session_params = fields
    if not _TAG.fullmatch(tag_text):
        raise CryptoError(f"a=crypto tag {tag_text[:16]!r} is not 1 to 9 digits (RFC 4568 §9.1)")
    if ";" in key_params:
        raise CryptoError("a=crypto with several keys (MKI) is not supported")
    method, _, info = key_params.partition(":")
    if method.lower() != "inline" or not info:
        raise CryptoError("a=crypto key method is not inline: (RFC 4568 §6.1)")
    key_text, *extras = info.split("|")
    lifetime: str | None = None
    for extra in extras:
        if ":" in extra:
            # RFC 4568 §6.1: "MKI:length". We key each stream with one master key and no MKI.
            raise CryptoError("a=crypto with an MKI is not supported (one master key per stream)")
        if lifetime is not None or not _LIFETIME.fullmatch(extra):
            raise CryptoError(f"a=crypto key lifetime {extra[:16]!r} is not a number or 2^n")
        lifetime = extra
    try:
        key_salt = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("a=crypto inline key is not base64") from None
    if suite in SUPPORTED_SUITES and len(key_salt) != KEY_SALT_LENGTH:
        raise CryptoError(
            f"a=crypto inline key for {suite} is {len(key_salt)} bytes, not {KEY_SALT_LENGTH} (RFC 4568 §6.2.1)"
        )
    return CryptoAttribute(
        tag=int(tag_text), suite=suite, key_salt=key_salt, lifetime=lifetime, session_params=tuple(session_params)
    )


def is_usable(crypto: CryptoAttribute) -> bool:
    """A suite we speak, without session parameters we do not understand (WSH is harmless)."""
    return crypto.suite in SUPPORTED_SUITES and all(p.upper().startswith("WSH=") for p in crypto.session_params)


def redact_crypto_keys(text: str) -> str:
    """``text`` (an SDP body or a whole SIP message) with every inline key replaced by ``inline:<redacted>``."""
    return _KEY_FIELD.sub(r"\1<redacted>", text)
