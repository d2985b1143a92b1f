"""Admission policy at the SIP edge (gateway.admission) with a fake clock: token buckets, 503-then-drop,
bans, the trusted-source ACL, scanner User-Agents, bounded memory and the overload signal."""

from __future__ import annotations

import pytest

from gateway.admission import (
    Action,
    AdmissionPolicy,
    CallRate,
    Limits,
    LoadMonitor,
    OverloadLimits,
    TokenBucket,
    is_scanner,
    parse_networks,
)
from gateway.config import DEFAULT_SCANNER_USER_AGENTS, SecurityConfig, load_config_text

ATTACKER = "203.0.113.7"


def policy(**limits: float) -> AdmissionPolicy:
    return AdmissionPolicy(Limits(**limits),  # type: ignore[arg-type]
                           trusted=parse_networks(["192.0.2.0/24", "2001:db8::/32"]),
                           scanner_user_agents=DEFAULT_SCANNER_USER_AGENTS)


def actions(p: AdmissionPolicy, address: str, count: int, now: float) -> list[Action]:
    return [p.check_request(address, "Linphone/5", now).action for _ in range(count)]


def test_token_bucket_refills_at_its_rate_up_to_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=4.0, tokens=4.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [True] * 4 + [False]
    assert bucket.take(0.5) and not bucket.take(0.5)  # one token per half second
    bucket.refill(100.0)
    assert bucket.tokens == 4.0


def test_burst_passes_then_503_then_silent_drop_while_the_flood_continues() -> None:
    p = policy(rate=10, burst=20, reject_seconds=5)
    assert actions(p, ATTACKER, 20, 0.0) == [Action.ACCEPT] * 20
    first = p.check_request(ATTACKER, None, 0.0)
    assert first.action is Action.REJECT and first.reason == "rate_limit" and first.notable
    assert not p.check_request(ATTACKER, None, 0.0).notable  # logged once, not per request
    # keeps flooding at 100/s: some requests get a token (10/s), the rest 503 for 5 s ...
    seen = [p.check_request(ATTACKER, None, i / 100).action for i in range(1, 400)]
    assert seen.count(Action.ACCEPT) <= 40 and Action.DROP not in seen
    # ... then drops
    late = [p.check_request(ATTACKER, None, 5.0 + i / 100) for i in range(100)]
    assert {d.action for d in late} <= {Action.ACCEPT, Action.DROP} and Action.DROP in {d.action for d in late}
    assert sum(d.notable for d in late) == 1


def test_a_source_that_goes_quiet_starts_afresh() -> None:
    p = policy(rate=10, burst=20, reject_seconds=5)
    actions(p, ATTACKER, 100, 0.0)
    actions(p, ATTACKER, 100, 6.0)  # now dropping
    assert actions(p, ATTACKER, 20, 60.0) == [Action.ACCEPT] * 20
    assert p.check_request(ATTACKER, None, 60.0).action is Action.REJECT  # 503 again, not drop


def test_one_source_over_its_rate_does_not_limit_another() -> None:
    p = policy(rate=1, burst=2)
    actions(p, ATTACKER, 50, 0.0)
    assert actions(p, "198.51.100.1", 2, 0.0) == [Action.ACCEPT] * 2


@pytest.mark.parametrize("address", ["192.0.2.10", "2001:db8::5", "::ffff:192.0.2.10"])
def test_trusted_sources_are_never_limited(address: str) -> None:
    p = policy(rate=1, burst=1)
    assert p.is_trusted(address)
    assert set(actions(p, address, 1000, 0.0)) == {Action.ACCEPT}
    assert p.tracked_sources == 0


def test_trunk_hosts_join_the_trusted_set_and_names_are_ignored() -> None:
    p = AdmissionPolicy.from_config(SecurityConfig(), ["10.1.2.3", "sip.example.com"])
    assert p.is_trusted("10.1.2.3") and not p.is_trusted("10.1.2.4") and p.has_trusted
    assert not AdmissionPolicy.from_config(SecurityConfig()).has_trusted
    assert not p.is_trusted("not-an-address")


def test_requests_in_a_live_dialog_are_never_limited() -> None:
    p = policy(rate=1, burst=1)
    actions(p, ATTACKER, 10, 0.0)
    assert p.check_request(ATTACKER, None, 0.0, in_dialog=True).action is Action.ACCEPT


@pytest.mark.parametrize("agent", ["friendly-scanner", "sipvicious 0.3.4", "SIPVicious", "VaxSIPUserAgent/3.1",
                                   "pplsip", "sipcli/v1.8", "iWar", "sip-scan", "SIVuS", "smap 0.6"])
def test_scanner_user_agents_are_dropped_even_from_trusted_sources(agent: str) -> None:
    p = policy()
    for address in (ATTACKER, "192.0.2.10"):
        decision = p.check_request(address, agent, 0.0)
        assert decision.action is Action.DROP and decision.reason == "scanner"


