"""REFER helpers (RFC 3515 / 3892 / 3420): sipfrag status lines, Subscription-State, Refer-To and
Referred-By values, and the transferor's state machine driven with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip.errors import LocalProtocolError, RemoteProtocolError
from gateway.sip.headers import parse_name_addr
from gateway.sip.refer import (
    ReferAccepted,
    ReferFailed,
    ReferProgress,
    ReferRejected,
    ReferState,
    ReferSucceeded,
    ReferTransfer,
    is_refer_event,
    number_uri,
    parse_sipfrag,
    parse_subscription_state,
    refer_to_value,
    referred_by_value,
)
from gateway.sip.uri import SipUri, parse_uri

# ------------------------------------------------------------------ sipfrag


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        (b"SIP/2.0 100 Trying", 100, "Trying"),
        (b"SIP/2.0 200 OK\r\n", 200, "OK"),
        (b"SIP/2.0 180 Ringing\r\nContact: <sip:b@h>\r\n\r\n", 180, "Ringing"),
        (b"sip/2.0 486 Busy Here\r\n", 486, "Busy Here"),
        (b"\r\nSIP/2.0 603 Declined\n", 603, "Declined"),
        (b"SIP/2.0 503", 503, ""),
        ("SIP/2.0 200 Très bien".encode(), 200, "Très bien"),
    ],
)
def test_sipfrag_status_line_gives_the_status(body: bytes, code: int, reason: str) -> None:
    status = parse_sipfrag(body)
    assert (status.status_code, status.reason) == (code, reason)
    assert status.final is (code >= 200)
    assert status.success is (200 <= code < 300)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"INVITE sip:bob@example.com SIP/2.0\r\n",  # a request line: RFC 3515 wants a Status-Line
        b"SIP/2.0 99 Too low",
        b"SIP/2.0 700 Too high",
        b"SIP/2.0 2000 OK",
        b"SIP/3.0 200 OK",
        b"HTTP/1.1 200 OK",
        b"SIP/2.0 200\x01OK",
        b"SIP/2.0 OK 200",
        b"\xff\xfe\x00garbage",
    ],
)
def test_malformed_sipfrag_is_the_peers_fault(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_sipfrag(body)
    assert info.value.status_code == 400


@given(st.integers(100, 699), st.text(st.characters(min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=("Cs",)), max_size=40))
def test_any_status_line_round_trips(code: int, reason: str) -> None:
    status = parse_sipfrag(f"SIP/2.0 {code} {reason}\r\n".encode())
    assert status.status_code == code
    assert status.reason == reason.strip()


@given(st.binary(max_size=200))
def test_sipfrag_parser_returns_or_raises_its_protocol_error(body: bytes) -> None:
    try:
        status = parse_sipfrag(body)
    except RemoteProtocolError:
        return
    assert 100 <= status.status_code <= 699


# ------------------------------------------------------------------ Subscription-State / Event


def test_subscription_state_values() -> None:
    assert parse_subscription_state("active;expires=60").expires == 60
    term = parse_subscription_state("terminated;reason=noresource")
    assert term.terminated and term.reason == "noresource"
    assert parse_subscription_state(" Pending ").state == "pending"
    for bad in ("", ";expires=1", "active;expires=soon", "act ive"):
        with pytest.raises(RemoteProtocolError):
            parse_subscription_state(bad)


@given(st.text(max_size=60))
def test_subscription_state_parser_returns_or_raises_its_protocol_error(value: str) -> None:
    try:
        parse_subscription_state(value)
    except RemoteProtocolError:
        pass


def test_refer_event_package() -> None:
    assert is_refer_event("refer") and is_refer_event("Refer;id=93809824")
    assert not is_refer_event("dialog") and not is_refer_event(None)


# ------------------------------------------------------------------ builders


def test_refer_to_keeps_uri_parameters_inside_the_angle_brackets_and_adds_headers() -> None:
    uri = parse_uri("sip:+15551234@pbx.example.com:5070;transport=udp")
    assert isinstance(uri, SipUri)
    value = refer_to_value(uri, {"X-Case": "42 a&b"})
    assert value == "<sip:+15551234@pbx.example.com:5070;transport=udp?X-Case=42%20a%26b>"
    parsed = parse_name_addr(value)
    assert isinstance(parsed.uri, SipUri) and parsed.uri.params == {"transport": "udp"} and not parsed.params


def test_referred_by_is_our_uri_without_tag_or_headers() -> None:
    uri = SipUri(host="gw.example.com", user="voicegw", params={"tag": "x"}, headers="a=b")
    assert referred_by_value(uri) == "<sip:voicegw@gw.example.com>"


def test_number_uri_dials_through_the_host() -> None:
    assert str(number_uri("+1 (555) 123-4567", "10.0.0.1", 5080)) == "sip:+15551234567@10.0.0.1:5080;user=phone"
    assert str(number_uri("*72#", "pbx")) == "sip:*72#@pbx;user=phone"


@pytest.mark.parametrize("number", ["", "+", "1234@evil.example.com", "123;maddr=10.0.0.9", "12>34", "abc"])
def test_number_uri_refuses_what_is_not_a_dial_string(number: str) -> None:
    with pytest.raises(LocalProtocolError):
        number_uri(number, "pbx")


@given(st.text(max_size=30))
def test_number_uri_never_lets_a_host_or_parameter_through(number: str) -> None:
    try:
        uri = number_uri(number, "pbx")
    except LocalProtocolError:
        return
    parsed = parse_uri(str(uri))
    assert isinstance(parsed, SipUri) and parsed.host == "pbx" and parsed.params == {"user": "phone"}


# ------------------------------------------------------------------ state machine


def state(t: ReferTransfer) -> ReferState:
    return t.state


def notify(t: ReferTransfer, body: bytes, *, now: float, state: str = "active;expires=60",
           ctype: str = "message/sipfrag;version=2.0", event: str = "refer") -> int:
    return t.on_notify(event=event, subscription_state=state, content_type=ctype, body=body, now=now).status_code


def test_accepted_then_trying_then_ok_succeeds() -> None:
    t = ReferTransfer(now=0.0, notify_timeout=30)
    t.on_refer_response(202, "Accepted", now=0.1)
    assert state(t) is ReferState.ACCEPTED and t.get_timer() == pytest.approx(30.1)
    assert notify(t, b"SIP/2.0 100 Trying\r\n", now=0.2) == 200
    assert notify(t, b"SIP/2.0 200 OK\r\n", now=2.0, state="terminated;reason=noresource") == 200
    assert state(t) is ReferState.SUCCEEDED and t.done and t.get_timer() is None
    assert t.events() == [
        ReferAccepted(status_code=202),
        ReferProgress(status_code=100, reason="Trying"),
        ReferSucceeded(status_code=200, reason="OK"),
    ]


def test_failure_sipfrag_fails() -> None:
    t = ReferTransfer(now=0.0)
    t.on_refer_response(202, now=0.0)
    notify(t, b"SIP/2.0 486 Busy Here", now=1.0, state="terminated")
    assert state(t) is ReferState.FAILED
    assert t.events()[-1] == ReferFailed(status_code=486, reason="Busy Here")


def test_terminated_without_final_status_fails() -> None:
    t = ReferTransfer(now=0.0)
    t.on_refer_response(202, now=0.0)
    notify(t, b"SIP/2.0 180 Ringing", now=1.0, state="terminated;reason=timeout")
    assert state(t) is ReferState.FAILED


def test_notify_before_the_202_counts_as_acceptance() -> None:
    t = ReferTransfer(now=0.0)
    notify(t, b"SIP/2.0 100 Trying", now=0.1)
    t.on_refer_response(202, now=0.2)
    assert state(t) is ReferState.ACCEPTED
    assert t.events() == [ReferAccepted(status_code=None), ReferProgress(status_code=100, reason="Trying")]


@pytest.mark.parametrize("status", [405, 501, 403, 603, None])
def test_refused_or_unanswered_refer_is_rejected(status: int | None) -> None:
    t = ReferTransfer(now=0.0)
    t.on_refer_response(100, now=0.0)  # provisional: nothing yet
    assert state(t) is ReferState.SENT
    t.on_refer_response(status, "Method Not Allowed" if status == 405 else "", now=0.5)
    assert state(t) is ReferState.REJECTED and t.get_timer() is None
    assert t.events() == [ReferRejected(status_code=status, reason="Method Not Allowed" if status == 405
                                        else "no response" if status is None else "")]


def test_no_final_notify_before_the_timer_fails() -> None:
    t = ReferTransfer(now=10.0, notify_timeout=5)
    t.on_refer_response(202, now=10.0)
    t.handle_timer(14.9)
    assert state(t) is ReferState.ACCEPTED
    t.handle_timer(15.0)
    assert state(t) is ReferState.FAILED and t.events()[-1] == ReferFailed(status_code=None, reason="no final NOTIFY")


def test_bad_notifies_are_answered_and_change_nothing() -> None:
    t = ReferTransfer(now=0.0)
    t.on_refer_response(202, now=0.0)
    t.events()
    assert notify(t, b"SIP/2.0 200 OK", now=1, event="dialog") == 489
    assert notify(t, b"garbage", now=1) == 400
    assert notify(t, b"SIP/2.0 200 OK", now=1, ctype="text/plain") == 415
    assert notify(t, b"SIP/2.0 200 OK", now=1, state="active;expires=x") == 400
    assert state(t) is ReferState.ACCEPTED and t.events() == []


def test_outcome_is_final() -> None:
    t = ReferTransfer(now=0.0)
    t.on_refer_response(202, now=0.0)
    notify(t, b"SIP/2.0 200 OK", now=1)
    notify(t, b"SIP/2.0 503 Service Unavailable", now=2)
    t.on_refer_response(500, now=3)
    t.handle_timer(100)
    assert state(t) is ReferState.SUCCEEDED
