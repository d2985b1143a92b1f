"""The transaction layer as a whole: steady traffic over a lossy network leaves no state behind."""

from __future__ import annotations

import random

from gateway.sip.message import Request
from gateway.sip.transaction import (
    AckReceived,
    AckTimeout,
    ClientTransactionTimeout,
    RequestReceived,
    ResponseReceived,
)

from .test_sip_transaction_wire import T1, UAS_ADDR, Wire, make_2xx_ack, make_request


class EchoTUs:
    """A UAS TU that rings and answers each new request, and a UAC TU that ACKs every 2xx to an INVITE."""

    def __init__(self, wire: Wire, statuses: dict[str, int] | None = None) -> None:
        self.wire = wire
        self.statuses = statuses or {}
        self.uas_seen = 0
        self.uac_seen = 0

    def run(self) -> None:
        wire = self.wire
        while self.uas_seen < len(wire.uas_events) or self.uac_seen < len(wire.uac_events):
            while self.uas_seen < len(wire.uas_events):
                event = wire.uas_events[self.uas_seen]
                self.uas_seen += 1
                if isinstance(event, RequestReceived):
                    if event.request.method == "INVITE":
                        wire.respond(event.request, 180)
                    wire.respond(event.request, self.statuses.get(event.request.call_id, 200))
            while self.uac_seen < len(wire.uac_events):
                event = wire.uac_events[self.uac_seen]
                self.uac_seen += 1
                response = event.response if isinstance(event, ResponseReceived) else None
                if response is not None and response.status_code == 200 and response.cseq.method == "INVITE":
                    ack = make_2xx_ack(wire.uac, response)
                    wire.uac.send_stateless(ack, destination=UAS_ADDR, transport="udp")
                    wire.pump()

    def advance(self, until: float) -> None:
        """Like Wire.advance, but the TUs react to each event when it happens."""
        wire = self.wire
        while True:
            self.run()
            due = [t for t in (wire.uac.get_timer(), wire.uas.get_timer()) if t is not None and t <= until]
            if not due:
                break
            wire.advance(min(due))
        wire.now = until


def test_steady_traffic_over_a_lossy_network_leaves_no_transaction_behind() -> None:
    rng = random.Random(3261)
    wire = Wire(drop=lambda sent: rng.random() < 0.2)
    statuses: dict[str, int] = {}
    tus = EchoTUs(wire, statuses)
    peak = 0
    txs = []
    for call in range(60):
        tus.advance(call * 0.7)
        call_id = f"call-{call}"
        statuses[call_id] = rng.choice([200, 486, 603])
        txs.append(wire.send(make_request(wire.uac, "INVITE" if call % 3 else "OPTIONS", call_id=call_id)))
        tus.run()
        peak = max(peak, wire.uac.live_transactions + wire.uas.live_transactions)
    tus.advance(wire.now + 1000.0)
    assert peak > 10  # the traffic really overlapped
    assert wire.uac.live_transactions == 0
    assert wire.uas.live_transactions == 0
    assert wire.uac.get_timer() is None and wire.uas.get_timer() is None
    assert len(wire.uac._heap) == 0 and len(wire.uas._heap) == 0  # no stale timer entries either
    assert wire.uac.datagrams_to_send() == [] and wire.uas.datagrams_to_send() == []
    # The far TU saw each request at most once; each client transaction ended in a final response or a
    # timeout, never both.
    received = [e.request.call_id for e in wire.uas_events if isinstance(e, RequestReceived)]
    assert len(set(received)) == len(received) > 30
    finals = {
        e.client_tx
        for e in wire.uac_events
        if isinstance(e, ResponseReceived) and e.response.status_code >= 200
    }
    timeouts = {e.client_tx for e in wire.uac_events if isinstance(e, ClientTransactionTimeout)}
    assert all((tx in finals) != (tx in timeouts) for tx in txs)


def test_each_invite_ends_in_a_final_response_or_a_timeout() -> None:
    rng = random.Random(6026)
    wire = Wire(drop=lambda sent: rng.random() < 0.3)
    tus = EchoTUs(wire)
    txs = []
    for call in range(20):
        tus.advance(call * 1.0)
        txs.append(wire.send(make_request(wire.uac, call_id=f"c{call}")))
    tus.advance(wire.now + 64 * T1 + 40)
    finals: dict[str, int] = {}
    timeouts: set[str] = set()
    for event in wire.uac_events:
        if isinstance(event, ResponseReceived) and event.response.status_code >= 200:
            finals.setdefault(event.client_tx, event.response.status_code)
        elif isinstance(event, ClientTransactionTimeout):
            timeouts.add(event.client_tx)
    assert all((tx in finals) != (tx in timeouts) for tx in txs)
    # An INVITE answered 200 was ACKed, unless every ACK copy got lost and the TU heard about it.
    acked = {e.server_tx for e in wire.uas_events if isinstance(e, AckReceived) and e.server_tx}
    ack_timeouts = {e.server_tx for e in wire.uas_events if isinstance(e, AckTimeout)}
    assert not acked & ack_timeouts
    assert wire.uac.live_transactions == 0 and wire.uas.live_transactions == 0


def test_requests_seen_by_the_tu_are_never_acks_or_retransmissions() -> None:
    rng = random.Random(17)
    wire = Wire(drop=lambda sent: sent.sender == "uas" and rng.random() < 0.5)
    tus = EchoTUs(wire)
    for call in range(10):
        wire.send(make_request(wire.uac, call_id=f"r{call}"))
        tus.advance(wire.now + 3.0)
    received = [e.request for e in wire.uas_events if isinstance(e, RequestReceived)]
    assert all(isinstance(r, Request) and r.method != "ACK" for r in received)
    assert sorted(r.call_id for r in received) == sorted(f"r{call}" for call in range(10))
