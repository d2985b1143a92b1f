"""Client transactions: RFC 3261 §17.1.1 (INVITE, Figure 5, amended by RFC 6026 §7.2 / Figure 5 with the
Accepted state and Timer M) and §17.1.2 (non-INVITE, Figure 6).

The INVITE client transaction also builds the ACK for a non-2xx final response (§17.1.1.3) and the CANCEL of
its request (§9.1), which it holds until a provisional response has arrived.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final

from gateway.sip.headers import Headers
from gateway.sip.message import Request, Response
from gateway.sip.tx_common import TimerName, Transaction, TransactionHost
from gateway.sip.tx_events import (
    Addr,
    ClientTransactionId,
    ClientTransactionTimeout,
    Outgoing,
    ResponseReceived,
)


class ClientInput(Enum):
    """What can happen to a client transaction."""

    PROVISIONAL = auto()  # 1xx received
    SUCCESS = auto()  # 2xx received
    FAILURE = auto()  # 300-699 received
    TIMER_A = auto()
    TIMER_B = auto()
    TIMER_D = auto()
    TIMER_E = auto()
    TIMER_F = auto()
    TIMER_K = auto()
    TIMER_M = auto()
    CANCEL_EXPIRY = auto()
    TRANSPORT_ERROR = auto()


class ClientAction(Enum):
    """The arrow labels of Figures 5 and 6."""

    PASS_TO_TU = auto()  # resp. to TU
    RESEND_REQUEST = auto()  # Timer A/E fires: "send request"
    BACKOFF_TIMER_A = auto()  # reset A with twice its value
    BACKOFF_TIMER_E = auto()  # reset E with MIN(2*E, T2) (Trying)
    RESET_TIMER_E_T2 = auto()  # reset E with T2 (Proceeding)
    SEND_ACK = auto()  # 300-699: send ACK
    START_TIMER_D = auto()
    START_TIMER_K = auto()
    START_TIMER_M = auto()
    SEND_HELD_CANCEL = auto()  # §9.1: the CANCEL waited for a provisional response
    REPORT_TIMEOUT = auto()  # Timer B/F or transport error: inform TU
    ABSORB = auto()  # a retransmitted response the TU must not see again


class InviteClientState(Enum):
    CALLING = auto()
    PROCEEDING = auto()
    COMPLETED = auto()
    ACCEPTED = auto()  # RFC 6026
    TERMINATED = auto()


_IC = InviteClientState
_CI = ClientInput
_CA = ClientAction

# RFC 3261 Figure 5 as amended by RFC 6026 Figure 5 (2xx -> Accepted, Timer M), plus the §9.1 CANCEL expiry.
INVITE_CLIENT_TRANSITIONS: Final[
    dict[tuple[InviteClientState, ClientInput], tuple[InviteClientState, tuple[ClientAction, ...]]]
] = {
    (_IC.CALLING, _CI.TIMER_A): (_IC.CALLING, (_CA.RESEND_REQUEST, _CA.BACKOFF_TIMER_A)),
    (_IC.CALLING, _CI.TIMER_B): (_IC.TERMINATED, (_CA.REPORT_TIMEOUT,)),
    (_IC.CALLING, _CI.TRANSPORT_ERROR): (_IC.TERMINATED, (_CA.REPORT_TIMEOUT,)),
    (_IC.CALLING, _CI.PROVISIONAL): (_IC.PROCEEDING, (_CA.PASS_TO_TU, _CA.SEND_HELD_CANCEL)),
    (_IC.CALLING, _CI.SUCCESS): (_IC.ACCEPTED, (_CA.PASS_TO_TU, _CA.START_TIMER_M)),
    (_IC.CALLING, _CI.FAILURE): (_IC.COMPLETED, (_CA.SEND_ACK, _CA.PASS_TO_TU, _CA.START_TIMER_D)),
    (_IC.PROCEEDING, _CI.PROVISIONAL): (_IC.PROCEEDING, (_CA.PASS_TO_TU,)),
    (_IC.PROCEEDING, _CI.SUCCESS): (_IC.ACCEPTED, (_CA.PASS_TO_TU, _CA.START_TIMER_M)),
    (_IC.PROCEEDING, _CI.FAILURE): (_IC.COMPLETED, (_CA.SEND_ACK, _CA.PASS_TO_TU, _CA.START_TIMER_D)),
    (_IC.PROCEEDING, _CI.CANCEL_EXPIRY): (_IC.TERMINATED, (_CA.REPORT_TIMEOUT,)),
    (_IC.PROCEEDING, _CI.TRANSPORT_ERROR): (_IC.TERMINATED, (_CA.REPORT_TIMEOUT,)),
    (_IC.COMPLETED, _CI.FAILURE): (_IC.COMPLETED, (_CA.SEND_ACK, _CA.ABSORB)),
    (_IC.COMPLETED, _CI.TIMER_D): (_IC.TERMINATED, ()),
    (_IC.COMPLETED, _CI.TRANSPORT_ERROR): (_IC.TERMINATED, ()),
    (_IC.ACCEPTED, _CI.SUCCESS): (_IC.ACCEPTED, (_CA.PASS_TO_TU,)),  # the TU ACKs every 2xx (§13.2.2.4)
    (_IC.ACCEPTED, _CI.TIMER_M): (_IC.TERMINATED, ()),
}

# The timers each state runs; entering a state stops the others.
INVITE_CLIENT_TIMERS: Final[dict[InviteClientState, frozenset[TimerName]]] = {
    _IC.CALLING: frozenset({TimerName.A, TimerName.B}),
    _IC.PROCEEDING: frozenset({TimerName.CANCEL_EXPIRY}),
    _IC.COMPLETED: frozenset({TimerName.D}),
    _IC.ACCEPTED: frozenset({TimerName.M}),
    _IC.TERMINATED: frozenset(),
}


class NonInviteClientState(Enum):
    TRYING = auto()
    PROCEEDING = auto()
    COMPLETED = auto()
    TERMINATED = auto()


_NC = NonInviteClientState

# RFC 3261 Figure 6.
NON_INVITE_CLIENT_TRANSITIONS: Final[
    dict[tuple[NonInviteClientState, ClientInput], tuple[NonInviteClientState, tuple[ClientAction, ...]]]
] = {
    (_NC.TRYING, _CI.TIMER_E): (_NC.TRYING, (_CA.RESEND_REQUEST, _CA.BACKOFF_TIMER_E)),
    (_NC.TRYING, _CI.TIMER_F): (_NC.TERMINATED, (_CA.REPORT_TIMEOUT,)),
    (_NC.TRYING, _CI.TRANSPORT_ERROR): (_NC.TERMINATED, (_CA.REPORT_TIMEOUT,)),
    (_NC.TRYING, _CI.PROVISIONAL): (_NC.PROCEEDING, (_CA.PASS_TO_TU,)),
    (_NC.TRYING, _CI.SUCCESS): (_NC.COMPLETED, (_CA.PASS_TO_TU, _CA.START_TIMER_K)),
    (_NC.TRYING, _CI.FAILURE): (_NC.COMPLETED, (_CA.PASS_TO_TU, _CA.START_TIMER_K)),
    (_NC.PROCEEDING, _CI.TIMER_E): (_NC.PROCEEDING, (_CA.RESEND_REQUEST, _CA.RESET_TIMER_E_T2)),
    (_NC.PROCEEDING, _CI.TIMER_F): (_NC.TERMINATED, (_CA.REPORT_TIMEOUT,)),
    (_NC.PROCEEDING, _CI.TRANSPORT_ERROR): (_NC.TERMINATED, (_CA.REPORT_TIMEOUT,)),
    (_NC.PROCEEDING, _CI.PROVISIONAL): (_NC.PROCEEDING, (_CA.PASS_TO_TU,)),
    (_NC.PROCEEDING, _CI.SUCCESS): (_NC.COMPLETED, (_CA.PASS_TO_TU, _CA.START_TIMER_K)),
    (_NC.PROCEEDING, _CI.FAILURE): (_NC.COMPLETED, (_CA.PASS_TO_TU, _CA.START_TIMER_K)),
    (_NC.COMPLETED, _CI.PROVISIONAL): (_NC.COMPLETED, (_CA.ABSORB,)),
    (_NC.COMPLETED, _CI.SUCCESS): (_NC.COMPLETED, (_CA.ABSORB,)),
    (_NC.COMPLETED, _CI.FAILURE): (_NC.COMPLETED, (_CA.ABSORB,)),
    (_NC.COMPLETED, _CI.TIMER_K): (_NC.TERMINATED, ()),
}

NON_INVITE_CLIENT_TIMERS: Final[dict[NonInviteClientState, frozenset[TimerName]]] = {
    _NC.TRYING: frozenset({TimerName.E, TimerName.F}),
    _NC.PROCEEDING: frozenset({TimerName.E, TimerName.F}),
    _NC.COMPLETED: frozenset({TimerName.K}),
    _NC.TERMINATED: frozenset(),
}

_TIMER_INPUTS: Final[dict[TimerName, ClientInput]] = {
    TimerName.A: _CI.TIMER_A,
    TimerName.B: _CI.TIMER_B,
    TimerName.D: _CI.TIMER_D,
    TimerName.E: _CI.TIMER_E,
    TimerName.F: _CI.TIMER_F,
    TimerName.K: _CI.TIMER_K,
    TimerName.M: _CI.TIMER_M,
    TimerName.CANCEL_EXPIRY: _CI.CANCEL_EXPIRY,
}


def response_input(status_code: int) -> ClientInput:
    if status_code < 200:
        return ClientInput.PROVISIONAL
    if status_code < 300:
        return ClientInput.SUCCESS
    return ClientInput.FAILURE


def _copied_fields(request: Request, *, to: str, method: str) -> Headers:
    """The header fields an ACK (§17.1.1.3) or CANCEL (§9.1) shares with the request it refers to."""
    headers = Headers()
    # "The ACK MUST contain a single Via header field, and this MUST be equal to the top Via header field
    # of the original request." / "A CANCEL ... MUST have only a single Via header field value matching the
    # top Via value in the request being cancelled."
    headers.add("Via", request.headers.get_list("Via")[0])
    headers.add("Max-Forwards", request.headers.get("Max-Forwards") or "70")
    headers.add("From", _required(request, "From"))
    headers.add("To", to)
    headers.add("Call-ID", _required(request, "Call-ID"))
    headers.add("CSeq", f"{request.cseq.seq} {method}")
    # "If the INVITE request whose response is being acknowledged had Route header fields, those header
    # fields MUST appear in the ACK." (§9.1 demands the same of CANCEL.)
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    return headers


def _required(request: Request, name: str) -> str:
    value = request.headers.get(name)
    assert value is not None, f"{name} checked when the request was sent"
    return value


def build_ack(request: Request, response: Response) -> Request:
    """RFC 3261 §17.1.1.3: the ACK for a non-2xx final response: Request-URI, Call-ID, From, CSeq number and
    the single Via of the INVITE; "The To header field in the ACK MUST equal the To header field in the
    response being acknowledged"."""
    to = response.headers.get("To")
    assert to is not None, "responses without To are rejected by the parser"
    return Request("ACK", request.uri, _copied_fields(request, to=to, method="ACK"))


