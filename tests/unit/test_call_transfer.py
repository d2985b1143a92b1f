"""Transfers without SIP: the bridge's media plumbing, and ``transfer_from_tool`` on a fake call for the
decisions taken before anything is dialled (unknown destination, toll-fraud guard)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from gateway.assistants import parse_assistant
from gateway.assistants.tools import TransferCallTool
from gateway.call_bridge import BRIDGE_SLACK_FRAMES, Announcer, Hold, MediaBridge
from gateway.call_transfer import transfer_from_tool
from gateway.call_types import CallState
from gateway.config import TransferConfig
from gateway.observability.metrics import Metrics
from gateway.pipeline.plan import settings_for

TOOL = TransferCallTool.model_validate({
    "type": "transferCall",
    "destinations": [
        {"type": "number", "number": "+15551230000", "description": "sales"},
        {"type": "sip", "sipUri": "sip:support@pbx.example.com"},
    ],
})


class FakeManager:
    def __init__(self, allow: list[str]) -> None:
        self.metrics = Metrics()
        self.messages: list[dict[str, Any]] = []
        self.config = type("C", (), {"transfers": TransferConfig(allow=allow), "trunks": []})()

    def notify_message(self, call: Any, message: dict[str, Any]) -> None:
        self.messages.append(message)


class FakeCall:
    def __init__(self, allow: list[str]) -> None:
        self.manager = FakeManager(allow)
        self.state = CallState.CONFIRMED
        self.dialog = object()
        self.transfer = None
        self.transfer_destination = None
        self.conversation = None
        self.log = structlog.get_logger("test")
        self.hung_up: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

    def hangup(self, reason: str) -> None:
        self.hung_up.append(reason)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_refused_destination_tells_the_model_and_reports_without_dialling() -> None:
    call = FakeCall(allow=["sip:*@pbx.example.com"])
    outcome = run(transfer_from_tool(call, TOOL, {"destination": "+15551230000"}, "t1"))  # type: ignore[arg-type]
    assert outcome.failed and "not in transfers.allow" in outcome.content
    assert [m["status"] for m in call.manager.messages] == ["refused"]
    assert call.manager.messages[0]["destination"]["number"] == "+15551230000"
    refused = call.manager.metrics.transfers.labels("blind", "refused-destination")._value.get()
    assert refused == 1
    assert call.hung_up == ["call.in-progress.error-transfer-failed"]  # no assistant to take the caller back
    assert call.transfer is None


def test_unknown_destination_is_the_models_mistake() -> None:
    call = FakeCall(allow=["*"])
    outcome = run(transfer_from_tool(call, TOOL, {"destination": "+19990000000"}, "t1"))  # type: ignore[arg-type]
    assert outcome.failed and "+15551230000" in outcome.content and "sip:support@pbx.example.com" in outcome.content
    assert call.manager.messages == [] and call.hung_up == []


def test_the_model_sees_transfercall_with_the_destinations_to_choose_from() -> None:
    assistant = parse_assistant({"model": {"provider": "rules", "tools": [TOOL.model_dump(by_alias=True)]}})
    (fn,) = settings_for(assistant).tools
    assert fn.name == "transferCall"
    assert fn.parameters["properties"]["destination"]["enum"] == ["+15551230000", "sip:support@pbx.example.com"]
    assert "sales" in (fn.description or "")


def frame(value: int) -> bytes:
    return bytes([value]) * 320


def test_bridge_hands_each_legs_audio_to_the_other_in_order() -> None:
    bridge = MediaBridge()
    for i in range(3):
        bridge.a.on_tick(None, "mulaw", frame(i), 0.02 * i)
    bridge.b.on_tick(None, "mulaw", frame(9), 0.0)
    bridge.a.on_tick(None, "mulaw", None, 0.1)  # nothing to play this tick: nothing crosses
    assert [bridge.b.next_frame(0) for _ in range(4)] == [frame(0), frame(1), frame(2), None]
    assert bridge.a.next_frame(0) == frame(9) and bridge.a.next_frame(0) is None


def test_bridge_queue_is_bounded_and_counts_drops() -> None:
    metrics = Metrics()
    bridge = MediaBridge(metrics)
    for i in range(BRIDGE_SLACK_FRAMES + 3):
        bridge.a.on_tick(None, "mulaw", frame(i), 0.0)
    got = [bridge.b.next_frame(0) for _ in range(BRIDGE_SLACK_FRAMES)]
    assert got[0] == frame(3) and got[-1] == frame(BRIDGE_SLACK_FRAMES + 2)  # the oldest were dropped
    assert bridge.b.dropped == 3
    assert metrics.pipeline_frames_dropped.labels("bridge_queue_full")._value.get() == 3


class Recorder:
    def __init__(self) -> None:
        self.ticks: list[tuple[bytes | None, bytes | None]] = []
        self.voice = 0

    def on_voice_frame(self, pcm: bytes, now: float) -> None:
        self.voice += 1

    def on_tick(self, encoded: bytes | None, encoding: str, pcm: bytes | None, now: float) -> None:
        self.ticks.append((encoded, pcm))

    def next_frame(self, now: float) -> bytes | None:
        return frame(1)


def test_hold_keeps_the_transcriber_fed_with_silence_and_says_nothing() -> None:
    session = Recorder()
    hold = Hold(session)
    hold.on_voice_frame(frame(50), 0)
    hold.on_tick(b"\x00" * 160, "mulaw", frame(50), 0)
    assert hold.next_frame(0) is None
    assert session.voice == 0 and session.ticks == [(None, None)]


def test_announcer_plays_then_reports_played_and_hears_the_operator() -> None:
    async def main() -> None:
        ann = Announcer()
        ann.feed(b"\x01\x00" * 200)  # 400 bytes: one full frame and a padded one
        ann.finish()
        assert ann.next_frame(0) == b"\x01\x00" * 160
        assert ann.next_frame(0) == b"\x01\x00" * 40 + bytes(240)
        assert not ann.played.is_set()
        assert ann.next_frame(0) is None and ann.played.is_set()
        loud = (b"\x00\x40" + b"\x00\xc0") * 80
        for _ in range(4):
            ann.on_voice_frame(loud, 0)
        assert not ann.voice_heard.is_set()
        ann.on_voice_frame(loud, 0)
        assert ann.voice_heard.is_set()

    asyncio.run(main())
