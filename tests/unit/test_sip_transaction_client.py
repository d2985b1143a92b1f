"""Client transactions (RFC 3261 §17.1, Figures 5 and 6; RFC 6026 Accepted/Timer M; CANCEL §9.1)."""

from __future__ import annotations

import itertools

import pytest

from gateway.sip.errors import LocalProtocolError
from gateway.sip.headers import Headers
from gateway.sip.message import Request, Response, make_response
from gateway.sip.parser import parse_message
from gateway.sip.transaction import ClientTransactionTimeout, ResponseReceived, TransactionLayer
from gateway.sip.uri import parse_uri

from .test_sip_transaction_wire import (
    T1,
    T2,
    TIMERS,
    UAS_ADDR,
    Sent,
    Wire,
    branches,
    is_request,
    is_response,
    make_2xx_ack,
    make_request,
)


def _timeouts(wire: Wire) -> list[ClientTransactionTimeout]:
    return [e for e in wire.uac_events if isinstance(e, ClientTransactionTimeout)]


# ------------------------------------------------------------------------------------ INVITE client


def test_timer_a_doubles_without_cap_until_timer_b_times_out() -> None:
    wire = Wire(drop=lambda sent: True)  # the network loses everything
    invite = make_request(wire.uac)
    tx = wire.send(invite)
    wire.advance(64 * T1 - 0.01)
    # "MUST reset the timer with a value of 2*T1" ... 4*T1 ... : A is not capped at T2.
    assert wire.times("uac", lambda m: is_request(m, "INVITE")) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert _timeouts(wire) == []
    wire.advance(64 * T1)
    assert _timeouts(wire) == [ClientTransactionTimeout(client_tx=tx, request=invite)]
    assert wire.uac.live_transactions == 0
    assert wire.uac.get_timer() is None


def test_invite_over_tcp_is_never_retransmitted_but_still_times_out() -> None:
    wire = Wire(transport="tcp", drop=lambda sent: True)
    tx = wire.send(make_request(wire.uac, transport="TCP"))
    wire.advance(64 * T1)
    assert wire.times("uac", lambda m: is_request(m, "INVITE")) == [0.0]
    assert [e.client_tx for e in _timeouts(wire)] == [tx]


def test_provisional_response_stops_retransmissions_and_timer_b() -> None:
    wire = Wire()
    tx = wire.send(make_request(wire.uac))
    # The UAS layer answered 100 Trying at once: Proceeding, no A, no B.
    assert [
        (e.client_tx, e.response.status_code) for e in wire.uac_events if isinstance(e, ResponseReceived)
    ] == [(tx, 100)]
    wire.advance(200.0)
    assert wire.times("uac", lambda m: is_request(m, "INVITE")) == [0.0]
    assert _timeouts(wire) == []
    assert wire.uac.live_transactions == 1  # waits for the final response however long the callee rings


