"""Server transactions: RFC 3261 §17.2.1 (INVITE, Figure 7, amended by RFC 6026 §7.1 / Figure 7 with the
Accepted state and Timer L) and §17.2.2 (non-INVITE, Figure 8).

While Accepted, the INVITE server transaction also does the UAS core's duty of §13.3.1.4: on an unreliable
transport it retransmits the 2xx "with an interval that starts at T1 seconds and doubles for each
retransmission until it reaches T2 seconds" until the ACK arrives, and reports :class:`AckTimeout` when
Timer L (64*T1) fires without one.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final

from gateway.sip.errors import LocalProtocolError
from gateway.sip.message import Request, Response
from gateway.sip.tx_common import TimerName, Transaction, TransactionHost
from gateway.sip.tx_events import AckReceived, AckTimeout, Addr, Outgoing, ServerTransactionId


class ServerInput(Enum):
    """What can happen to a server transaction."""

    REQUEST_RETRANSMISSION = auto()
    ACK = auto()
    TU_PROVISIONAL = auto()  # 1xx from TU
    TU_SUCCESS = auto()  # 2xx from TU
    TU_FAILURE = auto()  # 300-699 from TU
    TIMER_G = auto()
    TIMER_H = auto()
    TIMER_I = auto()
    TIMER_J = auto()
    TIMER_L = auto()
    TIMER_2XX = auto()
    TRANSPORT_ERROR = auto()


TU_INPUTS: Final = frozenset({ServerInput.TU_PROVISIONAL, ServerInput.TU_SUCCESS, ServerInput.TU_FAILURE})


class ServerAction(Enum):
    """The arrow labels of Figures 7 and 8."""

    SEND_RESPONSE = auto()  # "send response" (the TU's new response)
    RESEND_RESPONSE = auto()  # request retransmission or Timer G: send the last response again
    ABSORB_REQUEST = auto()  # a retransmission with nothing to answer it with yet
    START_TIMER_G = auto()
    BACKOFF_TIMER_G = auto()  # "reset with a value of MIN(2*T1, T2)" ...
    START_TIMER_H = auto()
    START_TIMER_I = auto()
    START_TIMER_J = auto()
    START_TIMER_L = auto()
    START_TIMER_2XX = auto()
    BACKOFF_TIMER_2XX = auto()
    ACCEPT_ACK = auto()  # RFC 6026: the ACK of a 2xx goes to the TU (once); 2xx retransmission stops
    ABSORB_ACK = auto()
    REPORT_ACK_TIMEOUT = auto()  # Timer L with no ACK: AckTimeout; Timer H: counted


class InviteServerState(Enum):
    PROCEEDING = auto()
    COMPLETED = auto()
    CONFIRMED = auto()
    ACCEPTED = auto()  # RFC 6026
    TERMINATED = auto()


_IS = InviteServerState
_SI = ServerInput
_SA = ServerAction

# RFC 3261 Figure 7 as amended by RFC 6026 Figure 7 (2xx -> Accepted, Timer L).
INVITE_SERVER_TRANSITIONS: Final[
    dict[tuple[InviteServerState, ServerInput], tuple[InviteServerState, tuple[ServerAction, ...]]]
] = {
    (_IS.PROCEEDING, _SI.REQUEST_RETRANSMISSION): (_IS.PROCEEDING, (_SA.RESEND_RESPONSE,)),
    (_IS.PROCEEDING, _SI.TU_PROVISIONAL): (_IS.PROCEEDING, (_SA.SEND_RESPONSE,)),
    (_IS.PROCEEDING, _SI.TU_SUCCESS): (
        _IS.ACCEPTED,
        (_SA.SEND_RESPONSE, _SA.START_TIMER_2XX, _SA.START_TIMER_L),
    ),
    (_IS.PROCEEDING, _SI.TU_FAILURE): (
        _IS.COMPLETED,
        (_SA.SEND_RESPONSE, _SA.START_TIMER_G, _SA.START_TIMER_H),
    ),
    (_IS.PROCEEDING, _SI.TRANSPORT_ERROR): (_IS.TERMINATED, ()),
    (_IS.COMPLETED, _SI.REQUEST_RETRANSMISSION): (_IS.COMPLETED, (_SA.RESEND_RESPONSE,)),
    (_IS.COMPLETED, _SI.TIMER_G): (_IS.COMPLETED, (_SA.RESEND_RESPONSE, _SA.BACKOFF_TIMER_G)),
    (_IS.COMPLETED, _SI.ACK): (_IS.CONFIRMED, (_SA.START_TIMER_I,)),
    (_IS.COMPLETED, _SI.TIMER_H): (_IS.TERMINATED, (_SA.REPORT_ACK_TIMEOUT,)),
    (_IS.COMPLETED, _SI.TRANSPORT_ERROR): (_IS.TERMINATED, ()),
    (_IS.CONFIRMED, _SI.ACK): (_IS.CONFIRMED, (_SA.ABSORB_ACK,)),
    (_IS.CONFIRMED, _SI.REQUEST_RETRANSMISSION): (_IS.CONFIRMED, (_SA.ABSORB_REQUEST,)),
    (_IS.CONFIRMED, _SI.TIMER_I): (_IS.TERMINATED, ()),
    # RFC 6026 §7.1: "any retransmissions of the INVITE received while in the Accepted state MUST be
    # absorbed"; the 2xx keeps flowing on its own timer.
    (_IS.ACCEPTED, _SI.REQUEST_RETRANSMISSION): (_IS.ACCEPTED, (_SA.ABSORB_REQUEST,)),
    (_IS.ACCEPTED, _SI.ACK): (_IS.ACCEPTED, (_SA.ACCEPT_ACK,)),
    (_IS.ACCEPTED, _SI.TU_SUCCESS): (_IS.ACCEPTED, (_SA.SEND_RESPONSE,)),
    (_IS.ACCEPTED, _SI.TIMER_2XX): (_IS.ACCEPTED, (_SA.RESEND_RESPONSE, _SA.BACKOFF_TIMER_2XX)),
    (_IS.ACCEPTED, _SI.TIMER_L): (_IS.TERMINATED, (_SA.REPORT_ACK_TIMEOUT,)),
}

INVITE_SERVER_TIMERS: Final[dict[InviteServerState, frozenset[TimerName]]] = {
    _IS.PROCEEDING: frozenset(),
    _IS.COMPLETED: frozenset({TimerName.G, TimerName.H}),
    _IS.CONFIRMED: frozenset({TimerName.I}),
    _IS.ACCEPTED: frozenset({TimerName.L, TimerName.RETRANSMIT_2XX}),
    _IS.TERMINATED: frozenset(),
}


class NonInviteServerState(Enum):
    TRYING = auto()
    PROCEEDING = auto()
    COMPLETED = auto()
    TERMINATED = auto()


_NS = NonInviteServerState

# RFC 3261 Figure 8.
NON_INVITE_SERVER_TRANSITIONS: Final[
    dict[tuple[NonInviteServerState, ServerInput], tuple[NonInviteServerState, tuple[ServerAction, ...]]]
] = {
    # "Once in the "Trying" state, any further request retransmissions are discarded."
    (_NS.TRYING, _SI.REQUEST_RETRANSMISSION): (_NS.TRYING, (_SA.ABSORB_REQUEST,)),
    (_NS.TRYING, _SI.TU_PROVISIONAL): (_NS.PROCEEDING, (_SA.SEND_RESPONSE,)),
    (_NS.TRYING, _SI.TU_SUCCESS): (_NS.COMPLETED, (_SA.SEND_RESPONSE, _SA.START_TIMER_J)),
    (_NS.TRYING, _SI.TU_FAILURE): (_NS.COMPLETED, (_SA.SEND_RESPONSE, _SA.START_TIMER_J)),
    (_NS.PROCEEDING, _SI.REQUEST_RETRANSMISSION): (_NS.PROCEEDING, (_SA.RESEND_RESPONSE,)),
    (_NS.PROCEEDING, _SI.TU_PROVISIONAL): (_NS.PROCEEDING, (_SA.SEND_RESPONSE,)),
    (_NS.PROCEEDING, _SI.TU_SUCCESS): (_NS.COMPLETED, (_SA.SEND_RESPONSE, _SA.START_TIMER_J)),
    (_NS.PROCEEDING, _SI.TU_FAILURE): (_NS.COMPLETED, (_SA.SEND_RESPONSE, _SA.START_TIMER_J)),
    (_NS.PROCEEDING, _SI.TRANSPORT_ERROR): (_NS.TERMINATED, ()),
    (_NS.COMPLETED, _SI.REQUEST_RETRANSMISSION): (_NS.COMPLETED, (_SA.RESEND_RESPONSE,)),
    (_NS.COMPLETED, _SI.TIMER_J): (_NS.TERMINATED, ()),
    (_NS.COMPLETED, _SI.TRANSPORT_ERROR): (_NS.TERMINATED, ()),
}

NON_INVITE_SERVER_TIMERS: Final[dict[NonInviteServerState, frozenset[TimerName]]] = {
    _NS.TRYING: frozenset(),
    _NS.PROCEEDING: frozenset(),
    _NS.COMPLETED: frozenset({TimerName.J}),
    _NS.TERMINATED: frozenset(),
}

_TIMER_INPUTS: Final[dict[TimerName, ServerInput]] = {
    TimerName.G: _SI.TIMER_G,
    TimerName.H: _SI.TIMER_H,
    TimerName.I: _SI.TIMER_I,
    TimerName.J: _SI.TIMER_J,
    TimerName.L: _SI.TIMER_L,
    TimerName.RETRANSMIT_2XX: _SI.TIMER_2XX,
}


def tu_input(status_code: int) -> ServerInput:
    if status_code < 200:
        return ServerInput.TU_PROVISIONAL
    if status_code < 300:
        return ServerInput.TU_SUCCESS
    return ServerInput.TU_FAILURE


class ServerTransaction(Transaction):
    """One server transaction; ``is_invite`` selects Figure 7 or Figure 8."""

    __slots__ = (
        "acked",
        "is_invite",
        "last_data",
        "last_response",
        "request",
        "rfc2543",
        "source",
        "state",
        "tx_id",
    )

    def __init__(
        self,
        host: TransactionHost,
        tx_id: ServerTransactionId,
        request: Request,
        *,
        source: Addr,
        destination: Addr,
        transport: str,
        rfc2543: bool,
    ) -> None:
        super().__init__(host, destination=destination, transport=transport)
        self.tx_id = tx_id
        self.request = request
        self.source = source
        self.rfc2543 = rfc2543
        self.is_invite = request.method == "INVITE"
        self.state: InviteServerState | NonInviteServerState = (
            InviteServerState.PROCEEDING if self.is_invite else NonInviteServerState.TRYING
        )
        self.last_response: Response | None = None
        self.last_data: bytes | None = None
        self.acked = False

    @property
    def is_terminated(self) -> bool:
        return self.state in (InviteServerState.TERMINATED, NonInviteServerState.TERMINATED)

    @property
    def response_to_tag(self) -> str | None:
        """The To tag of the response sent (RFC 2543 ACK matching, §17.2.3)."""
        return None if self.last_response is None else self.last_response.to.tag

    def on_request_retransmission(self, now: float) -> None:
        self.host.counters["request_retransmission"] += 1
        self.fire(ServerInput.REQUEST_RETRANSMISSION, now)

    def on_ack(self, ack: Request, source: Addr, transport: str, now: float) -> None:
        self.fire(ServerInput.ACK, now, ack=ack, source=source, transport=transport)

    def on_timer(self, name: TimerName, now: float) -> None:
        self.fire(_TIMER_INPUTS[name], now)

    def on_transport_error(self, now: float) -> None:
        self.fire(ServerInput.TRANSPORT_ERROR, now)

    def send_response(self, response: Response, now: float) -> None:
        """The TU hands over a response. A response the figure has no arrow for (a second final response,
        a provisional after the final) is our own misuse."""
        event = tu_input(response.status_code)
        if self._transition(event) is None:
            raise LocalProtocolError(
                f"cannot send {response.status_code} in state {self.state.name} of {self.request.method} "
                "server transaction"
            )
        self.fire(event, now, response=response)

    def _transition(
        self, event: ServerInput
    ) -> tuple[InviteServerState | NonInviteServerState, tuple[ServerAction, ...]] | None:
        if isinstance(self.state, InviteServerState):
            return INVITE_SERVER_TRANSITIONS.get((self.state, event))
        return NON_INVITE_SERVER_TRANSITIONS.get((self.state, event))

    def _keep_timers(self) -> None:
        if isinstance(self.state, InviteServerState):
            self.keep_only_timers(INVITE_SERVER_TIMERS[self.state])
        else:
            self.keep_only_timers(NON_INVITE_SERVER_TIMERS[self.state])

    def _send_last(self) -> None:
        if self.last_data is not None:
            self.host.send(
                Outgoing(data=self.last_data, destination=self.destination, transport=self.transport)
            )

    def fire(
        self,
        event: ServerInput,
        now: float,
        *,
        response: Response | None = None,
        ack: Request | None = None,
        source: Addr | None = None,
        transport: str | None = None,
    ) -> None:
        transition = self._transition(event)
        if transition is None:
            kind = "invite" if self.is_invite else "non_invite"
            self.host.counters[f"{kind}_server_{event.name.lower()}_ignored"] += 1
            return
        self.state, actions = transition
        self._keep_timers()
        timers = self.host.timers
        for action in actions:
            match action:
                case ServerAction.SEND_RESPONSE:
                    assert response is not None
                    self.last_response = response
                    self.last_data = response.serialize()
                    self._send_last()
                case ServerAction.RESEND_RESPONSE:
                    # "the most recent provisional response that was received from the TU MUST be passed
                    # to the transport layer for retransmission" / the final response in Completed.
                    if self.last_data is None:
                        self.host.counters["request_retransmission_unanswered"] += 1
                    self._send_last()
                case ServerAction.ABSORB_REQUEST:
                    pass  # counted as request_retransmission already
                case ServerAction.START_TIMER_G:
                    # "If an unreliable transport is being used, the server transaction MUST start timer G"
                    if not self.reliable:
                        self.interval = timers.timer_g
                        self.start_timer(TimerName.G, self.interval, now)
                case ServerAction.BACKOFF_TIMER_G | ServerAction.BACKOFF_TIMER_2XX:
                    self.interval = min(2 * self.interval, timers.t2)
                    name = TimerName.G if action is ServerAction.BACKOFF_TIMER_G else TimerName.RETRANSMIT_2XX
                    self.start_timer(name, self.interval, now)
                case ServerAction.START_TIMER_H:
                    self.start_timer(TimerName.H, timers.timer_h, now)
                case ServerAction.START_TIMER_I:
                    self.start_timer(TimerName.I, 0.0 if self.reliable else timers.timer_i, now)
                case ServerAction.START_TIMER_J:
                    self.start_timer(TimerName.J, 0.0 if self.reliable else timers.timer_j, now)
                case ServerAction.START_TIMER_L:
                    self.start_timer(TimerName.L, timers.timer_l, now)
                case ServerAction.START_TIMER_2XX:
                    if not self.reliable:
                        self.interval = timers.t1
                        self.start_timer(TimerName.RETRANSMIT_2XX, self.interval, now)
                case ServerAction.ACCEPT_ACK:
                    assert ack is not None and source is not None and transport is not None
                    if self.acked:
                        self.host.counters["ack_retransmission"] += 1
                    else:
                        # §13.3.1.4: "The response retransmission stops when an ACK is received".
                        self.acked = True
                        self.stop_timer(TimerName.RETRANSMIT_2XX)
                        self.host.emit(
                            AckReceived(request=ack, source=source, transport=transport, server_tx=self.tx_id)
                        )
                case ServerAction.ABSORB_ACK:
                    self.host.counters["ack_retransmission"] += 1
                case ServerAction.REPORT_ACK_TIMEOUT:
                    if event is ServerInput.TIMER_L:
                        if not self.acked:
                            assert self.last_response is not None
                            self.host.emit(AckTimeout(server_tx=self.tx_id, response=self.last_response))
                    else:
                        # Timer H: the non-2xx final was never ACKed. The TU has nothing left to undo.
                        self.host.counters["ack_timeout_non_2xx"] += 1
                case _:
                    raise AssertionError(f"{action} is not a server action")
        if (zero := self.take_zero_timer()) is not None:
            self.fire(_TIMER_INPUTS[zero], now)
        elif self.is_terminated:
            self.host.remove(self)
