"""The UA's admission hooks: inbound ACL, Digest challenge, bans and rate limits seen from the wire, and the
no-enumeration rule (an untrusted source gets the same answer for a number that exists and one that does not)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from gateway.config import load_config_text
from gateway.observability.metrics import Metrics
from gateway.sip.auth import DigestClient
from gateway.sip.message import Request, Response
from gateway.sip.parser import parse_message
from gateway.sip.transaction import ServerTransactionId
from gateway.transport.sip_transport import Addr
from gateway.ua import UserAgent

TRUNK: Addr = ("192.0.2.10", 5060)
STRANGER: Addr = ("203.0.113.7", 5060)
NUMBERS = """
assistants: {demo: {firstMessage: Hi, model: {provider: rules}}}
numbers: [{number: "100", assistant: demo}, {number: "101", assistant: demo}]
"""


class Handler:
    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua
        self.invites: list[str] = []

    def on_invite(self, request: Request, server_tx: ServerTransactionId, source: Addr, transport: str) -> None:
        self.invites.append(getattr(request.uri, "user", None) or "")
        self.ua.respond(request, 180)


def run(config_text: str, body: Callable[[UserAgent, list[Response], Handler], None]) -> Metrics:
    metrics = Metrics()

    async def main() -> None:
        ua = UserAgent(load_config_text(config_text, env={}), metrics, cast(Any, None))
        sent: list[Response] = []

        def send(data: bytes, destination: Addr, transport: str) -> None:
            message = parse_message(data)
            if isinstance(message, Response):
                sent.append(message)

        ua.transport.send = send  # type: ignore[method-assign]
        handler = Handler(ua)
        ua.invite_handler = handler
        body(ua, sent, handler)
        if ua._timer is not None:
            ua._timer.cancel()

    asyncio.run(main())
    return metrics


counter = iter(range(10**6))


def invite(user: str, source: Addr, *, agent: str = "Linphone/5", authorization: str | None = None) -> bytes:
    n = next(counter)
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return (
        f"INVITE sip:{user}@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP {source[0]}:{source[1]};branch=z9hG4bKu{n}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:x@{source[0]}>;tag=f{n}\r\nTo: <sip:{user}@192.0.2.1>\r\n"
        f"Call-ID: call{n}\r\nCSeq: 1 INVITE\r\nUser-Agent: {agent}\r\n{auth}Content-Length: 0\r\n\r\n"
    ).encode()


def answer_shape(response: Response) -> tuple[int, str, list[str]]:
    """What a scanner can compare: status, reason and header names (values carry random tags/nonces)."""
    return response.status_code, response.reason, sorted(name for name, _ in response.headers)


def counter_value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_trusted_trunk_reaches_routing_and_others_get_403_for_every_number() -> None:
    config = NUMBERS + "security: {trusted_sources: ['192.0.2.0/24']}"

    def body(ua: UserAgent, sent: list[Response], handler: Handler) -> None:
        ua._on_datagram(invite("100", TRUNK), TRUNK, "udp")
        assert sent[-1].status_code == 180 and handler.invites == ["100"]
        ua._on_datagram(invite("100", STRANGER), STRANGER, "udp")
        existing = sent[-1]
        ua._on_datagram(invite("999", STRANGER), STRANGER, "udp")
        missing = sent[-1]
        assert existing.status_code == 403
        assert answer_shape(existing) == answer_shape(missing)
        assert handler.invites == ["100"]

    metrics = run(config, body)
    assert counter_value(metrics, "voicegw_sip_invites_total", outcome="forbidden") == 2


def test_challenge_mode_asks_everyone_the_same_and_admits_valid_credentials() -> None:
    config = NUMBERS + "security: {trusted_sources: ['192.0.2.0/24'], digest_users: {alice: s3cret}}"

    def body(ua: UserAgent, sent: list[Response], handler: Handler) -> None:
        ua._on_datagram(invite("100", STRANGER), STRANGER, "udp")
        existing = sent[-1]
        ua._on_datagram(invite("999", STRANGER), STRANGER, "udp")
        missing = sent[-1]
        assert existing.status_code == 401 and answer_shape(existing) == answer_shape(missing)
        challenge = existing.headers.get("WWW-Authenticate") or ""
        assert "qop=\"auth\"" in challenge and "nonce=" in challenge
        client = DigestClient("alice", "s3cret", cnonce_factory=lambda: "abcdef")
        credentials = client.authorization("INVITE", "sip:100@192.0.2.1", existing.headers.get_all("WWW-Authenticate"))
        ua._on_datagram(invite("100", STRANGER, authorization=credentials[1]), STRANGER, "udp")
        assert sent[-1].status_code == 180 and handler.invites == ["100"]

    run(config, body)


def test_repeated_wrong_passwords_ban_the_source_which_is_then_ignored() -> None:
    config = NUMBERS + "security: {digest_users: {alice: s3cret}, ban_failures: 3}"

    def body(ua: UserAgent, sent: list[Response], handler: Handler) -> None:
        ua._on_datagram(invite("100", STRANGER), STRANGER, "udp")
        challenge = sent[-1]
        for attempt in range(3):
            client = DigestClient("alice", f"guess{attempt}", cnonce_factory=lambda: "abcdef")
            credentials = client.authorization("INVITE", "sip:100@192.0.2.1",
                                               challenge.headers.get_all("WWW-Authenticate"))
            ua._on_datagram(invite("100", STRANGER, authorization=credentials[1]), STRANGER, "udp")
            assert sent[-1].status_code == 401
        before = len(sent)
        ua._on_datagram(invite("100", STRANGER), STRANGER, "udp")
        assert len(sent) == before  # silently dropped
        assert handler.invites == []

    metrics = run(config, body)
    assert counter_value(metrics, "voicegw_sip_bans_total") == 1
    assert counter_value(metrics, "voicegw_sip_banned_sources") == 1
    assert counter_value(metrics, "voicegw_sip_messages_dropped_total", reason="banned") == 1


def test_flooding_source_gets_503_with_retry_after_then_nothing() -> None:
    config = NUMBERS + "security: {rate: 1, burst: 5, reject_seconds: 0}"

    def body(ua: UserAgent, sent: list[Response], handler: Handler) -> None:
        for _ in range(5):
            ua._on_datagram(invite("100", STRANGER), STRANGER, "udp")
        assert len(handler.invites) == 5
        before = len(sent)
        for _ in range(20):
            ua._on_datagram(invite("100", STRANGER), STRANGER, "udp")
        assert len(sent) == before and len(handler.invites) == 5  # reject_seconds 0: straight to drops

    metrics = run(config, body)
    assert counter_value(metrics, "voicegw_sip_requests_limited_total", action="drop") == 20

    def body503(ua: UserAgent, sent: list[Response], handler: Handler) -> None:
        for _ in range(8):
            ua._on_datagram(invite("100", STRANGER), STRANGER, "udp")
        assert [r.status_code for r in sent[-3:]] == [503, 503, 503]
        assert sent[-1].headers.get("Retry-After") == "30"

    metrics = run(NUMBERS + "security: {rate: 1, burst: 5}", body503)
    assert counter_value(metrics, "voicegw_sip_requests_limited_total", action="503") == 3
    assert counter_value(metrics, "voicegw_sip_invites_total", outcome="rate_limit") == 3


def test_scanner_gets_no_answer_at_all() -> None:
    def body(ua: UserAgent, sent: list[Response], handler: Handler) -> None:
        ua._on_datagram(invite("100", STRANGER, agent="friendly-scanner"), STRANGER, "udp")
        options = invite("100", STRANGER, agent="sipvicious").replace(b"INVITE", b"OPTIONS")
        ua._on_datagram(options, STRANGER, "udp")
        assert sent == [] and handler.invites == []

    metrics = run(NUMBERS, body)
    assert counter_value(metrics, "voicegw_sip_messages_dropped_total", reason="scanner") == 2


def test_options_and_register_answers_do_not_depend_on_the_user() -> None:
    def body(ua: UserAgent, sent: list[Response], handler: Handler) -> None:
        shapes = []
        for method in ("OPTIONS", "REGISTER"):
            for user in ("100", "999"):
                ua._on_datagram(invite(user, STRANGER).replace(b"INVITE", method.encode()), STRANGER, "udp")
                shapes.append((method, answer_shape(sent[-1])))
        assert shapes[0][1] == shapes[1][1] and shapes[2][1] == shapes[3][1]

    run(NUMBERS + "security: {trusted_sources: ['192.0.2.0/24']}", body)


def test_check_request_rejections_of_invites_are_counted_by_outcome() -> None:
    def body(ua: UserAgent, sent: list[Response], handler: Handler) -> None:
        data = invite("100", TRUNK).replace(b"Content-Length", b"Require: foo\r\nContent-Length")
        ua._on_datagram(data, TRUNK, "udp")
        assert sent[-1].status_code == 420

    metrics = run(NUMBERS, body)
    assert counter_value(metrics, "voicegw_sip_invites_total", outcome="bad_extension") == 1