def test_non_2xx_final_is_acked_by_the_transaction_and_retransmissions_reacked() -> None:
    routes = ("<sip:proxy1.example.net;lr>", "<sip:proxy2.example.net;lr>")
    wire = Wire()
    invite = make_request(wire.uac, seq=7, routes=routes)
    tx = wire.send(invite)
    request = wire.last_request("INVITE")
    wire.respond(request, 180)
    # The first 486 is lost: the UAS retransmits it (Timer G) and the UAC ACKs that copy.
    lost: list[Sent] = []

    def lose_first_486(sent: Sent) -> bool:
        if is_response(sent.message, 486) and not lost:
            lost.append(sent)
            return True
        return False

    wire.drop = lose_first_486
    wire.respond(request, 486)
    assert len(lost) == 1 and [r.status_code for r in wire.responses()] == [100, 180]
    wire.advance(T1)
    assert [r.status_code for r in wire.responses()] == [100, 180, 486]
    acks = [s for s in wire.sent if is_request(s.message, "ACK")]
    assert len(acks) == 1 and acks[0].out.destination == UAS_ADDR
    ack = acks[0].message
    assert isinstance(ack, Request)
    response_to = wire.responses()[-1].headers.get("To")
    # §17.1.1.3: Request-URI, Call-ID, From of the INVITE; To of the response; the single top Via;
    # the INVITE's CSeq number with method ACK; the INVITE's Route header fields.
    assert str(ack.uri) == str(invite.uri)
    assert ack.call_id == invite.call_id
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.headers.get("To") == response_to and ack.to.tag == "uas-tag"
    assert ack.headers.get_all("Via") == invite.headers.get_all("Via")
    assert ack.top_via.branch == invite.top_via.branch
    assert (ack.cseq.seq, ack.cseq.method) == (7, "ACK")
    assert ack.headers.get_all("Route") == list(routes)
    # A retransmitted 486 reaching the UAC in Completed is absorbed (no new event) and ACKed again.
    wire.uac.receive(parse_message(lost[0].out.data), source=UAS_ADDR, transport="udp", now=wire.now)
    wire.pump()
    assert [r.status_code for r in wire.responses()] == [100, 180, 486]
    assert len([s for s in wire.sent if is_request(s.message, "ACK")]) == 2
    assert wire.uac.counters["response_retransmission"] == 1
    # Timer D (32 s) keeps the transaction only to absorb retransmissions, then it is gone.
    wire.advance(T1 + 32.0 - 0.01)
    assert wire.uac.live_transactions == 1
    wire.advance(T1 + 32.0)
    assert wire.uac.live_transactions == 0
    assert tx not in {e.client_tx for e in _timeouts(wire)}


def test_non_2xx_over_tcp_terminates_at_once_timer_d_is_zero() -> None:
    wire = Wire(transport="tcp")
    wire.send(make_request(wire.uac, transport="TCP"))
    wire.respond(wire.last_request("INVITE"), 603)
    assert len([s for s in wire.sent if is_request(s.message, "ACK")]) == 1
    assert wire.uac.live_transactions == 0


def test_2xx_moves_to_accepted_every_retransmission_reaches_the_tu_and_timer_m_ends_it() -> None:
    wire = Wire()
    tx = wire.send(make_request(wire.uac))
    wire.respond(wire.last_request("INVITE"), 200)
    assert [r.status_code for r in wire.responses()] == [100, 200]
    # The TU does not ACK yet: the UAS retransmits the 2xx, each copy goes up (the TU ACKs each, §13.2.2.4).
    wire.advance(T1 + 2 * T1)
    assert [r.status_code for r in wire.responses()] == [100, 200, 200, 200]
    assert all(e.client_tx == tx for e in wire.uac_events if isinstance(e, ResponseReceived))
    # The transaction sends no ACK for a 2xx itself.
    assert wire.times("uac", lambda m: is_request(m, "ACK")) == []
    # Timer M: 64*T1 after the 2xx the transaction is gone; a late 2xx then matches nothing.
    wire.uac.send_stateless(
        make_2xx_ack(wire.uac, wire.responses()[-1]), destination=UAS_ADDR, transport="udp"
    )
    wire.pump()
    wire.advance(64 * T1 - 0.01)
    assert wire.uac.live_transactions == 1
    wire.advance(64 * T1)
    assert wire.uac.live_transactions == 0
    late = make_response(wire.last_request("INVITE"), 200, to_tag="uas-tag")
    wire.uac.receive(parse_message(late.serialize()), source=UAS_ADDR, transport="udp", now=wire.now)
    assert wire.uac.counters["response_unmatched"] == 1
    assert wire.uac.events() == []


def test_forked_2xx_with_another_to_tag_reaches_the_tu_in_accepted() -> None:
    wire = Wire()
    wire.send(make_request(wire.uac))
    request = wire.last_request("INVITE")
    wire.respond(request, 200, to_tag="fork-1")
    other = make_response(request, 200, to_tag="fork-2")
    wire.uac.receive(parse_message(other.serialize()), source=("192.0.2.30", 5060), transport="udp", now=0.0)
    events = [e for e in wire.uac.events() if isinstance(e, ResponseReceived)]
    assert [(e.response.to.tag, e.source) for e in events] == [("fork-2", ("192.0.2.30", 5060))]


