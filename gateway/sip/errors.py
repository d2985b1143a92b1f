"""Errors of the SIP core (RFC 3261): each says who is at fault and carries the wire verdict.

A parser returns a message or raises :class:`RemoteProtocolError`, nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.sip.headers import Headers


class SipError(Exception):
    """Base of every error the SIP core raises."""


class RemoteProtocolError(SipError):
    """The peer broke the protocol. ``status_code`` is what a UAS answers (400, 505, 420, ...).

    ``headers`` holds whatever header fields could be read before the error, so the edge can
    still build a stateless error response (it needs Via, From, To, Call-ID and CSeq);
    ``is_response`` tells the edge to drop silently instead (responses are never answered).
    """

    def __init__(
        self,
        reason: str,
        *,
        status_code: int = 400,
        headers: Headers | None = None,
        is_response: bool = False,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
        self.headers = headers
        self.is_response = is_response
        self.extra_headers = extra_headers


class LocalProtocolError(SipError):
    """We tried to do something the protocol forbids (a bug on our side or a misuse of the API)."""
