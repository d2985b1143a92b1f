"""Call transfer with REFER, sans-IO: RFC 3515 (REFER and its implicit ``refer`` subscription), RFC 3892
(Referred-By), RFC 3420 (``message/sipfrag`` NOTIFY bodies), RFC 6665 §4.1.3 (Subscription-State).

Builders for the header values (Refer-To, Referred-By) and parsers for what comes back (the sipfrag
status line, Subscription-State, the Event package), plus :class:`ReferTransfer`: the transferor's view of
one REFER, from the REFER's final response through the NOTIFYs to the outcome. Inputs carry ``now``; the
one timer (a final NOTIFY must arrive within ``notify_timeout`` of the 202) is ``get_timer``/``handle_timer``.

State machine (RFC 3515 §2.4.4-§2.4.7; there is no figure, the transitions follow its text)::

    SENT ──2xx──► ACCEPTED ──NOTIFY 1xx──► ACCEPTED
      │              │ NOTIFY 2xx ───────► SUCCEEDED
      │              │ NOTIFY ≥300, terminated without a final status, or timer ─► FAILED
      └── ≥300 or no response ──► REJECTED   (the transferor may then complete the transfer itself)

A NOTIFY may overtake the 202 (§2.4.4: the NOTIFY can arrive first): it counts as acceptance.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import quote

from gateway.sip.errors import LocalProtocolError, RemoteProtocolError
from gateway.sip.fields import NameAddr
from gateway.sip.grammar import parse_params
from gateway.sip.uri import SipUri

__all__ = [
    "NotifyVerdict",
    "ReferAccepted",
    "ReferEvent",
    "ReferFailed",
    "ReferProgress",
    "ReferRejected",
    "ReferState",
    "ReferSucceeded",
    "ReferTransfer",
    "SipfragStatus",
    "SubscriptionState",
    "is_refer_event",
    "number_uri",
    "parse_sipfrag",
    "parse_subscription_state",
    "refer_to_value",
    "referred_by_value",
]

SIPFRAG = "message/sipfrag"
_STATUS_LINE = re.compile(r"^SIP/(\d+)\.(\d+) ([1-6]\d\d)(?: ([^\r\n]*))?$", re.IGNORECASE)
# Dial strings a number destination may carry: E.164 digits with visual separators, * and # (RFC 3966 §5.1.1).
_NUMBER = re.compile(r"^\+?[0-9*#]+$")
_VISUAL_SEPARATORS = str.maketrans("", "", " -.()")


# ---------------------------------------------------------------------------------------------- builders


def number_uri(number: str, host: str, port: int | None = None) -> SipUri:
    """``sip:<number>@host[:port];user=phone`` for a telephone-number destination dialled through ``host``.

    Visual separators are dropped (RFC 3966 §5.1.1); anything else that is not a dial string raises
    :class:`LocalProtocolError`, so a destination can never smuggle a host or parameters into the URI."""
    digits = number.strip().translate(_VISUAL_SEPARATORS)
    if not _NUMBER.match(digits):
        raise LocalProtocolError(f"not a telephone number: {number[:40]!r}")
    return SipUri(host=host, port=port, user=digits, params={"user": "phone"})


def refer_to_value(target: SipUri, headers: dict[str, str] | None = None) -> str:
    """The Refer-To header value (RFC 3515 §2.1): ``<target>`` in name-addr form, so URI parameters stay
    with the URI. ``headers`` become URI headers (§19.1.1 ``?name=value&...``), which the transferee copies
    into its INVITE (RFC 3515 §2.1: "the URI ... MAY contain ... headers")."""
    uri = target.copy()
    if headers:
        uri.headers = "&".join(f"{quote(name, safe='-_.!~*()')}={quote(value, safe='-_.!~*()+')}"
                               for name, value in headers.items())
    return str(NameAddr(uri=uri))


def referred_by_value(referrer: SipUri) -> str:
    """The Referred-By header value (RFC 3892 §3): who asked for the transfer, here our own AOR."""
    uri = referrer.copy()
    uri.params.pop("tag", None)
    uri.headers = None
    return str(NameAddr(uri=uri))


# ---------------------------------------------------------------------------------------------- parsers


@dataclass(frozen=True, slots=True, kw_only=True)
class SipfragStatus:
    """The status line a ``message/sipfrag`` NOTIFY body reports (RFC 3515 §2.4.5)."""

    status_code: int
    reason: str

    @property
    def final(self) -> bool:
        return self.status_code >= 200

    @property
    def success(self) -> bool:
        return 200 <= self.status_code < 300


def parse_sipfrag(body: bytes) -> SipfragStatus:
    """The Status-Line at the start of a sipfrag body. Raises :class:`RemoteProtocolError` (400) otherwise.

    RFC 3515 §2.4.5: "Each NOTIFY MUST contain a body of type "message/sipfrag" ... The body of a NOTIFY
    MUST begin with a SIP Response Status-Line." Header fields after it (RFC 3420 allows any) are ignored."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("sipfrag is not UTF-8", status_code=400) from None
    first = text.lstrip("\r\n").split("\n", 1)[0].rstrip("\r")
    match = _STATUS_LINE.match(first)
    if match is None:
        raise RemoteProtocolError(f"sipfrag does not start with a Status-Line: {first[:60]!r}", status_code=400)
    if (match.group(1), match.group(2)) != ("2", "0"):
        raise RemoteProtocolError(f"sipfrag SIP version {match.group(1)}.{match.group(2)}", status_code=400)
    reason = (match.group(4) or "").strip()
    if any(ord(c) < 0x20 and c != "\t" for c in reason):
        raise RemoteProtocolError("control character in the sipfrag Reason-Phrase", status_code=400)
    return SipfragStatus(status_code=int(match.group(3)), reason=reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionState:
    """``Subscription-State`` (RFC 6665 §8.2.3): ``active``, ``pending``, ``terminated`` (or an extension)."""

    state: str
    reason: str | None = None
    expires: int | None = None

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"


def parse_subscription_state(value: str) -> SubscriptionState:
    """Parse a Subscription-State value; raises :class:`RemoteProtocolError` (400) when malformed."""
    head, _, rest = value.strip().partition(";")
    state = head.strip().lower()
    if not state or not re.fullmatch(r"[A-Za-z0-9.!%*_+`'~-]+", state):
        raise RemoteProtocolError(f"invalid Subscription-State {value[:60]!r}", status_code=400)
    params = parse_params(";" + rest) if rest.strip() else {}
    expires: int | None = None
    raw = params.get("expires")
    if raw is not None:
        if not raw.isdigit() or len(raw) > 10:
            raise RemoteProtocolError(f"invalid Subscription-State expires {raw[:20]!r}", status_code=400)
        expires = int(raw)
    reason = params.get("reason")
    return SubscriptionState(state=state, reason=reason.lower() if reason else None, expires=expires)


def is_refer_event(value: str | None) -> bool:
    """The Event header names the ``refer`` package (RFC 3515 §3: "Event: refer", maybe with ``;id=``)."""
    return value is not None and value.split(";", 1)[0].strip().lower() == "refer"


# ---------------------------------------------------------------------------------------------- state machine


class ReferState(enum.Enum):
    SENT = "sent"
    ACCEPTED = "accepted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


class _Input(enum.Enum):
    ACCEPT = "2xx to REFER, or a NOTIFY first"
    REJECT = ">=300 to REFER, or no response"
    PROGRESS = "NOTIFY 1xx"
    SUCCESS = "NOTIFY 2xx"
    FAILURE = "NOTIFY >=300, terminated without a final status, or the timer"


_TRANSITIONS: dict[tuple[ReferState, _Input], ReferState] = {
    (ReferState.SENT, _Input.ACCEPT): ReferState.ACCEPTED,
    (ReferState.SENT, _Input.REJECT): ReferState.REJECTED,
    (ReferState.SENT, _Input.PROGRESS): ReferState.ACCEPTED,
    (ReferState.SENT, _Input.SUCCESS): ReferState.SUCCEEDED,
    (ReferState.SENT, _Input.FAILURE): ReferState.FAILED,
    (ReferState.ACCEPTED, _Input.PROGRESS): ReferState.ACCEPTED,
    (ReferState.ACCEPTED, _Input.SUCCESS): ReferState.SUCCEEDED,
    (ReferState.ACCEPTED, _Input.FAILURE): ReferState.FAILED,
    # A REFER response after a NOTIFY told us more changes nothing; nor does anything after the outcome.
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferAccepted:
    status_code: int | None  # None: a NOTIFY arrived before the REFER's response


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferProgress:
    status_code: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferSucceeded:
    status_code: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferFailed:
    """The transferee tried and failed (``status_code`` from the sipfrag), or never said (``None``)."""

    status_code: int | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferRejected:
    """The REFER itself was refused (``status_code``) or not answered (``None``)."""

    status_code: int | None
    reason: str


ReferEvent = ReferAccepted | ReferProgress | ReferSucceeded | ReferFailed | ReferRejected


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyVerdict:
    """How to answer a NOTIFY: ``status_code`` (200, or 400 for a body we cannot read)."""

    status_code: int
    reason: str | None = None


class ReferTransfer:
    """The transferor's side of one REFER (see module doc). Feed it the REFER's final response and every
    NOTIFY of the ``refer`` subscription; read what happened from :meth:`events` and :attr:`state`."""

    def __init__(self, *, now: float, notify_timeout: float = 32.0) -> None:
        self.state = ReferState.SENT
        self.notify_timeout = notify_timeout
        self._deadline: float | None = None
        self._started = now
        self._events: list[ReferEvent] = []

    @property
    def done(self) -> bool:
        return self.state in (ReferState.SUCCEEDED, ReferState.FAILED, ReferState.REJECTED)

    def _fire(self, inp: _Input, event: ReferEvent, now: float) -> None:
        new = _TRANSITIONS.get((self.state, inp))
        if new is None:
            return  # ignored in this state (see the table)
        if self.state is ReferState.SENT and new is not ReferState.REJECTED and not isinstance(event, ReferAccepted):
            self._events.append(ReferAccepted(status_code=None))
        if self.state is ReferState.SENT and new is not ReferState.REJECTED:
            # §2.4.7: the subscription lasts until a final NOTIFY; we wait for it no longer than the timer.
            self._deadline = now + self.notify_timeout
        self.state = new
        self._events.append(event)
        if self.done:
            self._deadline = None

    def on_refer_response(self, status_code: int | None, reason: str = "", *, now: float) -> None:
        """The REFER's final response (None: the transaction timed out)."""
        if status_code is not None and status_code < 200:
            return
        if status_code is not None and status_code < 300:
            self._fire(_Input.ACCEPT, ReferAccepted(status_code=status_code), now)
        else:
            self._fire(_Input.REJECT, ReferRejected(
                status_code=status_code, reason=reason if status_code is not None else reason or "no response"
            ), now)

    def on_notify(self, *, event: str | None, subscription_state: str | None, content_type: str | None,
                  body: bytes, now: float) -> NotifyVerdict:
        """One NOTIFY of the subscription; returns how to answer it. A NOTIFY for another package is
        answered 489 (RFC 6665 §4.1.3: "Bad Event")."""
        if not is_refer_event(event):
            return NotifyVerdict(status_code=489, reason="Bad Event")
        terminated = False
        if subscription_state is not None:
            try:
                terminated = parse_subscription_state(subscription_state).terminated
            except RemoteProtocolError as exc:
                return NotifyVerdict(status_code=400, reason=exc.reason)
        status: SipfragStatus | None = None
        verdict = NotifyVerdict(status_code=200)
        ctype = (content_type or "").split(";", 1)[0].strip().lower()
        if body:
            if ctype != SIPFRAG:
                verdict = NotifyVerdict(status_code=415, reason="Unsupported Media Type")
            else:
                try:
                    status = parse_sipfrag(body)
                except RemoteProtocolError as exc:
                    verdict = NotifyVerdict(status_code=400, reason=exc.reason)
        if status is not None and status.success:
            self._fire(_Input.SUCCESS, ReferSucceeded(status_code=status.status_code, reason=status.reason), now)
        elif status is not None and status.final:
            self._fire(_Input.FAILURE, ReferFailed(status_code=status.status_code, reason=status.reason), now)
        elif terminated:
            # §2.4.7: the subscription ended without telling us the referenced request succeeded.
            self._fire(_Input.FAILURE, ReferFailed(status_code=status.status_code if status else None,
                                                   reason="subscription terminated"), now)
        elif status is not None:
            self._fire(_Input.PROGRESS, ReferProgress(status_code=status.status_code, reason=status.reason), now)
        elif verdict.status_code == 200:
            self._fire(_Input.PROGRESS, ReferProgress(status_code=100, reason=""), now)
        return verdict

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            self._fire(_Input.FAILURE, ReferFailed(status_code=None, reason="no final NOTIFY"), now)

    def events(self) -> list[ReferEvent]:
        """What happened since the last call, oldest first."""
        out, self._events = self._events, []
        return out