# ------------------------------------------------------------------------------- non-INVITE client


def test_timer_e_doubles_capped_at_t2_until_timer_f() -> None:
    wire = Wire(drop=lambda sent: True)
    request = make_request(wire.uac, "OPTIONS")
    tx = wire.send(request)
    wire.advance(64 * T1)
    # "MIN(2*T1, T2)", "MIN(4*T1, T2)" ... then T2 forever.
    assert wire.times("uac", lambda m: is_request(m, "OPTIONS")) == [
        0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]  # fmt: skip
    assert _timeouts(wire) == [ClientTransactionTimeout(client_tx=tx, request=request)]
    assert wire.uac.live_transactions == 0


def test_timer_e_is_t2_once_proceeding() -> None:
    wire = Wire(drop=lambda sent: sent.sender == "uac" and sent.time > 0)  # retransmissions are lost
    wire.send(make_request(wire.uac, "OPTIONS"))
    wire.respond(wire.last_request("OPTIONS"), 183)
    wire.advance(20.0)
    # The 1xx arrived at t=0; E still fires at T1, then "reset with a value of T2".
    assert wire.times("uac", lambda m: is_request(m, "OPTIONS")) == [0.0, 0.5, 4.5, 8.5, 12.5, 16.5]


def test_non_invite_over_tcp_sends_once_and_timer_k_is_zero() -> None:
    wire = Wire(transport="tcp")
    wire.send(make_request(wire.uac, "OPTIONS", transport="TCP"))
    wire.advance(10.0)
    assert wire.times("uac", lambda m: is_request(m, "OPTIONS")) == [0.0]
    wire.respond(wire.last_request("OPTIONS"), 200)
    assert wire.uac.live_transactions == 0 and wire.uas.live_transactions == 0


def test_timer_k_absorbs_response_retransmissions_then_ends() -> None:
    wire = Wire()
    wire.send(make_request(wire.uac, "OPTIONS"))
    response = wire.respond(wire.last_request("OPTIONS"), 200)
    assert [r.status_code for r in wire.responses()] == [200]
    wire.uac.receive(parse_message(response.serialize()), source=UAS_ADDR, transport="udp", now=1.0)
    assert wire.uac.events() == []
    assert wire.uac.counters["response_retransmission"] == 1
    wire.advance(TIMERS.t4 - 0.01)
    assert wire.uac.live_transactions == 1
    wire.advance(TIMERS.t4)
    assert wire.uac.live_transactions == 0


def test_transport_error_reports_a_timeout() -> None:
    wire = Wire(transport="tcp")
    tx = wire.send(make_request(wire.uac, "OPTIONS", transport="TCP"))
    wire.uac.transport_error(destination=UAS_ADDR, transport="tcp", now=1.0)
    assert [e.client_tx for e in wire.uac.events() if isinstance(e, ClientTransactionTimeout)] == [tx]
    assert wire.uac.live_transactions == 0


# -------------------------------------------------------------------------- response acceptance


def test_response_with_unknown_branch_or_foreign_sent_by_is_dropped_and_counted() -> None:
    wire = Wire()
    wire.send(make_request(wire.uac, "OPTIONS"))
    request = wire.last_request("OPTIONS")
    stray = make_response(request, 200, to_tag="x")
    stray.headers.set("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnot-ours")
    wire.uac.receive(stray, source=UAS_ADDR, transport="udp", now=0.0)
    foreign = make_response(request, 200, to_tag="x")
    branch = request.top_via.branch
    foreign.headers.set("Via", f"SIP/2.0/UDP 198.51.100.1:5060;branch={branch}")
    wire.uac.receive(foreign, source=UAS_ADDR, transport="udp", now=0.0)
    wrong_method = make_response(request, 200, to_tag="x")
    wrong_method.headers.set("CSeq", "1 INFO")
    wire.uac.receive(wrong_method, source=UAS_ADDR, transport="udp", now=0.0)
    assert wire.uac.events() == []
    assert wire.uac.counters["response_unmatched"] == 2
    assert wire.uac.counters["response_via_mismatch"] == 1
    assert wire.uac.live_transactions == 1


