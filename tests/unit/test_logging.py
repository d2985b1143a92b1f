"""Logs: a level per subsystem, the call's fields from contextvars, the SIP trace with credentials redacted."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.config import LOG_SUBSYSTEMS, ConfigError, load_config_text
from gateway.observability.logging import (
    REDACTED,
    bind_call_context,
    configure_logging,
    get_logger,
    redact_sip_message,
)
from gateway.observability.metrics import Metrics
from gateway.ua import UserAgent

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
    structlog.contextvars.clear_contextvars()


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_each_subsystem_has_its_own_level_and_the_others_use_the_default() -> None:
    out = io.StringIO()
    configure_logging("info", levels={"sip": "debug", "media": "warning"}, log_format="json", stream=out)
    sip, media, call = get_logger("sip"), get_logger("media"), get_logger("call")
    sip.debug("sip_detail")
    media.info("media_info")
    media.warning("media_warning")
    call.debug("call_detail")
    call.info("call_info")
    assert [line["event"] for line in _lines(out)] == ["sip_detail", "media_warning", "call_info"]
    assert [line["level"] for line in _lines(out)] == ["debug", "warning", "info"]


def test_a_bound_logger_keeps_its_subsystem_level() -> None:
    out = io.StringIO()
    configure_logging("warning", levels={"rtp": "debug"}, log_format="json", stream=out)
    get_logger("rtp").bind(rtp_port=30000).debug("rtp_detail")
    get_logger("call").bind(call_id="x").info("call_info")
    assert [line["event"] for line in _lines(out)] == ["rtp_detail"]


def test_a_disabled_debug_line_formats_nothing() -> None:
    out = io.StringIO()
    configure_logging("info", log_format="json", stream=out)

    class Explodes:
        def __str__(self) -> str:
            raise AssertionError("formatted although disabled")

        __repr__ = __str__

    get_logger("media").debug("hot_path", value=Explodes())
    assert out.getvalue() == ""


def test_console_format_is_not_json() -> None:
    out = io.StringIO()
    configure_logging("info", log_format="console", stream=out)
    get_logger("app").info("started")
    assert "started" in out.getvalue() and not out.getvalue().lstrip().startswith("{")


def test_unknown_subsystem_is_a_config_error_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("log: {levels: {sipp: debug}}", env={})
    assert "sipp" in str(info.value) and "sip, store" in str(info.value)
    assert load_config_text("log: {levels: {sip: debug, media: warning}}", env={}).log.levels == {
        "sip": "debug", "media": "warning"
    }


def test_valid_subsystems_are_exactly_the_names_the_gateway_logs_under() -> None:
    used = {
        match
        for path in (REPO / "gateway").rglob("*.py")
        for match in re.findall(r'get_logger\("([a-z_]+)"\)', path.read_text())
    }
    assert used == set(LOG_SUBSYSTEMS)


def test_call_fields_reach_every_line_of_the_calls_tasks_and_no_other() -> None:
    out = io.StringIO()
    configure_logging("info", log_format="json", stream=out)

    async def child(name: str) -> None:
        await asyncio.sleep(0)
        get_logger("stt").info("child_line", who=name)

    async def call(name: str, number: str) -> None:
        bind_call_context(call_id=f"id-{name}", sip_call_id=f"sip-{name}", number=number, direction="inbound")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(child(name))
            tg.create_task(child(name))
        get_logger("call").info("call_line", who=name)

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(call("a", "1000"))
            tg.create_task(call("b", "2000"))
        get_logger("app").info("outside")

    asyncio.run(main())
    lines = _lines(out)
    assert len(lines) == 7
    for line in lines:
        if line["event"] == "outside":
            assert "call_id" not in line
            continue
        who = line["who"]
        assert (line["call_id"], line["sip_call_id"], line["number"], line["direction"]) == (
            f"id-{who}", f"sip-{who}", {"a": "1000", "b": "2000"}[who], "inbound"
        )


AUTH_REGISTER = (
    "REGISTER sip:pbx.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\n"
    "From: <sip:alice@pbx.example>;tag=1\r\nTo: <sip:alice@pbx.example>\r\nCall-ID: r1\r\nCSeq: 2 REGISTER\r\n"
    'Authorization: Digest username="alice", realm="pbx.example", nonce="abc",\r\n'
    ' uri="sip:pbx.example", response="0123456789abcdef0123456789abcdef"\r\n'
    'proxy-authorization: Digest username="alice", response="fedcba9876543210fedcba9876543210"\r\n'
    "Content-Length: 22\r\n\r\n"
    "Authorization: in body"
)


def test_redaction_replaces_credentials_and_keeps_the_rest() -> None:
    redacted = redact_sip_message(AUTH_REGISTER)
    assert "0123456789abcdef" not in redacted and "fedcba98" not in redacted and "nonce" not in redacted
    assert f"Authorization: Digest {REDACTED}\r\n" in redacted
    assert f"proxy-authorization: Digest {REDACTED}\r\n" in redacted
    assert redacted.startswith("REGISTER sip:pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx")
    assert "CSeq: 2 REGISTER\r\n" in redacted and redacted.endswith("\r\n\r\nAuthorization: in body")


def test_redaction_never_keeps_an_unknown_first_word() -> None:
    assert redact_sip_message("OPTIONS sip:a SIP/2.0\r\nAuthorization: s3cr3t\r\n\r\n") == (
        f"OPTIONS sip:a SIP/2.0\r\nAuthorization: {REDACTED}\r\n\r\n"
    )


OPTIONS = (
    "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKopt1;rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: trace-1\r\n"
    'CSeq: 1 OPTIONS\r\nAuthorization: Digest username="probe", response="0badc0ffee0badc0ffee0badc0ffee00"\r\n'
    "Content-Length: 0\r\n\r\n"
)


class _Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int], str]] = []

    def send(self, data: bytes, destination: tuple[str, int], transport: str) -> None:
        self.sent.append((data, destination, transport))


@pytest.mark.parametrize("enabled", [True, False])
def test_sip_trace_logs_whole_messages_both_ways_redacted(enabled: bool) -> None:
    config = load_config_text(f"log: {{sip_trace: {str(enabled).lower()}}}", env={})

    async def exchange() -> tuple[list[Any], _Wire]:
        async with asyncio.TaskGroup() as tg:
            ua = UserAgent(config, Metrics(), tg)
            wire = _Wire()
            ua.transport = wire  # type: ignore[assignment]
            with structlog.testing.capture_logs() as logs:
                ua._on_datagram(OPTIONS.encode(), ("127.0.0.1", 5071), "udp")
            ua.layer.handle_timer(1e9)  # let the server transaction end
            if ua._timer is not None:
                ua._timer.cancel()
        return logs, wire

    logs, wire = asyncio.run(exchange())
    assert len(wire.sent) == 1 and wire.sent[0][0].startswith(b"SIP/2.0 200")
    traces = [line for line in logs if line["event"] in ("sip_recv", "sip_send")]
    if not enabled:
        assert traces == []
        return
    received, sent = traces
    assert received["event"] == "sip_recv" and sent["event"] == "sip_send"
    for line in traces:
        assert (line["peer"], line["transport"], line["log_level"]) == ("127.0.0.1:5071", "udp", "info")
    assert received["message"] == OPTIONS.replace(
        'Digest username="probe", response="0badc0ffee0badc0ffee0badc0ffee00"', f"Digest {REDACTED}"
    )
    assert "0badc0ffee" not in received["message"]
    assert sent["message"] == wire.sent[0][0].decode()  # the whole response: start line, headers, body
    assert sent["message"].startswith("SIP/2.0 200") and "Call-ID: trace-1\r\n" in sent["message"]
