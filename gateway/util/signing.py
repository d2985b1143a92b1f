"""Authenticating what the gateway POSTs (server messages, assistant-request, tool calls).

Two headers do it, so a receiver can choose: Vapi's shared secret (``X-Vapi-Secret: <secret>``, what existing
Vapi receivers check) and an HMAC-SHA256 signature over the timestamp and the exact body, which proves the body
was not altered and, with the timestamp, bounds replays:

    X-Voicegw-Timestamp: 1763712000
    X-Voicegw-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

Time is a parameter (the caller passes the Unix time); nothing here reads a clock.
"""

from __future__ import annotations

import hashlib
import hmac

SECRET_HEADER = "X-Vapi-Secret"
TIMESTAMP_HEADER = "X-Voicegw-Timestamp"
SIGNATURE_HEADER = "X-Voicegw-Signature"
DEFAULT_TOLERANCE_SECONDS = 300

__all__ = [
    "SECRET_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "sign",
    "signed_headers",
    "verify",
]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC of ``"<timestamp>." + body``."""
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(body: bytes, secret: str | None, timestamp: int) -> list[tuple[str, str]]:
    """Headers for a JSON POST of ``body``; the secret and signature only when a secret is configured."""
    headers = [("Content-Type", "application/json")]
    if secret:
        headers += [
            (SECRET_HEADER, secret),
            (TIMESTAMP_HEADER, str(timestamp)),
            (SIGNATURE_HEADER, sign(secret, timestamp, body)),
        ]
    return headers


def verify(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now: float,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """A receiver's check: the signature matches and the timestamp is within ``tolerance`` of ``now``."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    ts = int(timestamp)
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)