def test_send_request_refuses_ack_foreign_branches_and_reuse() -> None:
    layer = TransactionLayer(TIMERS, branch_factory=branches("b"))
    ack = make_request(layer, "ACK")
    with pytest.raises(LocalProtocolError):
        layer.send_request(ack, destination=UAS_ADDR, transport="udp", now=0.0)
    old_style = make_request(layer, "OPTIONS")
    old_style.headers.set("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=1234")
    with pytest.raises(LocalProtocolError):
        layer.send_request(old_style, destination=UAS_ADDR, transport="udp", now=0.0)
    request = make_request(layer, "OPTIONS")
    layer.send_request(request, destination=UAS_ADDR, transport="udp", now=0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request, destination=UAS_ADDR, transport="udp", now=0.0)
    mismatched = make_request(layer, "OPTIONS")
    mismatched.headers.set("CSeq", "1 INFO")
    with pytest.raises(LocalProtocolError):
        layer.send_request(mismatched, destination=UAS_ADDR, transport="udp", now=0.0)


def test_send_stateless_just_sends() -> None:
    layer = TransactionLayer(TIMERS, branch_factory=branches("b"))
    ack = Request("ACK", parse_uri("sip:bob@192.0.2.20"), Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bKa")]))
    layer.send_stateless(ack, destination=UAS_ADDR, transport="UDP")
    [out] = layer.datagrams_to_send()
    assert (out.destination, out.transport, out.data) == (UAS_ADDR, "udp", ack.serialize())
    assert layer.live_transactions == 0 and layer.get_timer() is None


# ------------------------------------------------------------------------------------------ CANCEL


def _cancels(wire: Wire) -> list[Request]:
    return [s.message for s in wire.sent if isinstance(s.message, Request) and s.message.method == "CANCEL"]


def test_cancel_is_built_from_the_invite_and_matches_its_server_transaction() -> None:
    routes = ("<sip:proxy.example.net;lr>",)
    wire = Wire()
    invite = make_request(wire.uac, seq=3, routes=routes)
    tx = wire.send(invite)
    wire.uac.cancel(tx, now=wire.now)
    wire.pump()
    [cancel] = _cancels(wire)
    # §9.1: same Request-URI, Call-ID, To, From, CSeq number; single Via equal to the INVITE's top Via.
    assert str(cancel.uri) == str(invite.uri)
    for name in ("Call-ID", "To", "From", "Via"):
        assert cancel.headers.get_all(name) == invite.headers.get_all(name), name
    assert (cancel.cseq.seq, cancel.cseq.method) == (3, "CANCEL")
    assert cancel.headers.get_all("Route") == list(routes)
    [received] = wire.received_requests("CANCEL")
    [invite_rx] = wire.received_requests("INVITE")
    assert received.cancels == invite_rx.server_tx
    assert received.server_tx != invite_rx.server_tx
    # The TU answers 200 to the CANCEL and 487 to the INVITE; the UAC ACKs the 487.
    wire.respond(received.request, 200)
    wire.respond(invite_rx.request, 487)
    statuses = [(r.status_code, r.cseq.method) for r in wire.responses()]
    assert statuses == [(100, "INVITE"), (200, "CANCEL"), (487, "INVITE")]
    cancel_events = [e for e in wire.uac_events if isinstance(e, ResponseReceived) and e.client_tx != tx]
    assert [e.response.cseq.method for e in cancel_events] == ["CANCEL"]
    assert wire.times("uac", lambda m: is_request(m, "ACK")) == [0.0]
    wire.settle()
    assert wire.uac.live_transactions == 0 and wire.uas.live_transactions == 0


def test_cancel_waits_for_a_provisional_response() -> None:
    wire = Wire(drop=lambda sent: sent.sender == "uas" and sent.time < 1.0)  # the 100 Trying is lost
    tx = wire.send(make_request(wire.uac))
    wire.uac.cancel(tx, now=0.0)
    wire.pump()
    assert _cancels(wire) == []
    wire.advance(2.0)  # INVITE retransmitted at 0.5 and 1.5; the 100 re-sent at 1.5 gets through
    # Sent when the provisional arrived, then retransmitted by its own Timer E (the TU has not answered).
    assert wire.times("uac", lambda m: is_request(m, "CANCEL")) == [1.5, 1.5 + T1]
    assert wire.received_requests("CANCEL")[0].cancels == wire.received_requests("INVITE")[0].server_tx


def test_cancel_after_a_final_response_is_not_sent() -> None:
    wire = Wire()
    tx = wire.send(make_request(wire.uac))
    wire.respond(wire.last_request("INVITE"), 200)
    wire.uac.cancel(tx, now=wire.now)
    wire.pump()
    assert _cancels(wire) == []
    assert wire.uac.counters["cancel_not_sent"] == 1


def test_held_cancel_is_discarded_when_the_final_response_comes_first() -> None:
    wire = Wire(drop=lambda sent: is_response(sent.message, 100))
    tx = wire.send(make_request(wire.uac))
    wire.uac.cancel(tx, now=0.0)
    wire.respond(wire.last_request("INVITE"), 486)
    wire.settle()
    assert _cancels(wire) == []


def test_cancelled_invite_without_final_response_is_destroyed_after_64_t1() -> None:
    wire = Wire()
    tx = wire.send(make_request(wire.uac))
    wire.advance(10.0)
    wire.uac.cancel(tx, now=wire.now)
    wire.pump()
    wire.respond(wire.last_request("CANCEL"), 200)  # ... but the UAS never sends the 487
    wire.advance(10.0 + 64 * T1 - 0.01)
    assert _timeouts(wire) == []
    wire.advance(10.0 + 64 * T1)
    assert [e.client_tx for e in _timeouts(wire)] == [tx]
    assert wire.uac.live_transactions == 0


def test_cancel_of_a_non_invite_is_refused() -> None:
    wire = Wire()
    tx = wire.send(make_request(wire.uac, "OPTIONS"))
    with pytest.raises(LocalProtocolError):
        wire.uac.cancel(tx, now=0.0)


def test_retransmission_interval_of_e_never_exceeds_t2() -> None:
    wire = Wire(drop=lambda sent: True)
    wire.send(make_request(wire.uac, "BYE"))
    wire.advance(64 * T1)
    times = wire.times("uac", lambda m: is_request(m, "BYE"))
    assert max(b - a for a, b in itertools.pairwise(times)) == T2


def test_response_event_carries_the_source() -> None:
    wire = Wire()
    wire.send(make_request(wire.uac, "OPTIONS"))
    wire.respond(wire.last_request("OPTIONS"), 200)
    [event] = [e for e in wire.uac_events if isinstance(e, ResponseReceived)]
    assert event.source == UAS_ADDR
    assert isinstance(event.response, Response)


def test_invite_transport_error_while_calling_reports_a_timeout_and_cancel_is_then_moot() -> None:
    wire = Wire(transport="tcp", drop=lambda sent: True)
    invite = make_request(wire.uac, transport="TCP")
    tx = wire.send(invite)
    wire.uac.transport_error(destination=UAS_ADDR, transport="TCP", now=0.1)
    assert wire.uac.events() == [ClientTransactionTimeout(client_tx=tx, request=invite)]
    wire.uac.cancel(tx, now=0.2)
    assert wire.uac.datagrams_to_send() == [] and wire.uac.counters["cancel_not_sent"] == 1