@pytest.mark.parametrize("agent", [None, "", "Linphone/5.2", "Zoiper rv2.10", "PolycomVVX", "Asterisk PBX 20",
                                   "FreeSWITCH-mod_sofia/1.10", "voicegw/0.1", "sipp"])
def test_ordinary_user_agents_pass(agent: str | None) -> None:
    assert not is_scanner(agent, DEFAULT_SCANNER_USER_AGENTS)


def test_scanner_list_is_overridable() -> None:
    config = load_config_text("security: {scanner_user_agents: [evilbot]}", env={})
    p = AdmissionPolicy.from_config(config.security)
    assert p.check_request(ATTACKER, "EvilBot/1", 0.0).action is Action.DROP
    assert p.check_request(ATTACKER, "friendly-scanner", 0.0).action is Action.ACCEPT


def test_failed_auth_bans_after_n_failures_in_the_window_then_expires() -> None:
    p = policy(ban_failures=3, ban_window=10, ban_seconds=60)
    assert not p.record_auth_failure(ATTACKER, 0.0)
    assert not p.record_auth_failure(ATTACKER, 20.0)  # the first fell out of the window
    assert not p.record_auth_failure(ATTACKER, 21.0)
    assert p.record_auth_failure(ATTACKER, 22.0)
    decision = p.check_request(ATTACKER, None, 30.0)
    assert decision.action is Action.DROP and decision.reason == "banned"
    assert p.banned_count(30.0) == 1
    assert p.check_request(ATTACKER, None, 83.0).action is Action.ACCEPT
    assert p.banned_count(83.0) == 0


def test_trusted_sources_are_never_banned() -> None:
    p = policy(ban_failures=1)
    assert not p.record_auth_failure("192.0.2.10", 0.0)
    assert p.check_request("192.0.2.10", None, 1.0).action is Action.ACCEPT


def test_source_table_is_bounded_and_idle_entries_expire() -> None:
    p = policy(max_sources=100, idle_seconds=30)
    for i in range(1000):
        p.check_request(f"10.0.{i // 256}.{i % 256}", None, 0.0)
    assert p.tracked_sources == 100
    p.check_request(ATTACKER, None, 31.0)
    assert p.tracked_sources == 1


def test_ban_table_is_bounded() -> None:
    p = policy(max_sources=16, ban_failures=1)
    for i in range(100):
        p.record_auth_failure(f"10.0.0.{i}", 0.0)
    assert p.banned_count(1.0) == 16


def test_load_monitor_sheds_while_the_loop_lags_and_for_the_hold_after() -> None:
    monitor = LoadMonitor(OverloadLimits(lag_threshold=0.1, hold=5.0, lag_window=10, lag_late_samples=5))
    assert not monitor.observe_lag(0.02, 1.0) and not monitor.overloaded(1.0)
    started = [monitor.observe_lag(0.25, 2.0 + i * 0.3) is not None for i in range(6)]
    assert started == [False, False, False, False, True, False]  # one episode, reported once
    assert monitor.overloaded(3.2) and monitor.overloaded(8.0)
    for i in range(10):
        monitor.observe_lag(0.001, 8.0 + i * 0.05)
    assert not monitor.overloaded(8.45 + 5.1)  # the window emptied of late samples, then the hold ran out


def test_one_stall_such_as_start_up_does_not_shed() -> None:
    monitor = LoadMonitor(OverloadLimits(lag_threshold=0.1, hold=5.0))
    monitor.observe_lag(2.5, 1.0)
    for i in range(20):
        monitor.observe_lag(0.002, 1.05 + i * 0.05)
    assert not monitor.overloaded(2.0)


def test_call_rate_cap() -> None:
    rate = CallRate.per_second(2.0, 0.0)
    assert [rate.admit(0.0) for _ in range(3)] == [True, True, False]
    assert rate.admit(0.5)
    unlimited = CallRate.per_second(None, 0.0)
    assert all(unlimited.admit(0.0) for _ in range(1000))


def test_security_defaults_are_on_and_outbound_is_closed() -> None:
    security = load_config_text("{}", env={}).security
    assert security.rate > 0 and security.burst > 0 and security.max_calls is not None
    assert security.hide_unknown_numbers and "friendly-scanner" in security.scanner_user_agents
    assert not security.outbound_allows("+15551234567")
    opened = SecurityConfig(outbound_allow=["+1*", "sip:*@pbx.example.com"])
    assert opened.outbound_allows("+15551234567") and not opened.outbound_allows("+4420123")
    assert opened.outbound_allows("sip:100@pbx.example.com")


def test_trusted_sources_must_be_cidrs() -> None:
    with pytest.raises(Exception, match="not an address or CIDR"):
        load_config_text("security: {trusted_sources: [bogus]}", env={})
