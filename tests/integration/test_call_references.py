"""Ended calls leave no Python objects behind (issue 7, the soak's RSS growth): SIPp places echo calls with
real RTP (so every call builds a media endpoint, a jitter buffer, a dialog and its transactions) against an
in-process gateway; once they are over and released, no ``Call``, ``CallMedia``, ``JitterBuffer``,
``RtpEndpoint`` or ``Dialog`` is alive any more, and the per-call maps (live calls, dialogs, INVITE server
transactions, the webhook dispatcher's and the call recorder's per-call state) are empty.

All of them must be gone before any collection: the collector is off during the test, so an ended call is
freed by reference counting alone (no reference cycle makes it wait for a full collection, which under load
comes minutes apart); they are counted again after a full collection, which finds what is still referenced.
The same holds for an outbound call (SIPp as the trunk) and for a call answered by an assistant (its
conversation pipeline included). Objects are counted with ``gc``, not
with RSS: the allocator keeps freed memory (see benchmarks/results/soak-memory.md), while a kept reference to
an ended call is a leak whatever RSS says."""

from __future__ import annotations

import asyncio
import gc
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.call import Call
from gateway.call_assistant import CallConversation
from gateway.call_media import CallMedia
from gateway.call_outbound import OutboundInvite
from gateway.call_types import CallState, CallTarget
from gateway.config import GatewayConfig
from gateway.rtp.jitter import JitterBuffer
from gateway.sip.dialog import Dialog
from gateway.transport.rtp_endpoint import RtpEndpoint
from tests.helpers.in_process import running_gateway
from tests.integration.harness import SIPP_DIR, free_port, free_rtp_range, run_sipp, sipp_failure
from tests.integration.test_outbound import start_sipp_uas, trunk_config, wait_for_state, wait_until_bound

pytestmark = pytest.mark.integration

CALLS = 12
CALL_SECONDS = 1.5
DEADLINE = 30.0
PER_CALL = (Call, CallMedia, JitterBuffer, RtpEndpoint, Dialog)


def _config(*, assistant: bool = False) -> GatewayConfig:
    """Echo calls to ``echo``; with ``assistant``, calls to ``service`` reach an assistant instead (the offline
    rules model and the default local voice and transcriber)."""
    port_min, port_max = free_rtp_range()
    numbers: list[dict[str, Any]] = [{"number": "echo", "echo": True}]
    if assistant:
        numbers = [{"number": "service", "assistant": "demo"}]
    return GatewayConfig.model_validate(
        {
            "sip": {"listen": f"127.0.0.1:{free_port()}"},
            "rtp": {"port_min": port_min, "port_max": port_max},
            "http": {"listen": "127.0.0.1:0"},
            "storage": {"path": ":memory:"},
            "security": {"trusted_sources": ["127.0.0.0/8"]},
            "assistants": {"demo": {"firstMessage": "Hello", "model": {"provider": "rules"},
                                    "silenceTimeoutSeconds": 600}},
            "numbers": numbers,
            "log": {"level": "warning"},
        }
    )


def _tone_wav(directory: Path) -> Path:
    if shutil.which("sox") is None:
        pytest.fail("sox is not installed: `make install` installs it")
    out = directory / "tone_ulaw.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", str(out), "synth", "1", "sine", "440"],
                   check=True, capture_output=True)
    return out


def _echo_scenario(directory: Path) -> Path:
    scenario = directory / "echo_call.xml"
    scenario.write_text(
        (SIPP_DIR / "echo_rtp_stream.xml").read_text().replace("{WAV}", str(_tone_wav(directory)))
        .replace("{LOOPS}", "-1").replace("{PT}", "0").replace("{CODEC}", "PCMU")
        .replace("{PAUSE_MS}", str(int(CALL_SECONDS * 1000)))
    )
    return scenario


def _live(*, collect: bool = True, classes: tuple[type, ...] = PER_CALL) -> dict[str, int]:
    """Instances of each per-call class alive now (after a full collection, unless ``collect`` is False)."""
    if collect:
        gc.collect()
    counts = dict.fromkeys((cls.__name__ for cls in classes), 0)
    for obj in gc.get_objects():
        if isinstance(obj, classes):
            counts[type(obj).__name__] += 1
    return counts


def _who_holds(objects: list[Any]) -> list[str]:
    """For a failure message: the types of what still refers to each leaked object."""
    return [f"{type(o).__name__} held by {sorted({type(r).__name__ for r in gc.get_referrers(o)})}"
            for o in objects[:3]]


class KeptByCycles(AssertionError):
    """Ended calls' objects are alive with the collector off: only a full collection would free them."""


class _Watcher:
    """A call observer that only counts (it keeps no reference to a call)."""

    def __init__(self) -> None:
        self.answered = 0
        self.released = 0
        self.packets = 0

    def call_status(self, call: Call, status: str) -> None:
        if status == "in-progress":
            self.answered += 1

    def call_event(self, call: Call, event: object) -> None:
        pass

    def call_message(self, call: Call, message: dict[str, Any]) -> None:
        pass

    def call_released(self, call: Call) -> None:
        self.released += 1
        self.packets += call.media.endpoint.counters["received"]


