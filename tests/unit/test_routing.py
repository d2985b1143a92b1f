"""DID routing and the INVITE's headers as variables (gateway.routing), on parsed SIP INVITEs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config_text
from gateway.routing import route_invite, sip_variables
from gateway.sip.message import Request
from gateway.sip.parser import parse_message

ASSISTANTS = """
assistants:
  sales: {model: {provider: rules}}
  support: {model: {provider: rules}}
  other: {model: {provider: rules}}
"""


def invite(ruri_user: str, to_user: str | None = None, *headers: str) -> Request:
    to_user = to_user if to_user is not None else ruri_user
    text = (
        f"INVITE sip:{ruri_user}@gw.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1\r\n"
        "From: \"Alice\" <sip:+447700900123@carrier.example>;tag=a1\r\n"
        f"To: <sip:{to_user}@gw.example.com>\r\n"
        "Call-ID: c1@10.0.0.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:10.0.0.1>\r\n"
        + "".join(f"{h}\r\n" for h in headers)
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def numbers(yaml_numbers: str) -> list:  # type: ignore[type-arg]
    return list(load_config_text(ASSISTANTS + "numbers:\n" + yaml_numbers).numbers)


def test_specific_entries_match_in_file_order_and_the_catch_all_only_last() -> None:
    routes = numbers(
        '  - {number: "*", assistant: other}\n'
        '  - {number: "+1555*", assistant: sales}\n'
        '  - {number: "+15550001111", assistant: support}\n'
    )
    # file order among specific entries: the prefix is listed first, so it wins over the exact entry
    assert route_invite(routes, invite("+15550001111")).route.assistant == "sales"  # type: ignore[union-attr]
    assert route_invite(routes, invite("+4420")).route.assistant == "other"  # type: ignore[union-attr]
    match = route_invite(routes, invite("+15559999999"))
    assert match is not None and match.number == "+15559999999"


def test_to_user_is_used_when_the_request_uri_names_no_configured_number() -> None:
    routes = numbers('  - {number: "+15550001111", assistant: support}\n  - {number: "*", assistant: other}\n')
    match = route_invite(routes, invite("trunk-gw", "+15550001111"))
    assert match is not None and match.route.assistant == "support" and match.number == "+15550001111"


def test_no_match_without_catch_all() -> None:
    routes = numbers('  - {number: "+15550001111", assistant: support}\n')
    assert route_invite(routes, invite("+15550002222")) is None


def test_header_conditions_select_among_routes_for_the_same_number() -> None:
    routes = numbers(
        '  - {number: "+1555*", assistant: sales, headers: {X-Tenant: "acme*"}}\n'
        '  - {number: "+1555*", assistant: support}\n'
    )
    hit = route_invite(routes, invite("+15550001111", None, "X-Tenant: acme-east"))
    miss = route_invite(routes, invite("+15550001111", None, "X-Tenant: globex"))
    none = route_invite(routes, invite("+15550001111"))
    assert hit is not None and hit.route.assistant == "sales"
    assert miss is not None and miss.route.assistant == "support"
    assert none is not None and none.route.assistant == "support"


def test_inline_assistant_and_assistant_file_become_named_assistants(tmp_path: Path) -> None:
    (tmp_path / "bot.json").write_text('{"firstMessage": "From a file", "model": {"provider": "rules"}}')
    config = load_config_text(
        "numbers:\n"
        '  - {number: "100", assistant: {firstMessage: "Inline", model: {provider: rules}}}\n'
        '  - {number: "200", assistant_file: bot.json}\n',
        base=tmp_path,
    )
    assert config.numbers[0].assistant == "number:100"
    assert config.assistant("number:100").first_message == "Inline"
    assert config.assistant("number:200").first_message == "From a file"


def test_routing_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"numbers.0.fallback_assistant: unknown assistant 'ghost'"):
        load_config_text('numbers:\n  - {number: "1", server: {url: "http://x"}, fallback_assistant: ghost}\n')
    with pytest.raises(ConfigError, match="fallback_assistant needs a server"):
        load_config_text(ASSISTANTS + 'numbers:\n  - {number: "1", assistant: sales, fallback_assistant: other}\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_text('numbers:\n  - {number: "1", assistant_file: missing.json}\n', base=tmp_path)
    with pytest.raises(ConfigError, match="on_failure"):
        load_config_text('numbers:\n  - {number: "1", server: {url: "http://x"}, on_failure: drop}\n')


def test_sip_variables_expose_x_headers_from_to_and_diversion() -> None:
    values = sip_variables(
        invite("+15550001111", None, "X-Account-Id: 42", "Diversion: <sip:+15550009999@pbx>;reason=no-answer")
    )
    assert values["Account-Id"] == "42" and values["account-id"] == "42"
    sip = values["sip"]
    assert sip["fromUser"] == "+447700900123"
    assert sip["toUser"] == sip["requestUser"] == "+15550001111"
    assert sip["diversion"].startswith("<sip:+15550009999@pbx>")
    assert sip["headers"]["x-account-id"] == "42"
    assert "sip:+447700900123@carrier.example" in sip["from"]
