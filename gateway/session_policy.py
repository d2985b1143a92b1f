"""RFC 4028 session timers as a call uses them: the sans-IO negotiation of gateway.sip.session_timer,
read against whole messages, answering 'what headers, which interval, who refreshes'."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.message import Request, Response
from gateway.sip.session_timer import (
    AcceptTimer,
    NoTimer,
    Refresher,
    RejectTooSmall,
    SessionTimerConfig,
    negotiate_uas,
    read_uac_response,
    uac_offer,
)


class SessionTimerRole(enum.Enum):
    NONE = "none"
    REFRESHER = "refresher"  # we send the refreshes
    WATCHER = "watcher"  # the peer refreshes; we BYE if it does not


@dataclass(frozen=True, slots=True)
class UasSessionDecision:
    reject_status: int | None
    response_headers: list[tuple[str, str]]
    interval: int | None
    role: SessionTimerRole


class SessionTimerPolicy:
    def __init__(self, *, session_expires: int, min_se: int) -> None:
        self.config = SessionTimerConfig(session_expires=session_expires, min_se=min_se)

    def negotiate_uas(self, request: Request) -> UasSessionDecision:
        try:
            decision = negotiate_uas(request.headers, self.config)
        except RemoteProtocolError:
            # A malformed Session-Expires or Min-SE: the request is answered 400.
            return UasSessionDecision(400, [], None, SessionTimerRole.NONE)
        match decision:
            case RejectTooSmall():
                return UasSessionDecision(decision.status_code, list(decision.headers), None, SessionTimerRole.NONE)
            case AcceptTimer():
                role = SessionTimerRole.REFRESHER if decision.we_refresh else SessionTimerRole.WATCHER
                return UasSessionDecision(None, list(decision.headers), decision.interval, role)
            case NoTimer():
                return UasSessionDecision(None, list(decision.headers), None, SessionTimerRole.NONE)

    def offer_headers(self) -> list[tuple[str, str]]:
        # Supported: timer is already part of every request's common headers.
        return [h for h in uac_offer(self.config) if h[0] != "Supported"]

    def refresh_headers(self, interval: int) -> list[tuple[str, str]]:
        return [h for h in uac_offer(self.config, interval=interval, refresher=Refresher.UAC) if h[0] != "Supported"]

    def on_uac_2xx(self, response: Response) -> tuple[int | None, bool]:
        """Interval and whether we refresh, from the 2xx to an INVITE/UPDATE we sent (§7.2)."""
        try:
            agreement = read_uac_response(response.headers)
        except RemoteProtocolError:
            return None, False
        if agreement is None:
            return None, False
        return agreement.interval, agreement.we_refresh

    def on_refresh_response(self, response: Response, previous: int | None) -> tuple[int | None, bool]:
        return self.on_uac_2xx(response)