def test_ended_echo_calls_leave_no_call_media_or_jitter_buffer_alive(tmp_path: Path) -> None:
    # The collector stays off while the calls run: what an ended call frees must go by reference counting at
    # once, not wait for a full collection (under load those come minutes apart: the soak's RSS steps).
    gc.collect()  # from a clean heap: what an earlier test left for the collector is not counted here
    gc.disable()
    try:
        asyncio.run(_calls_then_count(_echo_scenario(tmp_path), tmp_path, _config(), "echo", CALLS))
    finally:
        gc.enable()


def test_ended_assistant_calls_are_freed_without_the_collector(tmp_path: Path) -> None:
    """The same for calls answered by an assistant (the offline default providers): at the call's release its
    conversation lets go of the call, the session of its tools, event sink and media, and the session's task
    group's exception group of its frames (Python 3.11 keeps those in a cycle)."""
    gc.collect()  # from a clean heap: what an earlier test left for the collector is not counted here
    gc.disable()
    try:
        asyncio.run(_calls_then_count(_echo_scenario(tmp_path), tmp_path, _config(assistant=True), "service", 2,
                                      classes=(*PER_CALL, CallConversation)))
    finally:
        gc.enable()


async def _calls_then_count(scenario: Path, tmp_path: Path, config: GatewayConfig, service: str, calls: int,
                            classes: tuple[type, ...] = PER_CALL) -> None:
    async with running_gateway(config, deadline=DEADLINE) as gw:
        watcher = _Watcher()
        gw.calls.observers.append(watcher)
        peak = dict.fromkeys((cls.__name__ for cls in classes), 0)
        sipp = asyncio.create_task(asyncio.to_thread(
            run_sipp,
            ["-sf", str(scenario), f"127.0.0.1:{gw.ua.announced[1]}", "-s", service, "-i", "127.0.0.1",
             "-m", str(calls), "-r", str(calls), "-l", str(calls), "-mp", str(free_port(also_tcp=False) & ~1),
             "-trace_err"],
            cwd=tmp_path, timeout=CALL_SECONDS + DEADLINE,
        ))
        while not sipp.done():
            # the classes counted really are built per call (else the check below proves nothing)
            peak = {name: max(peak[name], n) for name, n in _live(collect=False, classes=classes).items()}
            await asyncio.sleep(0.25)
        result = await sipp
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        async with asyncio.timeout(DEADLINE):
            while gw.calls.calls or watcher.released < calls:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the released calls' last tasks and callbacks run
        assert watcher.answered == watcher.released == calls
        assert watcher.packets >= calls * 10, "the calls carried no RTP"
        assert all(n >= 1 for n in peak.values()), peak

        # Everything of an ended call is freed by reference counting alone, without the collector's help: no
        # reference cycle keeps a call, its media, jitter buffer, endpoint or dialog until a full collection
        # (the collector is still off here; nothing has been collected since the calls started).
        uncollected = _live(collect=False, classes=classes)
        if any(uncollected.values()):
            held = [o for o in gc.get_objects() if isinstance(o, classes)]
            raise KeptByCycles(f"ended calls wait for the cycle collector: {uncollected} {_who_holds(held)}")
        live = _live(classes=classes)
        leaked = [o for o in gc.get_objects() if isinstance(o, classes)]
        assert live == dict.fromkeys(live, 0), (live, _who_holds(leaked))
        assert gw.calls.calls == {}
        assert gw.ua.dialog_count == 0
        assert gw.ua._invite_servers == {}
        assert gw.webhooks is not None and gw.webhooks.dispatcher._calls == {}
        recorders = [o for o in gw.calls.observers if hasattr(o, "_extras")]
        assert recorders and all(r._extras == {} for r in recorders)


def test_an_ended_outbound_call_is_freed_without_the_collector(tmp_path: Path) -> None:
    """An outbound call (digest challenge, answer, our BYE) leaves nothing behind either, its INVITE
    transaction's state (``OutboundInvite``) included, by reference counting alone."""
    gc.collect()  # from a clean heap: what an earlier test left for the collector is not counted here
    gc.disable()
    try:
        asyncio.run(_outbound_call_then_count(tmp_path))
    finally:
        gc.enable()


async def _outbound_call_then_count(tmp_path: Path) -> None:
    classes = (*PER_CALL, OutboundInvite)
    sipp_port = free_port()
    async with running_gateway(trunk_config(sipp_port), deadline=DEADLINE) as gw:
        sipp = start_sipp_uas("outbound_auth.xml", sipp_port, tmp_path)
        await wait_until_bound(sipp_port)
        call = await gw.calls.place_call(number="+15550002222", trunk="sipp", target=CallTarget("echo"))
        await wait_for_state(call, CallState.CONFIRMED)
        during = _live(collect=False, classes=classes)
        call.hangup()
        await wait_for_state(call, CallState.ENDED)
        del call  # the test's own reference
        result = await sipp
        assert result.returncode == 0, sipp_failure(result, tmp_path)
        async with asyncio.timeout(DEADLINE):
            while gw.calls.calls:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the released call's last tasks and callbacks run
        assert all(n == 1 for n in during.values()), during  # each class counted is really built per call

        uncollected = _live(collect=False, classes=classes)
        if any(uncollected.values()):
            held = [o for o in gc.get_objects() if isinstance(o, classes)]
            raise KeptByCycles(f"the ended call waits for the cycle collector: {uncollected} {_who_holds(held)}")
        live = _live(classes=classes)
        assert live == dict.fromkeys(live, 0), live
        assert gw.ua.dialog_count == 0
