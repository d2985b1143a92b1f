"""Server transactions (RFC 3261 §17.2, Figures 7 and 8; RFC 6026 Accepted/Timer L; §13.3.1.4 2xx
retransmission), server matching §17.2.3 with the RFC 2543 fallback, §9.2 CANCEL matching."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gateway.sip.errors import LocalProtocolError
from gateway.sip.headers import Headers
from gateway.sip.message import Request, make_response
from gateway.sip.parser import parse_message
from gateway.sip.transaction import AckReceived, AckTimeout, RequestReceived, TransactionLayer

from .test_sip_transaction_wire import (
    T1,
    T2,
    TIMERS,
    UAC_ADDR,
    Wire,
    branches,
    is_request,
    is_response,
    make_2xx_ack,
    make_request,
)

RFC4475 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sip" / "rfc4475"


def _uas() -> TransactionLayer:
    return TransactionLayer(TIMERS, branch_factory=branches("uas"))


def _deliver(layer: TransactionLayer, request: Request, *, now: float = 0.0, transport: str = "udp") -> None:
    layer.receive(parse_message(request.serialize()), source=UAC_ADDR, transport=transport, now=now)


def _statuses(layer: TransactionLayer) -> list[int]:
    out = []
    for outgoing in layer.datagrams_to_send():
        message = parse_message(outgoing.data)
        assert not isinstance(message, Request)
        out.append(message.status_code)
    return out


def _received(layer: TransactionLayer) -> list[RequestReceived]:
    return [e for e in layer.events() if isinstance(e, RequestReceived)]


# ------------------------------------------------------------------------------------ INVITE server


def test_new_invite_is_answered_100_trying_at_once_other_requests_are_not() -> None:
    uas = _uas()
    _deliver(uas, make_request(uas, "INVITE"))
    [out] = uas.datagrams_to_send()
    trying = parse_message(out.data)
    assert is_response(trying, 100, "INVITE")
    assert trying.to.tag is None  # §17.2.1: tag insertion in the 100 is "SHOULD NOT"
    assert (out.destination, out.transport) == (UAC_ADDR, "udp")
    [event] = _received(uas)
    assert event.request.method == "INVITE" and event.cancels is None and event.source == UAC_ADDR
    _deliver(uas, make_request(uas, "OPTIONS"))
    assert uas.datagrams_to_send() == []


def test_invite_retransmission_gets_the_latest_provisional_and_is_not_passed_up() -> None:
    uas = _uas()
    invite = make_request(uas)
    _deliver(uas, invite)
    [event] = _received(uas)
    assert _statuses(uas) == [100]
    _deliver(uas, invite, now=0.5)
    assert _statuses(uas) == [100]
    uas.send_response(make_response(event.request, 180, to_tag="t"), now=0.6)
    assert _statuses(uas) == [180]
    _deliver(uas, invite, now=1.5)
    assert _statuses(uas) == [180]
    assert _received(uas) == []
    assert uas.counters["request_retransmission"] == 2


def test_non_2xx_retransmitted_on_timer_g_capped_at_t2_until_timer_h() -> None:
    wire = Wire(drop=lambda sent: is_request(sent.message, "ACK"))
    wire.send(make_request(wire.uac))
    wire.respond(wire.last_request("INVITE"), 480)
    wire.advance(64 * T1 - 0.01)
    assert wire.times("uas", lambda m: is_response(m, 480)) == [
        0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]  # fmt: skip
    assert wire.uas.live_transactions == 1
    wire.advance(64 * T1)
    assert wire.uas.live_transactions == 0
    assert wire.uas.counters["ack_timeout_non_2xx"] == 1
    assert not any(isinstance(e, AckTimeout) for e in wire.uas_events)  # AckTimeout is for 2xx only


def test_ack_confirms_absorbs_retransmissions_and_timer_i_ends_it() -> None:
    wire = Wire()
    wire.send(make_request(wire.uac))
    invite = wire.last_request("INVITE")
    wire.respond(invite, 486)
    [ack_sent] = [s for s in wire.sent if is_request(s.message, "ACK")]
    wire.advance(5 * T1)
    assert wire.times("uas", lambda m: is_response(m, 486)) == [0.0]  # G stopped by the ACK
    assert not any(isinstance(e, AckReceived) for e in wire.uas_events)  # ACK of a non-2xx stays inside
    wire.uas.receive(parse_message(ack_sent.out.data), source=UAC_ADDR, transport="udp", now=wire.now)
    wire.uas.receive(parse_message(invite.serialize()), source=UAC_ADDR, transport="udp", now=wire.now)
    assert wire.uas.datagrams_to_send() == [] and wire.uas.events() == []
    assert wire.uas.counters["ack_retransmission"] == 1
    wire.advance(TIMERS.t4 - 0.01)
    assert wire.uas.live_transactions == 1
    wire.advance(TIMERS.t4)
    assert wire.uas.live_transactions == 0


def test_2xx_retransmitted_until_the_ack_then_stopped() -> None:
    wire = Wire(drop=lambda sent: sent.sender == "uac" and sent.time > 0)
    wire.send(make_request(wire.uac))
    request = wire.last_request("INVITE")
    [invite_rx] = wire.received_requests("INVITE")
    response = wire.respond(request, 200)
    wire.advance(12.0)  # ACKs would be dropped; the TU has not sent one anyway
    # §13.3.1.4: "an interval that starts at T1 seconds and doubles for each retransmission until it
    # reaches T2 seconds".
    assert wire.times("uas", lambda m: is_response(m, 200)) == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    wire.drop = lambda sent: False
    ack = make_2xx_ack(wire.uac, response)
    wire.uac.send_stateless(ack, destination=("192.0.2.20", 5060), transport="udp")
    wire.pump()
    acks = [e for e in wire.uas_events if isinstance(e, AckReceived)]
    assert [(a.server_tx, a.request.cseq.method) for a in acks] == [(invite_rx.server_tx, "ACK")]
    # A retransmitted ACK is absorbed; the 2xx is not sent any more; Timer L ends quietly.
    wire.uas.receive(parse_message(ack.serialize()), source=UAC_ADDR, transport="udp", now=wire.now)
    wire.advance(64 * T1 + 1)
    assert wire.times("uas", lambda m: is_response(m, 200)) == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert len([e for e in wire.uas_events if isinstance(e, AckReceived)]) == 1
    assert wire.uas.counters["ack_retransmission"] == 1
    assert not any(isinstance(e, AckTimeout) for e in wire.uas_events)
    assert wire.uas.live_transactions == 0


def test_unacked_2xx_reports_ack_timeout_after_64_t1() -> None:
    wire = Wire()
    wire.send(make_request(wire.uac))
    [invite_rx] = wire.received_requests("INVITE")
    wire.advance(2.0)
    response = wire.respond(invite_rx.request, 200)
    wire.advance(2.0 + 64 * T1 - 0.01)
    assert not any(isinstance(e, AckTimeout) for e in wire.uas_events)
    sends = wire.times("uas", lambda m: is_response(m, 200))
    assert max(b - a for a, b in itertools.pairwise(sends)) == T2
    wire.advance(2.0 + 64 * T1)
    timeouts = [e for e in wire.uas_events if isinstance(e, AckTimeout)]
    assert len(timeouts) == 1 and timeouts[0].server_tx == invite_rx.server_tx
    assert timeouts[0].response.serialize() == response.serialize()
    assert wire.uas.live_transactions == 0


def test_invite_retransmission_in_accepted_is_absorbed() -> None:
    uas = _uas()
    invite = make_request(uas)
    _deliver(uas, invite)
    [event] = _received(uas)
    uas.send_response(make_response(event.request, 200, to_tag="t"), now=0.0)
    assert _statuses(uas) == [100, 200]
    _deliver(uas, invite, now=0.1)  # RFC 6026 §7.1: absorbed; the 2xx has its own retransmission timer
    assert uas.datagrams_to_send() == [] and uas.events() == []


def test_tcp_invite_server_never_retransmits_and_timer_i_is_zero() -> None:
    wire = Wire(transport="tcp")
    wire.send(make_request(wire.uac, transport="TCP"))
    wire.respond(wire.last_request("INVITE"), 486)
    assert wire.uas.live_transactions == 0  # ACK arrived, I = 0
    wire.send(make_request(wire.uac, transport="TCP", call_id="call-2"))
    response = wire.respond(wire.last_request("INVITE"), 200)
    wire.advance(30.0)
    assert wire.times("uas", lambda m: is_response(m, 200)) == [0.0]  # no 2xx retransmission on TCP
    assert response.status_code == 200
    wire.advance(64 * T1)
    assert [type(e) for e in wire.uas_events if isinstance(e, AckTimeout)] == [AckTimeout]


def test_response_after_final_is_our_mistake() -> None:
    uas = _uas()
    _deliver(uas, make_request(uas, "OPTIONS"))
    [event] = _received(uas)
    uas.send_response(make_response(event.request, 200, to_tag="t"), now=0.0)
    with pytest.raises(LocalProtocolError):
        uas.send_response(make_response(event.request, 500, to_tag="t"), now=0.0)
    with pytest.raises(LocalProtocolError):
        uas.send_response(make_response(event.request, 180, to_tag="t"), now=0.0)


def test_response_without_server_transaction_is_refused() -> None:
    uas = _uas()
    with pytest.raises(LocalProtocolError):
        uas.send_response(make_response(make_request(uas, "OPTIONS"), 200), now=0.0)


# -------------------------------------------------------------------------------- non-INVITE server


def test_non_invite_server_trying_proceeding_completed_and_timer_j() -> None:
    uas = _uas()
    bye = make_request(uas, "BYE")
    _deliver(uas, bye)
    [event] = _received(uas)
    _deliver(uas, bye, now=0.5)
    assert uas.datagrams_to_send() == []  # Trying: "any further request retransmissions are discarded"
    uas.send_response(make_response(event.request, 100), now=0.6)
    assert _statuses(uas) == [100]
    _deliver(uas, bye, now=1.5)
    assert _statuses(uas) == [100]  # Proceeding: the provisional again
    uas.send_response(make_response(event.request, 200, to_tag="t"), now=2.0)
    assert _statuses(uas) == [200]
    _deliver(uas, bye, now=3.0)
    assert _statuses(uas) == [200]  # Completed: the final again
    assert _received(uas) == []
    assert uas.get_timer() == 2.0 + 64 * T1  # Timer J
    uas.handle_timer(2.0 + 64 * T1)
    assert uas.live_transactions == 0 and uas.get_timer() is None
    _deliver(uas, bye, now=40.0)  # the state is gone: the same request is new again
    assert len(_received(uas)) == 1


def test_non_invite_server_over_tcp_ends_with_its_final_response() -> None:
    uas = _uas()
    _deliver(uas, make_request(uas, "OPTIONS", transport="TCP"), transport="tcp")
    [event] = _received(uas)
    uas.send_response(make_response(event.request, 200, to_tag="t"), now=0.0)
    assert uas.live_transactions == 0 and uas.get_timer() is None


# ------------------------------------------------------------------------------------- ACK, CANCEL


def test_ack_matching_nothing_is_passed_up_and_counted() -> None:
    uas = _uas()
    _deliver(uas, make_request(uas, "ACK"))
    [event] = uas.events()
    assert isinstance(event, AckReceived) and event.server_tx is None
    assert uas.counters["ack_unmatched"] == 1


def test_cancel_without_invite_has_no_target() -> None:
    uas = _uas()
    _deliver(uas, make_request(uas, "CANCEL"))
    [event] = _received(uas)
    assert event.request.method == "CANCEL" and event.cancels is None
    assert uas.datagrams_to_send() == []  # the TU answers (481); the layer does not


def test_cancel_matches_only_its_own_invite() -> None:
    uas = _uas()
    first, second = make_request(uas, call_id="a"), make_request(uas, call_id="b")
    _deliver(uas, first)
    _deliver(uas, second)
    invites = _received(uas)
    cancel = Request("CANCEL", second.uri, second.headers.copy())
    cancel.headers.set("CSeq", "1 CANCEL")
    _deliver(uas, cancel)
    [event] = _received(uas)
    assert event.cancels == invites[1].server_tx != invites[0].server_tx


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    uas = _uas()
    request = make_request(uas, "OPTIONS")
    _deliver(uas, request)
    other = Request("OPTIONS", request.uri, request.headers.copy())
    branch = request.top_via.branch
    other.headers.set("Via", f"SIP/2.0/UDP 198.51.100.7:5060;branch={branch}")
    _deliver(uas, other)
    assert len(_received(uas)) == 2


# -------------------------------------------------------------------------------- RFC 2543 fallback


def test_rfc2543_invite_retransmission_non_2xx_ack_and_cancel_match() -> None:
    uas = _uas()
    data = (RFC4475 / "inv2543.dat").read_bytes()
    uas.receive(parse_message(data), source=UAC_ADDR, transport="udp", now=0.0)
    [event] = _received(uas)
    assert _statuses(uas) == [100]
    uas.receive(parse_message(data), source=UAC_ADDR, transport="udp", now=0.5)
    assert _received(uas) == [] and _statuses(uas) == [100]
    assert uas.counters["request_retransmission"] == 1
    # CANCEL: same Request-URI, Call-ID, From, To (no tag), CSeq number and top Via.
    invite = parse_message(data)
    assert isinstance(invite, Request)
    fields = ("Via", "From", "To", "Call-ID")
    cancel = Request("CANCEL", invite.uri, Headers([(n, invite.headers.get(n) or "") for n in fields]))
    cancel.headers.add("CSeq", "56 CANCEL")
    _deliver(uas, cancel)
    [cancel_event] = _received(uas)
    assert cancel_event.cancels == event.server_tx
    # The 404 is ACKed the RFC 2543 way: no branch, To tag of the response sent.
    response = make_response(event.request, 404, to_tag="uas404")
    uas.send_response(response, now=1.0)
    assert _statuses(uas) == [404]

    def ack(to_tag: str) -> Request:
        headers = Headers([(n, invite.headers.get(n) or "") for n in ("Via", "From", "Call-ID")])
        headers.add("To", f"{invite.headers.get('To')};tag={to_tag}")
        headers.add("CSeq", "56 ACK")
        return Request("ACK", invite.uri, headers)

    _deliver(uas, ack("someone-else"), now=1.1)
    [stray] = uas.events()
    assert isinstance(stray, AckReceived) and stray.server_tx is None
    _deliver(uas, ack("uas404"), now=1.2)
    assert uas.events() == []  # absorbed: Confirmed
    uas.handle_timer(10.0)  # Timer G would have re-sent the 404 by now had the ACK not matched
    assert uas.datagrams_to_send() == []
    assert uas.live_transactions == 1  # the CANCEL's transaction (the TU has not answered it)


def test_rfc2543_matching_for_a_bare_magic_cookie_branch() -> None:
    uas = _uas()
    data = (RFC4475 / "badbranch.dat").read_bytes()
    uas.receive(parse_message(data), source=("192.0.2.1", 5060), transport="udp", now=0.0)
    [event] = _received(uas)
    uas.receive(parse_message(data), source=("192.0.2.1", 5060), transport="udp", now=0.5)
    assert _received(uas) == [] and uas.counters["request_retransmission"] == 1
    uas.send_response(make_response(event.request, 200, to_tag="t"), now=0.6)
    assert _statuses(uas) == [200]
    uas.receive(parse_message(data), source=("192.0.2.1", 5060), transport="udp", now=0.7)
    assert _statuses(uas) == [200]


def test_rfc2543_request_with_another_cseq_is_a_new_transaction() -> None:
    uas = _uas()
    data = (RFC4475 / "badbranch.dat").read_bytes()
    uas.receive(parse_message(data), source=("192.0.2.1", 5060), transport="udp", now=0.0)
    uas.receive(
        parse_message(data.replace(b"CSeq: 8", b"CSeq: 9")),
        source=("192.0.2.1", 5060),
        transport="udp",
        now=0.1,
    )
    assert len(_received(uas)) == 2


# ------------------------------------------------------------------------- Via on receipt, rport


def test_received_added_for_a_domain_sent_by_and_responses_go_to_the_source_ip() -> None:
    uas = _uas()
    _deliver(uas, make_request(uas, "OPTIONS", via_host="uac.example.com:5080"))
    [event] = _received(uas)
    assert event.request.top_via.received == "192.0.2.10"
    assert event.request.top_via.rport is None
    response = make_response(event.request, 200, to_tag="t")
    assert response.top_via.received == "192.0.2.10"  # the UAC sees its address
    uas.send_response(response, now=0.0)
    [out] = uas.datagrams_to_send()
    assert out.destination == ("192.0.2.10", 5080)  # received address, sent-by port


def test_no_received_when_sent_by_is_the_source_address() -> None:
    uas = _uas()
    _deliver(uas, make_request(uas, "OPTIONS", via_host="192.0.2.10:5060"))
    [event] = _received(uas)
    assert event.request.top_via.received is None
    assert "received" not in (event.request.headers.get("Via") or "")


def test_rport_is_filled_and_responses_go_back_to_the_source_port() -> None:
    uas = _uas()
    request = make_request(uas, "OPTIONS", via_host="10.0.0.5:5060", via_params=";rport")
    uas.receive(parse_message(request.serialize()), source=("203.0.113.9", 40123), transport="udp", now=0.0)
    [event] = _received(uas)
    via = event.request.top_via
    assert (via.rport, via.received) == ("40123", "203.0.113.9")
    assert uas.response_destination(event.request, source=("203.0.113.9", 40123), transport="udp") == (
        "203.0.113.9",
        40123,
    )
    uas.send_response(make_response(event.request, 200, to_tag="t"), now=0.0)
    [out] = uas.datagrams_to_send()
    assert out.destination == ("203.0.113.9", 40123)
    sent = parse_message(out.data)
    assert sent.top_via.params["rport"] == "40123" and sent.top_via.received == "203.0.113.9"


def test_rport_forces_received_even_when_sent_by_matches() -> None:
    uas = _uas()
    _deliver(uas, make_request(uas, "OPTIONS", via_params=";rport"))
    [event] = _received(uas)
    assert (event.request.top_via.rport, event.request.top_via.received) == ("5060", "192.0.2.10")


def test_other_via_values_are_left_untouched() -> None:
    uas = _uas()
    request = make_request(uas, "OPTIONS", via_host="uac.example.com")
    top_line = request.headers.get("Via") or ""
    request.headers.set("Via", top_line + ", SIP/2.0/UDP p2.example.net;branch=z9hG4bKp2")
    request.headers.add("Via", "SIP/2.0/UDP p3.example.net;branch=z9hG4bKp3")
    _deliver(uas, request)
    [event] = _received(uas)
    vias = event.request.vias
    assert [v.host for v in vias] == ["uac.example.com", "p2.example.net", "p3.example.net"]
    assert [v.received for v in vias] == ["192.0.2.10", None, None]
    assert event.request.headers.get_all("Via")[1] == "SIP/2.0/UDP p3.example.net;branch=z9hG4bKp3"


def test_tcp_responses_use_the_connection_and_maddr_is_honoured() -> None:
    uas = _uas()
    request = make_request(uas, "OPTIONS", via_host="uac.example.com:5070")
    assert uas.response_destination(request, source=("198.51.100.4", 33333), transport="tcp") == (
        "198.51.100.4",
        33333,
    )
    multicast = make_request(
        uas, "OPTIONS", via_host="uac.example.com:5070", via_params=";maddr=239.255.255.1"
    )
    assert uas.response_destination(multicast, source=("198.51.100.4", 33333), transport="udp") == (
        "239.255.255.1",
        5070,
    )


# ------------------------------------------------------------------------------ anomalies, counted


def test_ack_before_any_final_response_is_dropped_and_counted() -> None:
    uas = _uas()
    invite = make_request(uas)
    _deliver(uas, invite)
    _received(uas)
    ack = Request("ACK", invite.uri, invite.headers.copy())
    ack.headers.set("CSeq", "1 ACK")
    uas.datagrams_to_send()
    _deliver(uas, ack)
    assert uas.events() == [] and uas.datagrams_to_send() == []
    assert uas.counters["ack_before_final"] == 1


def test_request_whose_cseq_method_differs_is_dropped_and_counted() -> None:
    uas = _uas()
    request = make_request(uas, "OPTIONS")
    request.headers.set("CSeq", "1 INFO")  # the parser rejects this; the layer must not trust it did
    uas.receive(request, source=UAC_ADDR, transport="udp", now=0.0)
    assert uas.events() == [] and uas.live_transactions == 0
    assert uas.counters["request_cseq_method_mismatch"] == 1


def test_rfc2543_requests_differing_only_in_request_uri_collide_and_are_counted() -> None:
    uas = _uas()
    data = (RFC4475 / "badbranch.dat").read_bytes()
    uas.receive(parse_message(data), source=("192.0.2.1", 5060), transport="udp", now=0.0)
    other = data.replace(b"OPTIONS sip:user@example.com", b"OPTIONS sip:other@example.com")
    uas.receive(parse_message(other), source=("192.0.2.1", 5060), transport="udp", now=0.1)
    assert len(_received(uas)) == 1
    assert uas.counters["rfc2543_key_collision"] == 1


def test_transport_error_ends_server_transactions_quietly() -> None:
    uas = _uas()
    _deliver(uas, make_request(uas, "INVITE", transport="TCP"), transport="tcp")
    _received(uas)
    uas.transport_error(destination=UAC_ADDR, transport="tcp", now=1.0)
    assert uas.live_transactions == 0 and uas.events() == []


def test_stopped_timers_do_not_pile_up() -> None:
    # Over TCP every non-INVITE client transaction stops Timer F when its answer arrives and K is zero:
    # each leaves one stale heap entry behind unless the layer compacts its heap.
    wire = Wire(transport="tcp")
    for n in range(300):
        wire.send(make_request(wire.uac, "OPTIONS", transport="TCP", call_id=f"o{n}"))
        wire.respond(wire.last_request("OPTIONS"), 200)
    assert wire.uac.live_transactions == 0
    assert len(wire.uac._heap) <= 65
