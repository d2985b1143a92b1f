"""Session timers for SIP dialogs, sans-IO (RFC 4028).

Three pieces:

* the header fields: ``Session-Expires`` (§4, compact form ``x``) and ``Min-SE`` (§5);
* negotiation as pure functions: what a UAS answers to an INVITE/UPDATE (§9: a 422 decision, or
  the Session-Expires/Require to put in its 2xx and who refreshes), what a UAC offers (§7.1),
  how it reads a 2xx (§7.2) and how it retries after a 422 (§7.3);
* :class:`SessionTimer`, started at each successful refresh, which tells the UA when to send the
  next refresh (half the interval, §7.4/§10) or, when the peer refreshes, when to give up and send
  BYE (``interval - min(32, interval / 3)``, §10).

The roles ``uac``/``uas`` in the ``refresher`` parameter are those of the refreshing transaction,
not of the dialog: after a re-INVITE from the far end, "uac" means the far end.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.sip.errors import LocalProtocolError, RemoteProtocolError
from gateway.sip.headers import Headers, parse_params

__all__ = [
    "ABSOLUTE_MIN_SE",
    "AcceptTimer",
    "NoTimer",
    "RefreshDue",
    "Refresher",
    "RejectTooSmall",
    "SessionExpired",
    "SessionExpires",
    "SessionTimer",
    "SessionTimerConfig",
    "SessionTimerEvent",
    "TimerAgreement",
    "UasDecision",
    "negotiate_uas",
    "parse_min_se",
    "parse_session_expires",
    "read_uac_response",
    "retry_after_422",
    "uac_offer",
]

# §5: "the Min-SE ... MUST NOT be less than 90 seconds" (and §4 bounds Session-Expires by it).
ABSOLUTE_MIN_SE = 90
_MAX_DELTA = 2**32 - 1  # delta-seconds beyond this are nonsense; refuse rather than overflow later


class Refresher(enum.Enum):
    """Who sends refreshes, in terms of the transaction that carried Session-Expires (§4)."""

    UAC = "uac"
    UAS = "uas"


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """``Session-Expires: delta-seconds [;refresher=uac|uas] *(;generic-param)`` (§4)."""

    interval: int
    refresher: Refresher | None = None
    params: tuple[tuple[str, str | None], ...] = ()  # other parameters, kept for fidelity

    def __str__(self) -> str:
        text = str(self.interval)
        if self.refresher is not None:
            text += f";refresher={self.refresher.value}"
        for name, value in self.params:
            text += f";{name}" if value is None else f";{name}={value}"
        return text


def _delta_seconds(text: str, header: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise RemoteProtocolError(f"{header} is not delta-seconds: {text!r}")
    value = int(text)
    if value > _MAX_DELTA:
        raise RemoteProtocolError(f"{header} out of range: {text!r}")
    return value


def _split_value(value: str) -> tuple[str, str]:
    head, sep, rest = value.strip().partition(";")
    return head.strip(), sep + rest


def parse_session_expires(value: str) -> SessionExpires:
    """Parse a Session-Expires value; malformed input raises ``RemoteProtocolError(400)``."""
    head, rest = _split_value(value)
    interval = _delta_seconds(head, "Session-Expires")
    params = parse_params(rest)
    refresher: Refresher | None = None
    others: list[tuple[str, str | None]] = []
    for name, param_value in params.items():
        if name == "refresher":
            try:
                refresher = Refresher((param_value or "").lower())
            except ValueError:
                raise RemoteProtocolError(f"bad refresher parameter {param_value!r}") from None
        else:
            others.append((name, param_value))
    return SessionExpires(interval=interval, refresher=refresher, params=tuple(others))


def parse_min_se(value: str) -> int:
    """Parse a Min-SE value (``delta-seconds *(;generic-param)``, §5)."""
    head, rest = _split_value(value)
    parse_params(rest)  # validated, then ignored: no Min-SE parameter is defined
    return _delta_seconds(head, "Min-SE")


def _session_expires_of(headers: Headers) -> SessionExpires | None:
    values = headers.get_all("Session-Expires")
    if not values:
        return None
    if len(values) > 1:
        raise RemoteProtocolError("more than one Session-Expires header field")
    return parse_session_expires(values[0])


def _min_se_of(headers: Headers) -> int | None:
    values = headers.get_all("Min-SE")
    if not values:
        return None
    if len(values) > 1:
        raise RemoteProtocolError("more than one Min-SE header field")
    return parse_min_se(values[0])


def _supports_timer(headers: Headers) -> bool:
    tags = {tag.strip().lower() for tag in headers.get_list("Supported") + headers.get_list("Require")}
    return "timer" in tags


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTimerConfig:
    """Our preferences. §4: "the recommended value ... is 1800 seconds"; §5: Min-SE at least 90."""

    session_expires: int = 1800
    min_se: int = ABSOLUTE_MIN_SE
    # Who refreshes when the choice is ours as UAS and the UAC supports timers (§9).
    preferred_refresher: Refresher = Refresher.UAC
    # §9 lets a UAS run timers (as refresher=uas) with a UAC that does not support them.
    enable_without_peer_support: bool = True

    def __post_init__(self) -> None:
        if self.min_se < ABSOLUTE_MIN_SE:
            raise LocalProtocolError(f"Min-SE must be at least {ABSOLUTE_MIN_SE} seconds (RFC 4028 §5)")
        if self.session_expires < self.min_se:
            raise LocalProtocolError("Session-Expires must not be below our Min-SE")


# -------------------------------------------------------------------------------------- UAS


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectTooSmall:
    """Answer 422 Session Interval Too Small with these headers (§6: it "MUST contain a Min-SE")."""

    min_se: int
    status_code: int = 422

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return (("Min-SE", str(self.min_se)),)


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptTimer:
    """Put ``headers`` in the 2xx and start a :class:`SessionTimer` with ``interval``/``we_refresh``."""

    interval: int
    refresher: Refresher
    we_refresh: bool
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class NoTimer:
    """No session timer for this dialog (or it is turned off by this refresh, §7.2)."""

    headers: tuple[tuple[str, str], ...] = ()


UasDecision = RejectTooSmall | AcceptTimer | NoTimer


def negotiate_uas(request_headers: Headers, config: SessionTimerConfig) -> UasDecision:
    """What a UAS answers to an INVITE or UPDATE, per RFC 4028 §9.

    Raises ``RemoteProtocolError(400)`` for a malformed Session-Expires or Min-SE.
    """
    requested = _session_expires_of(request_headers)
    their_min = _min_se_of(request_headers)
    uac_supports = _supports_timer(request_headers)
    floor = max(config.min_se, their_min or ABSOLUTE_MIN_SE)

    if requested is not None:
        if requested.interval < config.min_se:
            # §9: a UAS that finds the interval too small "MUST" reject it with 422 carrying
            # the Min-SE it would accept.
            return RejectTooSmall(min_se=config.min_se)
        # §9: "The UAS MAY reduce the interval, but MUST NOT set it to a duration lower than
        # the value in the Min-SE header field in the request" and MUST NOT increase it.
        interval = max(min(requested.interval, config.session_expires), floor)
        interval = min(interval, requested.interval)
        if not uac_supports:
            # §9: without "timer" in Supported the UAC cannot refresh: "the UAS MUST" be refresher.
            refresher = Refresher.UAS
        elif requested.refresher is not None:
            refresher = requested.refresher  # the UAC's choice stands
        else:
            refresher = config.preferred_refresher
    elif uac_supports:
        # §9: the UAC supports timers but asked for none; "the UAS MAY request a session
        # timer in the 2xx", not lower than the request's Min-SE.
        interval = max(config.session_expires, floor)
        refresher = config.preferred_refresher
    elif config.enable_without_peer_support:
        interval = max(config.session_expires, floor)
        refresher = Refresher.UAS
    else:
        return NoTimer()

    headers: list[tuple[str, str]] = [("Session-Expires", str(SessionExpires(interval=interval, refresher=refresher)))]
    if uac_supports:
        # §9: with a refresher negotiated against a UAC that supports timers, the 2xx
        # carries "Require: timer" so the UAC knows the extension is in force.
        headers.append(("Require", "timer"))
    return AcceptTimer(
        interval=interval,
        refresher=refresher,
        we_refresh=refresher is Refresher.UAS,
        headers=tuple(headers),
    )


# -------------------------------------------------------------------------------------- UAC


def uac_offer(
    config: SessionTimerConfig,
    *,
    interval: int | None = None,
    min_se: int | None = None,
    refresher: Refresher | None = None,
) -> tuple[tuple[str, str], ...]:
    """Headers for an INVITE/UPDATE we send (§7.1, and §7.4 for refreshes).

    ``interval`` defaults to our preferred Session-Expires; ``min_se`` to our Min-SE (after a
    422 pass the value from :func:`retry_after_422`). For a refresh we send as refresher, pass
    ``refresher=Refresher.UAC``; §7.1 recommends leaving it out of the initial INVITE so the UAS
    chooses.
    """
    floor = max(config.min_se, min_se or ABSOLUTE_MIN_SE)
    value = max(interval if interval is not None else config.session_expires, floor)
    return (
        # §7.1: "A UAC which supports the session timer extension ... MUST include a Supported
        # header field in each request (except ACK), listing the option tag 'timer'".
        ("Supported", "timer"),
        ("Session-Expires", str(SessionExpires(interval=value, refresher=refresher))),
        ("Min-SE", str(floor)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerAgreement:
    """The outcome of a refresh we sent and got a 2xx for."""

    interval: int
    we_refresh: bool


def read_uac_response(response_headers: Headers) -> TimerAgreement | None:
    """Read the 2xx to an INVITE/UPDATE we sent (§7.2); ``None`` means no session expiration.

    §7.2: "If the 2xx response did not contain a Session-Expires header field, there is no
    session expiration". A 2xx Session-Expires without ``refresher`` should not happen (the UAS
    MUST set it); we then refresh ourselves, which keeps the session alive either way.
    """
    accepted = _session_expires_of(response_headers)
    if accepted is None:
        return None
    if accepted.interval < ABSOLUTE_MIN_SE:
        raise RemoteProtocolError(f"Session-Expires {accepted.interval} in a 2xx is below 90 seconds")
    we_refresh = accepted.refresher is not Refresher.UAS
    return TimerAgreement(interval=accepted.interval, we_refresh=we_refresh)


def retry_after_422(
    response_headers: Headers, config: SessionTimerConfig, *, offered_interval: int
) -> tuple[tuple[str, str], ...]:
    """Headers for the retry after a 422 (§7.3).

    §7.3: the UAC "MUST insert a Min-SE header field ... the largest value" received, and the
    new Session-Expires must be at least that large. A 422 without Min-SE (or one asking for
    less than we offered, which would loop) raises ``RemoteProtocolError``.
    """
    demanded = _min_se_of(response_headers)
    if demanded is None:
        raise RemoteProtocolError("422 without Min-SE", is_response=True)
    if demanded <= offered_interval:
        raise RemoteProtocolError(
            f"422 asks for Min-SE {demanded} but {offered_interval} was offered", is_response=True
        )
    return uac_offer(config, interval=demanded, min_se=demanded)


# -------------------------------------------------------------------------------- the timer


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshDue:
    """We are the refresher and half the interval has passed: send re-INVITE or UPDATE (§10)."""

    interval: int
    expires_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionExpired:
    """No refresh arrived in time: send BYE (§10: "it SHOULD send a BYE request")."""

    interval: int


SessionTimerEvent = RefreshDue | SessionExpired


@dataclass(slots=True)
class _Running:
    interval: int
    we_refresh: bool
    started_at: float
    refresh_sent: bool = False


class SessionTimer:
    """One dialog's session timer: ``start`` at every successful refresh, ``stop`` at BYE.

    When we refresh, :class:`RefreshDue` fires at half the interval ("it is RECOMMENDED that the
    refresh be sent once half the session interval has elapsed", §10) and, if no new ``start``
    follows, :class:`SessionExpired` at the full interval. When the peer refreshes,
    :class:`SessionExpired` fires at ``interval - min(32, interval / 3)`` (§10: the BYE goes
    "slightly before the session expiration").
    """

    __slots__ = ("_events", "_running")

    def __init__(self) -> None:
        self._running: _Running | None = None
        self._events: list[SessionTimerEvent] = []

    def start(self, *, interval: int, we_refresh: bool, now: float) -> None:
        if interval <= 0:
            raise LocalProtocolError("session interval must be positive")
        self._running = _Running(interval=interval, we_refresh=we_refresh, started_at=now)

    def apply(self, outcome: AcceptTimer | TimerAgreement | NoTimer | None, *, now: float) -> None:
        """Start, restart or stop from a negotiation outcome (UAS decision or UAC agreement)."""
        if isinstance(outcome, AcceptTimer | TimerAgreement):
            self.start(interval=outcome.interval, we_refresh=outcome.we_refresh, now=now)
        else:
            self.stop()

    def stop(self) -> None:
        self._running = None

    @property
    def running(self) -> bool:
        return self._running is not None

    @property
    def we_refresh(self) -> bool | None:
        return None if self._running is None else self._running.we_refresh

    @property
    def interval(self) -> int | None:
        return None if self._running is None else self._running.interval

    def get_timer(self) -> float | None:
        run = self._running
        if run is None:
            return None
        if run.we_refresh:
            if not run.refresh_sent:
                return run.started_at + run.interval / 2
            return run.started_at + run.interval
        return run.started_at + run.interval - min(32.0, run.interval / 3)

    def handle_timer(self, now: float) -> None:
        deadline = self.get_timer()
        run = self._running
        if deadline is None or run is None or now < deadline:
            return
        if run.we_refresh and not run.refresh_sent:
            run.refresh_sent = True
            self._events.append(RefreshDue(interval=run.interval, expires_at=run.started_at + run.interval))
            # a long-delayed call may already be past expiry too
            if now < run.started_at + run.interval:
                return
        self._events.append(SessionExpired(interval=run.interval))
        self._running = None

    def events(self) -> Iterator[SessionTimerEvent]:
        """Drain the events produced so far, oldest first."""
        while self._events:
            yield self._events.pop(0)
