"""Outbound calls through a trunk, against SIPp acting as the trunk (UAS scenarios in tests/sipp/).

The gateway runs in-process (``gateway.app.serve``) so the test can dial with ``CallManager.place_call`` and
watch the call's state; SIPp checks every message the gateway sends and exits 0 only if all matched."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from gateway.call import Call
from gateway.call_types import CallState, CallTarget
from gateway.config import GatewayConfig
from tests.helpers.in_process import running_gateway
from tests.integration.harness import SippResult, free_port, free_rtp_range, run_scenario, sipp_failure

USERNAME = "gwuser"
PASSWORD = "s3cret-pass"  # what tests/sipp/outbound_auth.xml verifies with <verifyauth>
DEADLINE = 15.0


def trunk_config(sipp_port: int, **sip: object) -> GatewayConfig:
    port_min, port_max = free_rtp_range()
    return GatewayConfig.model_validate(
        {
            "sip": {"listen": f"127.0.0.1:{free_port()}", **sip},
            "rtp": {"port_min": port_min, "port_max": port_max},
            "http": {"listen": "127.0.0.1:0"},  # the API on a free port
            "storage": {"path": ":memory:"},
            "trunks": [
                {"name": "sipp", "host": "127.0.0.1", "port": sipp_port, "username": USERNAME,
                 "password": PASSWORD}
            ],
        }
    )


async def wait_until_bound(port: int) -> None:
    """Until something (SIPp) holds UDP ``port`` on 127.0.0.1."""
    async with asyncio.timeout(DEADLINE):
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    return
            await asyncio.sleep(0.05)


async def wait_for_state(call: Call, state: CallState) -> None:
    async with asyncio.timeout(DEADLINE):
        while call.state is not state:
            if call.state is CallState.ENDED:
                raise AssertionError(f"call ended ({call.ended_reason}) before reaching {state.name}")
            await asyncio.sleep(0.02)


def start_sipp_uas(scenario: str, port: int, tmp_path: Path) -> asyncio.Task[SippResult]:
    return asyncio.create_task(
        asyncio.to_thread(run_scenario, scenario, cwd=tmp_path, timeout=30, extra=["-p", str(port)])
    )


def test_outbound_call_answers_digest_challenge(tmp_path: Path) -> None:
    sipp_port = free_port()

    async def scenario() -> tuple[SippResult, Call]:
        async with running_gateway(trunk_config(sipp_port)) as gw:
            sipp = start_sipp_uas("outbound_auth.xml", sipp_port, tmp_path)
            await wait_until_bound(sipp_port)
            call = await gw.calls.place_call(number="+15550002222", trunk="sipp", target=CallTarget("echo"))
            await wait_for_state(call, CallState.CONFIRMED)
            assert call.negotiated is not None and call.negotiated.codec == "PCMU"
            call.hangup()
            await wait_for_state(call, CallState.ENDED)
            return await sipp, call

    result, call = asyncio.run(scenario())
    assert result.returncode == 0, sipp_failure(result, tmp_path)
    assert result.stats.get("SuccessfulCall(C)") == "1", result.stats
    assert call.ended_reason == "assistant-ended-call"
    assert call.answered_at is not None


def test_outbound_call_busy(tmp_path: Path) -> None:
    sipp_port = free_port()

    async def scenario() -> tuple[SippResult, Call]:
        async with running_gateway(trunk_config(sipp_port)) as gw:
            sipp = start_sipp_uas("outbound_busy.xml", sipp_port, tmp_path)
            await wait_until_bound(sipp_port)
            call = await gw.calls.place_call(number="+15550003333", trunk="sipp", target=CallTarget("echo"))
            await wait_for_state(call, CallState.ENDED)
            return await sipp, call

    result, call = asyncio.run(scenario())
    assert result.returncode == 0, sipp_failure(result, tmp_path)
    assert call.ended_reason == "customer-busy"
    assert call.answered_at is None


def test_outbound_ring_timeout_cancels(tmp_path: Path) -> None:
    sipp_port = free_port()

    async def scenario() -> tuple[SippResult, Call]:
        async with running_gateway(trunk_config(sipp_port, ring_timeout=2)) as gw:
            sipp = start_sipp_uas("outbound_no_answer.xml", sipp_port, tmp_path)
            await wait_until_bound(sipp_port)
            call = await gw.calls.place_call(number="+15550004444", trunk="sipp", target=CallTarget("echo"))
            await wait_for_state(call, CallState.RINGING)
            await wait_for_state(call, CallState.ENDED)
            return await sipp, call

    result, call = asyncio.run(scenario())
    assert result.returncode == 0, sipp_failure(result, tmp_path)
    assert call.ended_reason == "customer-did-not-answer"
    assert call.answered_at is None


def test_outbound_cancel_waits_for_a_provisional_response(tmp_path: Path) -> None:
    sipp_port = free_port()

    async def scenario() -> tuple[SippResult, Call]:
        async with running_gateway(trunk_config(sipp_port, ring_timeout=1)) as gw:
            sipp = start_sipp_uas("outbound_cancel_before_provisional.xml", sipp_port, tmp_path)
            await wait_until_bound(sipp_port)
            call = await gw.calls.place_call(number="+15550005555", trunk="sipp", target=CallTarget("echo"))
            await wait_for_state(call, CallState.ENDED)
            return await sipp, call

    result, call = asyncio.run(scenario())
    assert result.returncode == 0, sipp_failure(result, tmp_path)
    assert call.ended_reason == "customer-did-not-answer"