def build_cancel(request: Request) -> Request:
    """RFC 3261 §9.1: "The Request-URI, Call-ID, To, the numeric part of CSeq, and From header fields in the
    CANCEL request MUST be identical to those in the request being cancelled, including tags"."""
    return Request(
        "CANCEL", request.uri, _copied_fields(request, to=_required(request, "To"), method="CANCEL")
    )


class ClientTransaction(Transaction):
    """State shared by both client machines: the request, its bytes, and the TU-facing id."""

    __slots__ = ("data", "request", "tx_id")

    def __init__(
        self,
        host: TransactionHost,
        tx_id: ClientTransactionId,
        request: Request,
        *,
        destination: Addr,
        transport: str,
    ) -> None:
        super().__init__(host, destination=destination, transport=transport)
        self.tx_id = tx_id
        self.request = request
        self.data = request.serialize()

    def start(self, now: float) -> None:
        raise NotImplementedError

    def on_response(self, response: Response, source: Addr, now: float) -> None:
        raise NotImplementedError

    def send_request(self) -> None:
        self.host.send(Outgoing(data=self.data, destination=self.destination, transport=self.transport))

    def pass_to_tu(self, response: Response, source: Addr | None) -> None:
        assert source is not None
        self.host.emit(ResponseReceived(response=response, client_tx=self.tx_id, source=source))

    def report_timeout(self) -> None:
        self.host.emit(ClientTransactionTimeout(client_tx=self.tx_id, request=self.request))


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.1 / RFC 6026 §7.2."""

    __slots__ = ("ack_data", "cancel_requested", "state")

    def __init__(
        self,
        host: TransactionHost,
        tx_id: ClientTransactionId,
        request: Request,
        *,
        destination: Addr,
        transport: str,
    ) -> None:
        super().__init__(host, tx_id, request, destination=destination, transport=transport)
        self.state = InviteClientState.CALLING
        self.ack_data: bytes | None = None
        self.cancel_requested = False

    @property
    def is_terminated(self) -> bool:
        return self.state is InviteClientState.TERMINATED

    def start(self, now: float) -> None:
        """Enter Calling: "The client transaction MUST pass the request to the transport layer"; Timer A only
        on an unreliable transport; "For any transport, the client transaction MUST start timer B"."""
        timers = self.host.timers
        self.send_request()
        if not self.reliable:
            self.interval = timers.timer_a
            self.start_timer(TimerName.A, self.interval, now)
        self.start_timer(TimerName.B, timers.timer_b, now)

    def on_response(self, response: Response, source: Addr, now: float) -> None:
        self.fire(response_input(response.status_code), now, response=response, source=source)

    def on_timer(self, name: TimerName, now: float) -> None:
        self.fire(_TIMER_INPUTS[name], now)

    def on_transport_error(self, now: float) -> None:
        self.fire(ClientInput.TRANSPORT_ERROR, now)

    def request_cancel(self, now: float) -> bool:
        """§9.1: "If no provisional response has been received, the CANCEL request MUST NOT be sent; rather,
        the client MUST wait for the arrival of a provisional response"; "If the original request has
        generated a final response, the CANCEL SHOULD NOT be sent". Returns whether it was sent or held."""
        if self.cancel_requested:
            return True
        if self.state is InviteClientState.CALLING:
            self.cancel_requested = True
            return True
        if self.state is InviteClientState.PROCEEDING:
            self.cancel_requested = True
            self._send_cancel(now)
            return True
        return False

    def _send_cancel(self, now: float) -> None:
        self.host.start_cancel(
            build_cancel(self.request), destination=self.destination, transport=self.transport, now=now
        )
        # §9.1: "If there is no final response for the original request in 64*T1 seconds ..., the client
        # SHOULD then consider the original transaction cancelled and SHOULD destroy the client transaction".
        self.start_timer(TimerName.CANCEL_EXPIRY, self.host.timers.cancel_expiry, now)

    def fire(
        self, event: ClientInput, now: float, *, response: Response | None = None, source: Addr | None = None
    ) -> None:
        transition = INVITE_CLIENT_TRANSITIONS.get((self.state, event))
        if transition is None:
            self.host.counters[f"invite_client_{event.name.lower()}_ignored"] += 1
            return
        self.state, actions = transition
        self.keep_only_timers(INVITE_CLIENT_TIMERS[self.state])
        timers = self.host.timers
        for action in actions:
            match action:
                case ClientAction.PASS_TO_TU:
                    assert response is not None
                    self.pass_to_tu(response, source)
                case ClientAction.RESEND_REQUEST:
                    self.send_request()
                case ClientAction.BACKOFF_TIMER_A:
                    # "MUST reset the timer with a value of 2*T1" ... doubling each time.
                    self.interval *= 2
                    self.start_timer(TimerName.A, self.interval, now)
                case ClientAction.SEND_ACK:
                    assert response is not None
                    if self.ack_data is None:
                        self.ack_data = build_ack(self.request, response).serialize()
                    self.host.send(
                        Outgoing(data=self.ack_data, destination=self.destination, transport=self.transport)
                    )
                case ClientAction.START_TIMER_D:
                    self.start_timer(TimerName.D, 0.0 if self.reliable else timers.timer_d, now)
                case ClientAction.START_TIMER_M:
                    self.start_timer(TimerName.M, timers.timer_m, now)
                case ClientAction.SEND_HELD_CANCEL:
                    if self.cancel_requested:
                        self._send_cancel(now)
                case ClientAction.REPORT_TIMEOUT:
                    self.report_timeout()
                case ClientAction.ABSORB:
                    self.host.counters["response_retransmission"] += 1
                case _:
                    raise AssertionError(f"{action} is not an INVITE client action")
        if (zero := self.take_zero_timer()) is not None:
            self.fire(_TIMER_INPUTS[zero], now)
        elif self.state is InviteClientState.TERMINATED:
            self.host.remove(self)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2."""

    __slots__ = ("state",)

    def __init__(
        self,
        host: TransactionHost,
        tx_id: ClientTransactionId,
        request: Request,
        *,
        destination: Addr,
        transport: str,
    ) -> None:
        super().__init__(host, tx_id, request, destination=destination, transport=transport)
        self.state = NonInviteClientState.TRYING

    @property
    def is_terminated(self) -> bool:
        return self.state is NonInviteClientState.TERMINATED

    def start(self, now: float) -> None:
        """Enter Trying: send; "If an unreliable transport is in use, the client transaction MUST set timer E
        to fire in T1 seconds"; Timer F (64*T1) for any transport."""
        timers = self.host.timers
        self.send_request()
        if not self.reliable:
            self.interval = timers.timer_e
            self.start_timer(TimerName.E, self.interval, now)
        self.start_timer(TimerName.F, timers.timer_f, now)

    def on_response(self, response: Response, source: Addr, now: float) -> None:
        self.fire(response_input(response.status_code), now, response=response, source=source)

    def on_timer(self, name: TimerName, now: float) -> None:
        self.fire(_TIMER_INPUTS[name], now)

    def on_transport_error(self, now: float) -> None:
        self.fire(ClientInput.TRANSPORT_ERROR, now)

    def fire(
        self, event: ClientInput, now: float, *, response: Response | None = None, source: Addr | None = None
    ) -> None:
        transition = NON_INVITE_CLIENT_TRANSITIONS.get((self.state, event))
        if transition is None:
            self.host.counters[f"non_invite_client_{event.name.lower()}_ignored"] += 1
            return
        self.state, actions = transition
        self.keep_only_timers(NON_INVITE_CLIENT_TIMERS[self.state])
        timers = self.host.timers
        for action in actions:
            match action:
                case ClientAction.PASS_TO_TU:
                    assert response is not None
                    self.pass_to_tu(response, source)
                case ClientAction.RESEND_REQUEST:
                    self.send_request()
                case ClientAction.BACKOFF_TIMER_E:
                    # "reset ... with a value of MIN(2*T1, T2)", then MIN(4*T1, T2), and so on.
                    self.interval = min(2 * self.interval, timers.t2)
                    self.start_timer(TimerName.E, self.interval, now)
                case ClientAction.RESET_TIMER_E_T2:
                    # "Timer E MUST be reset with a value of T2 seconds" while Proceeding.
                    self.interval = timers.t2
                    self.start_timer(TimerName.E, self.interval, now)
                case ClientAction.START_TIMER_K:
                    self.start_timer(TimerName.K, 0.0 if self.reliable else timers.timer_k, now)
                case ClientAction.REPORT_TIMEOUT:
                    self.report_timeout()
                case ClientAction.ABSORB:
                    self.host.counters["response_retransmission"] += 1
                case _:
                    raise AssertionError(f"{action} is not a non-INVITE client action")
        if (zero := self.take_zero_timer()) is not None:
            self.fire(_TIMER_INPUTS[zero], now)
        elif self.state is NonInviteClientState.TERMINATED:
            self.host.remove(self)
