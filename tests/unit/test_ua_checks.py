"""RFC 3261 §8.2 request checks of the user agent, in the RFC's order (method, headers, content)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from gateway.config import load_config_text
from gateway.observability.metrics import Metrics
from gateway.sip.message import Request
from gateway.sip.parser import parse_message
from gateway.ua import UserAgent


def _request(method: str = "INVITE", uri: str = "sip:service@127.0.0.1", extra: str = "", body: str = "") -> Request:
    text = (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n"
        f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:service@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n{body}"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


@pytest.fixture
def ua() -> UserAgent:
    return UserAgent(load_config_text("{}", env={}), Metrics(), cast(Any, None))


def test_well_formed_invite_passes(ua: UserAgent) -> None:
    assert ua.check_request(_request(extra="Require: timer\r\n")) is None


def test_unknown_method_is_501_with_allow_before_anything_else(ua: UserAgent) -> None:
    status, _, headers = ua.check_request(_request("FOO", uri="tel:+1555"))  # type: ignore[misc]
    assert status == 501 and dict(headers)["Allow"].startswith("INVITE")


def test_known_but_unsupported_method_passes_the_check(ua: UserAgent) -> None:
    # REGISTER is known: it reaches method dispatch, which answers 405 with Allow.
    assert ua.check_request(_request("REGISTER")) is None


def test_non_sip_request_uri_is_416(ua: UserAgent) -> None:
    assert ua.check_request(_request(uri="tel:+15550001111"))[0] == 416  # type: ignore[index]


def test_max_forwards_zero_is_483_except_for_options(ua: UserAgent) -> None:
    invite = _request(extra="")
    invite.headers.set("Max-Forwards", "0")
    assert ua.check_request(invite)[0] == 483  # type: ignore[index]
    options = _request("OPTIONS")
    options.headers.set("Max-Forwards", "0")
    assert ua.check_request(options) is None


def test_unsupported_require_is_420_listing_the_options(ua: UserAgent) -> None:
    status, _, headers = ua.check_request(_request(extra="Require: 100rel, timer, foo\r\n"))  # type: ignore[misc]
    assert status == 420 and dict(headers)["Unsupported"] == "100rel, foo"


def test_non_sdp_body_is_415_with_accept(ua: UserAgent) -> None:
    status, _, headers = ua.check_request(  # type: ignore[misc]
        _request(extra="Content-Type: text/plain\r\n", body="hello")
    )
    assert status == 415 and dict(headers)["Accept"] == "application/sdp"


def test_accept_without_sdp_is_406(ua: UserAgent) -> None:
    assert ua.check_request(_request(extra="Accept: text/html\r\n"))[0] == 406  # type: ignore[index]
    assert ua.check_request(_request(extra="Accept: application/sdp, text/html\r\n")) is None
