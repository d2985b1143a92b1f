"""Two transaction layers wired back to back on a fake clock, plus builders for the messages the TUs send.

Every datagram goes through ``serialize`` and ``parse_message``, so each side sees what a peer would send.
The tests of this module check the timer derivations and the wire itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from gateway.sip.headers import Headers
from gateway.sip.message import Message, Request, Response, make_response
from gateway.sip.parser import parse_message
from gateway.sip.transaction import (
    ClientTransactionId,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionEvent,
    TransactionLayer,
)
from gateway.sip.uri import parse_uri

T1, T2, T4 = 0.5, 4.0, 5.0
TIMERS = TimerConfig(t1=T1, t2=T2, t4=T4)
UAC_ADDR = ("192.0.2.10", 5060)
UAS_ADDR = ("192.0.2.20", 5060)


def branches(prefix: str) -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


@dataclass
class Sent:
    time: float
    sender: str  # "uac" or "uas"
    message: Message
    out: Outgoing


def is_request(message: Message, method: str) -> bool:
    return isinstance(message, Request) and message.method == method


def is_response(message: Message, status: int, method: str | None = None) -> bool:
    return (
        isinstance(message, Response)
        and message.status_code == status
        and (method is None or message.cseq.method == method)
    )


@dataclass
class Wire:
    """A UAC layer and a UAS layer; ``drop`` decides per datagram whether the network loses it."""

    transport: str = "udp"
    timers: TimerConfig = TIMERS
    now: float = 0.0
    sent: list[Sent] = field(default_factory=list)
    uac_events: list[TransactionEvent] = field(default_factory=list)
    uas_events: list[TransactionEvent] = field(default_factory=list)
    drop: Callable[[Sent], bool] = lambda sent: False

    def __post_init__(self) -> None:
        self.uac = TransactionLayer(self.timers, branch_factory=branches("uac"))
        self.uas = TransactionLayer(self.timers, branch_factory=branches("uas"))

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for name, layer, peer, source in (
                ("uac", self.uac, self.uas, UAC_ADDR),
                ("uas", self.uas, self.uac, UAS_ADDR),
            ):
                for out in layer.datagrams_to_send():
                    moved = True
                    message = parse_message(out.data)
                    sent = Sent(self.now, name, message, out)
                    self.sent.append(sent)
                    if not self.drop(sent):
                        peer.receive(
                            parse_message(out.data), source=source, transport=out.transport, now=self.now
                        )
            self.uac_events += self.uac.events()
            self.uas_events += self.uas.events()

    def advance(self, until: float) -> None:
        """Run both layers' timers up to ``until`` in order, delivering whatever they send."""
        while True:
            due = [t for t in (self.uac.get_timer(), self.uas.get_timer()) if t is not None and t <= until]
            if not due:
                break
            self.now = min(due)
            self.uac.handle_timer(self.now)
            self.uas.handle_timer(self.now)
            self.pump()
        self.now = until

    def advance_by(self, seconds: float) -> None:
        self.advance(self.now + seconds)

    def settle(self) -> None:
        """Run until no timer is left anywhere."""
        self.advance(self.now + 1000.0)
        assert self.uac.get_timer() is None and self.uas.get_timer() is None

    # --------------------------------------------------------------------------------- TU helpers

    def send(self, request: Request) -> ClientTransactionId:
        tx = self.uac.send_request(request, destination=UAS_ADDR, transport=self.transport, now=self.now)
        self.pump()
        return tx

    def respond(self, request: Request, status: int, *, to_tag: str | None = "uas-tag") -> Response:
        response = make_response(request, status, to_tag=to_tag)
        self.uas.send_response(response, now=self.now)
        self.pump()
        return response

    def received_requests(self, method: str) -> list[RequestReceived]:
        return [e for e in self.uas_events if isinstance(e, RequestReceived) and e.request.method == method]

    def last_request(self, method: str) -> Request:
        return self.received_requests(method)[-1].request

    def responses(self) -> list[Response]:
        return [e.response for e in self.uac_events if isinstance(e, ResponseReceived)]

    def times(self, sender: str, match: Callable[[Message], bool]) -> list[float]:
        return [s.time for s in self.sent if s.sender == sender and match(s.message)]


def make_request(
    layer: TransactionLayer,
    method: str = "INVITE",
    *,
    transport: str = "UDP",
    seq: int = 1,
    call_id: str = "call-1@192.0.2.10",
    via_params: str = "",
    via_host: str = "192.0.2.10:5060",
    routes: tuple[str, ...] = (),
) -> Request:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/{transport} {via_host};branch={layer.new_branch()}{via_params}"),
            ("Max-Forwards", "70"),
            ("From", '"Alice" <sip:alice@example.com>;tag=alice-tag'),
            ("To", "<sip:bob@example.net>"),
            ("Call-ID", call_id),
            ("CSeq", f"{seq} {method}"),
            ("Contact", "<sip:alice@192.0.2.10:5060>"),
            *(("Route", route) for route in routes),
        ]
    )
    return Request(method, parse_uri("sip:bob@example.net"), headers)


def make_2xx_ack(layer: TransactionLayer, response: Response, *, transport: str = "UDP") -> Request:
    """What a UAC core sends for a 2xx (§13.2.2.4): a new branch, the dialog's To tag."""
    headers = Headers(
        [
            ("Via", f"SIP/2.0/{transport} 192.0.2.10:5060;branch={layer.new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", response.headers.get("From") or ""),
            ("To", response.headers.get("To") or ""),
            ("Call-ID", response.call_id),
            ("CSeq", f"{response.cseq.seq} ACK"),
        ]
    )
    return Request("ACK", parse_uri("sip:bob@192.0.2.20:5060"), headers)


def test_timer_values_derive_from_t1_t2_t4() -> None:
    timers = TimerConfig(t1=0.25, t2=2.0, t4=3.0)
    assert (timers.timer_a, timers.timer_e, timers.timer_g) == (0.25, 0.25, 0.25)
    assert {
        timers.timer_b,
        timers.timer_f,
        timers.timer_h,
        timers.timer_j,
        timers.timer_l,
        timers.timer_m,
    } == {16.0}
    assert (timers.timer_i, timers.timer_k) == (3.0, 3.0)
    assert timers.timer_d == 32.0  # "> 32s for unreliable transports", whatever T1 is
    default = TimerConfig()
    assert (default.t1, default.t2, default.t4, default.timer_b) == (0.5, 4.0, 5.0, 32.0)


def test_timer_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TimerConfig(t1=0.0)
    with pytest.raises(ValueError):
        TimerConfig(t1=5.0, t2=4.0)


def test_new_branch_carries_the_magic_cookie_and_is_unique() -> None:
    layer = TransactionLayer(TIMERS, branch_factory=branches("x"))
    first, second = layer.new_branch(), layer.new_branch()
    assert first.startswith("z9hG4bK") and second.startswith("z9hG4bK") and first != second


def test_wire_delivers_and_drops() -> None:
    wire = Wire(drop=lambda sent: sent.sender == "uas")
    wire.send(make_request(wire.uac, "OPTIONS"))
    assert len(wire.received_requests("OPTIONS")) == 1
    wire.respond(wire.last_request("OPTIONS"), 200)
    assert wire.responses() == []  # the 200 was lost
