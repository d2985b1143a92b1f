"""RFC 4028 session timers: header parsing, UAS/UAC negotiation, 422 retry, the timer on a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sip.errors import LocalProtocolError, RemoteProtocolError
from gateway.sip.headers import Headers
from gateway.sip.message import Request
from gateway.sip.parser import parse_message
from gateway.sip.session_timer import (
    AcceptTimer,
    NoTimer,
    RefreshDue,
    Refresher,
    RejectTooSmall,
    SessionExpired,
    SessionExpires,
    SessionTimer,
    SessionTimerConfig,
    TimerAgreement,
    negotiate_uas,
    parse_min_se,
    parse_session_expires,
    read_uac_response,
    retry_after_422,
    uac_offer,
)

CONFIG = SessionTimerConfig()

CAPTURED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sip" / "captured"


def captured_headers(name: str) -> Headers:
    message = parse_message((CAPTURED / name).read_bytes())
    assert isinstance(message, Request)
    return message.headers


# PJSIP 2.15: "Supported: replaces, 100rel, timer, norefersub", "Session-Expires: 1800", "Min-SE: 90"
PJSIP_INVITE = captured_headers("invite-pjsip-2.15.dat")
# baresip 1.0 sends an empty Supported header and no timer headers
BARESIP_INVITE = captured_headers("invite-baresip-1.0.dat")
# SIPp's minimal INVITE has neither Supported nor timer headers
SIPP_INVITE = captured_headers("invite-sipp-3.6-uac.dat")


# ----------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("text", "interval", "refresher", "params"),
    [
        ("1800", 1800, None, ()),
        ("1800;refresher=uac", 1800, Refresher.UAC, ()),
        (" 90 ; refresher = UAS ; x-foo=1;bar", 90, Refresher.UAS, (("x-foo", "1"), ("bar", None))),
    ],
)
def test_parse_session_expires(
    text: str, interval: int, refresher: Refresher | None, params: tuple[tuple[str, str | None], ...]
) -> None:
    parsed = parse_session_expires(text)
    assert parsed == SessionExpires(interval=interval, refresher=refresher, params=params)
    assert parse_session_expires(str(parsed)) == parsed


def test_session_expires_serialisation() -> None:
    assert str(SessionExpires(interval=600, refresher=Refresher.UAS)) == "600;refresher=uas"
    assert str(SessionExpires(interval=600)) == "600"


def test_compact_form_x_is_read() -> None:
    decision = negotiate_uas(Headers([("k", "timer"), ("x", "1200;refresher=uac")]), CONFIG)
    assert isinstance(decision, AcceptTimer)
    assert (decision.interval, decision.refresher) == (1200, Refresher.UAC)


@pytest.mark.parametrize("text", ["", "abc", "-5", "1e3", "1800;refresher=both", "1800;refresher", "1800;;", "٣٠٠", "9" * 20])
def test_malformed_session_expires_is_a_400(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_session_expires(text)
    assert info.value.status_code == 400


def test_parse_min_se() -> None:
    assert parse_min_se("90") == 90
    assert parse_min_se(" 600 ;x=y") == 600
    with pytest.raises(RemoteProtocolError):
        parse_min_se("ninety")


def test_duplicate_session_expires_is_a_400() -> None:
    with pytest.raises(RemoteProtocolError):
        negotiate_uas(Headers([("Session-Expires", "1800"), ("Session-Expires", "900")]), CONFIG)


def test_config_refuses_min_se_below_90() -> None:
    with pytest.raises(LocalProtocolError):
        SessionTimerConfig(min_se=60)
    with pytest.raises(LocalProtocolError):
        SessionTimerConfig(min_se=600, session_expires=300)


# ----------------------------------------------------------------------------- UAS


def test_uas_answers_pjsip_invite_with_uac_refreshing() -> None:
    decision = negotiate_uas(PJSIP_INVITE, CONFIG)
    assert decision == AcceptTimer(
        interval=1800,
        refresher=Refresher.UAC,
        we_refresh=False,
        headers=(("Session-Expires", "1800;refresher=uac"), ("Require", "timer")),
    )


def test_uas_can_prefer_to_refresh_itself() -> None:
    decision = negotiate_uas(PJSIP_INVITE, SessionTimerConfig(preferred_refresher=Refresher.UAS))
    assert isinstance(decision, AcceptTimer)
    assert decision.we_refresh
    assert ("Session-Expires", "1800;refresher=uas") in decision.headers


def test_uas_honours_the_uac_refresher_choice() -> None:
    headers = Headers([("Supported", "timer"), ("Session-Expires", "1800;refresher=uas")])
    decision = negotiate_uas(headers, CONFIG)
    assert isinstance(decision, AcceptTimer)
    assert (decision.refresher, decision.we_refresh) == (Refresher.UAS, True)


def test_uas_rejects_too_small_interval_with_422_and_min_se() -> None:
    decision = negotiate_uas(Headers([("Supported", "timer"), ("Session-Expires", "60")]), CONFIG)
    assert decision == RejectTooSmall(min_se=90)
    assert decision.status_code == 422
    assert decision.headers == (("Min-SE", "90"),)


def test_uas_rejects_below_its_own_configured_minimum() -> None:
    config = SessionTimerConfig(min_se=600)
    decision = negotiate_uas(Headers([("Supported", "timer"), ("Session-Expires", "300")]), config)
    assert decision == RejectTooSmall(min_se=600)


def test_uas_may_reduce_but_not_below_request_min_se_nor_increase() -> None:
    long_request = Headers([("Supported", "timer"), ("Session-Expires", "7200"), ("Min-SE", "3600")])
    decision = negotiate_uas(long_request, CONFIG)
    assert isinstance(decision, AcceptTimer)
    assert decision.interval == 3600  # reduced from 7200 towards our 1800, floor 3600
    short_request = Headers([("Supported", "timer"), ("Session-Expires", "600")])
    decision = negotiate_uas(short_request, CONFIG)
    assert isinstance(decision, AcceptTimer)
    assert decision.interval == 600  # never raised to our 1800


def test_uas_must_refresh_when_the_uac_lacks_support() -> None:
    # Session-Expires inserted by a proxy on behalf of a UAC without "timer"
    decision = negotiate_uas(Headers([("Session-Expires", "1800;refresher=uac")]), CONFIG)
    assert decision == AcceptTimer(
        interval=1800,
        refresher=Refresher.UAS,
        we_refresh=True,
        headers=(("Session-Expires", "1800;refresher=uas"),),
    )


@pytest.mark.parametrize("capture", ["invite-baresip-1.0.dat", "invite-sipp-3.6-uac.dat"])
def test_uas_runs_timer_for_peers_without_support_as_refresher_uas(capture: str) -> None:
    decision = negotiate_uas(captured_headers(capture), CONFIG)
    assert isinstance(decision, AcceptTimer)
    assert (decision.interval, decision.refresher, decision.we_refresh) == (1800, Refresher.UAS, True)
    assert all(name != "Require" for name, _ in decision.headers)


def test_uas_without_timer_when_disabled_for_unsupporting_peers() -> None:
    config = SessionTimerConfig(enable_without_peer_support=False)
    assert negotiate_uas(BARESIP_INVITE, config) == NoTimer()
    assert negotiate_uas(SIPP_INVITE, config) == NoTimer()


def test_uas_requests_timer_from_supporting_uac_that_asked_none() -> None:
    decision = negotiate_uas(Headers([("Supported", "100rel, timer"), ("Min-SE", "2400")]), CONFIG)
    assert decision == AcceptTimer(
        interval=2400,
        refresher=Refresher.UAC,
        we_refresh=False,
        headers=(("Session-Expires", "2400;refresher=uac"), ("Require", "timer")),
    )


# ----------------------------------------------------------------------------- UAC


def test_uac_offer_defaults() -> None:
    assert uac_offer(CONFIG) == (("Supported", "timer"), ("Session-Expires", "1800"), ("Min-SE", "90"))


def test_uac_refresh_names_itself_refresher() -> None:
    headers = uac_offer(CONFIG, interval=600, refresher=Refresher.UAC)
    assert ("Session-Expires", "600;refresher=uac") in headers


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (Headers([("Session-Expires", "1800;refresher=uac"), ("Require", "timer")]), TimerAgreement(interval=1800, we_refresh=True)),
        (Headers([("Session-Expires", "900;refresher=uas"), ("Require", "timer")]), TimerAgreement(interval=900, we_refresh=False)),
        (Headers([("Session-Expires", "900")]), TimerAgreement(interval=900, we_refresh=True)),
        (Headers([("Supported", "timer")]), None),
    ],
)
def test_uac_reads_2xx(response: Headers, expected: TimerAgreement | None) -> None:
    assert read_uac_response(response) == expected


def test_uac_refuses_2xx_interval_below_90() -> None:
    with pytest.raises(RemoteProtocolError):
        read_uac_response(Headers([("Session-Expires", "30;refresher=uac")]))


def test_422_round_trip_between_uac_and_uas() -> None:
    uas_config = SessionTimerConfig(min_se=600, session_expires=1800)
    uac_config = SessionTimerConfig()
    first = Headers(uac_offer(uac_config, interval=300))
    decision = negotiate_uas(first, uas_config)
    assert isinstance(decision, RejectTooSmall)

    retry_headers = retry_after_422(Headers(decision.headers), uac_config, offered_interval=300)
    assert ("Min-SE", "600") in retry_headers
    assert ("Session-Expires", "600") in retry_headers
    accepted = negotiate_uas(Headers(retry_headers), uas_config)
    assert isinstance(accepted, AcceptTimer)
    assert accepted.interval == 600

    agreement = read_uac_response(Headers(accepted.headers))
    assert agreement == TimerAgreement(interval=600, we_refresh=True)  # the UAS left refreshing to us


def test_422_without_usable_min_se_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        retry_after_422(Headers(), CONFIG, offered_interval=300)
    assert info.value.is_response
    with pytest.raises(RemoteProtocolError):
        retry_after_422(Headers([("Min-SE", "300")]), CONFIG, offered_interval=300)


# ----------------------------------------------------------------------------- the timer


def test_refresher_gets_refresh_due_at_half_interval() -> None:
    timer = SessionTimer()
    assert timer.get_timer() is None
    timer.start(interval=1800, we_refresh=True, now=100.0)
    assert timer.get_timer() == 1000.0
    timer.handle_timer(999.9)
    assert list(timer.events()) == []
    timer.handle_timer(1000.0)
    assert list(timer.events()) == [RefreshDue(interval=1800, expires_at=1900.0)]
    assert list(timer.events()) == []  # drained
    # the refresh succeeded: start again, the next refresh is half an interval later
    timer.start(interval=1800, we_refresh=True, now=1002.0)
    assert timer.get_timer() == 1902.0


def test_refresher_whose_refresh_never_succeeds_sees_expiry() -> None:
    timer = SessionTimer()
    timer.start(interval=1800, we_refresh=True, now=0.0)
    timer.handle_timer(900.0)
    assert [type(e) for e in timer.events()] == [RefreshDue]
    assert timer.get_timer() == 1800.0
    timer.handle_timer(1800.0)
    assert list(timer.events()) == [SessionExpired(interval=1800)]
    assert timer.get_timer() is None
    assert not timer.running


def test_late_wakeup_reports_both_events_in_order() -> None:
    timer = SessionTimer()
    timer.start(interval=90, we_refresh=True, now=0.0)
    timer.handle_timer(500.0)
    assert [type(e) for e in timer.events()] == [RefreshDue, SessionExpired]


@pytest.mark.parametrize(("interval", "deadline"), [(1800, 1768.0), (90, 60.0), (120, 88.0)])
def test_non_refresher_expires_before_the_interval(interval: int, deadline: float) -> None:
    timer = SessionTimer()
    timer.start(interval=interval, we_refresh=False, now=0.0)
    assert timer.get_timer() == deadline
    timer.handle_timer(deadline - 0.001)
    assert list(timer.events()) == []
    timer.handle_timer(deadline)
    assert list(timer.events()) == [SessionExpired(interval=interval)]


def test_stop_and_apply() -> None:
    timer = SessionTimer()
    timer.apply(TimerAgreement(interval=600, we_refresh=False), now=10.0)
    assert (timer.interval, timer.we_refresh, timer.get_timer()) == (600, False, 10.0 + 600 - 32)
    timer.apply(NoTimer(), now=20.0)  # a refresh answered without Session-Expires turns it off
    assert timer.get_timer() is None
    timer.handle_timer(10_000.0)
    assert list(timer.events()) == []
    with pytest.raises(LocalProtocolError):
        timer.start(interval=0, we_refresh=True, now=0.0)


def test_two_sides_back_to_back_keep_the_session_alive() -> None:
    """UAS (us) lets the UAC refresh; the UAC refreshes at half time, so our expiry never fires."""
    decision = negotiate_uas(PJSIP_INVITE, CONFIG)
    assert isinstance(decision, AcceptTimer)
    agreement = read_uac_response(Headers(decision.headers))
    assert agreement is not None
    ours, theirs = SessionTimer(), SessionTimer()
    ours.apply(decision, now=0.0)
    theirs.apply(agreement, now=0.0)
    refreshes = 0
    for _ in range(20):
        deadlines = [t for t in (ours.get_timer(), theirs.get_timer()) if t is not None]
        now = min(deadlines)
        ours.handle_timer(now)
        theirs.handle_timer(now)
        assert list(ours.events()) == []  # we never give up on a peer that refreshes
        for event in theirs.events():
            assert isinstance(event, RefreshDue)
            refreshes += 1
            refresh = negotiate_uas(Headers(uac_offer(CONFIG, interval=1800, refresher=Refresher.UAC)), CONFIG)
            assert isinstance(refresh, AcceptTimer)
            ours.apply(refresh, now=now)
            theirs.apply(read_uac_response(Headers(refresh.headers)), now=now)
    assert refreshes == 20
    assert now == 20 * 900.0  # a refresh every half interval, the session still alive
