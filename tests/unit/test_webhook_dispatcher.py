"""The dispatcher: which messages a call queues, where they go, with which secret, and the hang timer.
A real (in-memory) outbox; the timer is a fake ``call_later``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.assistants import parse_assistant
from gateway.call_types import CallTarget
from gateway.config import NumberRoute, ServerRoute, WebhookConfig
from gateway.pipeline.events import (
    ConversationUpdate,
    SpeechUpdate,
    TranscriptEvent,
    TurnTiming,
    UserInterrupted,
)
from gateway.webhooks.dispatcher import WebhookDispatcher, wants
from gateway.webhooks.outbox import Outbox, OutboxMessage
from tests.unit.test_webhook_messages import T0, FakeCall, FakeManager, conversation

HOOK = "http://127.0.0.1:9/assistant-hook"
NUMBER_HOOK = "http://127.0.0.1:9/number-hook"


@dataclass
class FakeTimer:
    delay: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Rig:
    def __init__(self, *, signing_secret: str | None = None) -> None:
        self.outbox = Outbox(":memory:")
        self.timers: list[FakeTimer] = []
        self.wakes = 0
        self.now = T0
        self.dispatcher = WebhookDispatcher(
            WebhookConfig(signing_secret=signing_secret), self.outbox, wake=self._wake, clock=lambda: self.now,
            call_later=self._call_later,
        )

    def _wake(self) -> None:
        self.wakes += 1

    def _call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.timers.append(timer)
        return timer

    def queued(self) -> list[OutboxMessage]:
        self.outbox.flush()
        return self.outbox.stored()

    def types(self) -> list[str]:
        return [m.type for m in self.queued()]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(m.body)["message"] for m in self.queued()]


def assistant(**fields: Any) -> dict[str, Any]:
    return {"name": "booking", "model": {"provider": "rules"}, **fields}


def call_with(raw: dict[str, Any] | None, *, route: NumberRoute | None = None, kind: str = "assistant") -> FakeCall:
    manager = FakeManager({"booking": raw} if raw is not None else {})
    return FakeCall(manager, CallTarget(kind, "booking" if kind == "assistant" else None), route=route)


def number_route(secret: str | None = "number-secret") -> NumberRoute:
    return NumberRoute(number="+15550001111", server=ServerRoute(url=NUMBER_HOOK, secret=secret))


def test_default_server_messages_reach_the_assistant_server_signed_with_its_secret() -> None:
    rig = Rig(signing_secret="global")
    call = call_with(assistant(server={"url": HOOK, "secret": "s3cret", "headers": {"X-Tenant": "acme"}}))
    d = rig.dispatcher
    d.call_status(call.as_call(), "ringing")
    call.answer(T0 + 1)
    d.call_status(call.as_call(), "in-progress")
    call.conversation = conversation(call.manager.assistants["booking"], [("bot", "Hello")])
    d.call_event(call.as_call(), SpeechUpdate(role="assistant", status="started"))
    d.call_event(call.as_call(), TranscriptEvent(role="assistant", text="Hello", final=True))  # not in the default
    d.call_event(call.as_call(), ConversationUpdate(messages=tuple(call.conversation.session.history)))
    d.call_event(call.as_call(), UserInterrupted(reason="voice", heard="Hel"))
    d.call_event(call.as_call(), TurnTiming(turn=0, rule="x", speech_ended_at=None, endpointed_at=0.0,
                                            stt_final_at=None, llm_request_at=None, llm_first_token_at=None,
                                            tts_request_at=None, tts_first_byte_at=None, first_voiced_out_at=None))
    call.end("customer-ended-call", T0 + 5)
    d.call_status(call.as_call(), "ended")
    d.call_released(call.as_call())
    assert rig.types() == ["status-update", "status-update", "speech-update", "conversation-update",
                           "user-interrupted", "status-update", "end-of-call-report"]
    queued = rig.queued()
    assert {m.url for m in queued} == {HOOK}
    assert {m.secret for m in queued} == {"s3cret"}
    assert all(m.headers == {"X-Tenant": "acme"} and m.call_id == call.id for m in queued)
    assert [b.get("status") for b in rig.bodies()][:2] == ["ringing", "in-progress"]
    assert rig.wakes == len(queued)


def test_the_report_is_on_disk_when_the_release_returns_after_everything_before_it() -> None:
    rig = Rig()
    call = call_with(assistant(server={"url": HOOK}))
    call.end("customer-ended-call", T0 + 5)
    rig.dispatcher.call_status(call.as_call(), "ended")
    assert rig.outbox.pending == 1  # buffered
    rig.dispatcher.call_released(call.as_call())
    assert rig.outbox.pending == 0
    assert [m.type for m in rig.outbox.stored()] == ["status-update", "end-of-call-report"]
    report = rig.bodies()[1]
    assert report["endedReason"] == "customer-ended-call" and report["call"]["id"] == call.id


def test_server_messages_filter_what_is_sent() -> None:
    rig = Rig()
    call = call_with(assistant(server={"url": HOOK}, serverMessages=['transcript[transcriptType="final"]',
                                                                      "end-of-call-report"]))
    d = rig.dispatcher
    d.call_status(call.as_call(), "ringing")
    d.call_event(call.as_call(), TranscriptEvent(role="user", text="a ta", final=False))
    d.call_event(call.as_call(), TranscriptEvent(role="user", text="a table", final=True))
    d.call_event(call.as_call(), SpeechUpdate(role="user", status="started"))
    call.end("customer-ended-call", T0 + 5)
    d.call_released(call.as_call())
    assert rig.types() == ["transcript", "end-of-call-report"]
    assert rig.bodies()[0]["transcriptType"] == "final"


def test_wants() -> None:
    assert wants(["transcript"], "transcript", transcript_type="partial")
    assert wants(['transcript[transcriptType="final"]'], "transcript", transcript_type="final")
    assert not wants(['transcript[transcriptType="final"]'], "transcript", transcript_type="partial")
    assert not wants(["status-update"], "hang")


def test_the_legacy_server_url_and_secret_are_honoured() -> None:
    rig = Rig()
    call = call_with(assistant(serverUrl=HOOK, serverUrlSecret="legacy"))
    rig.dispatcher.call_status(call.as_call(), "ringing")
    (message,) = rig.queued()
    assert (message.url, message.secret) == (HOOK, "legacy")


def test_without_an_assistant_server_the_number_server_gets_them_with_the_fallback_secret() -> None:
    rig = Rig(signing_secret="global")
    call = call_with(assistant(), route=number_route(secret=None))
    rig.dispatcher.call_status(call.as_call(), "ringing")
    (message,) = rig.queued()
    assert (message.url, message.secret) == (NUMBER_HOOK, "global")


def test_no_destination_queues_nothing_and_echo_calls_send_nothing() -> None:
    rig = Rig(signing_secret="global")
    call = call_with(assistant())
    rig.dispatcher.call_status(call.as_call(), "ringing")
    rig.dispatcher.call_released(call.as_call())
    echo = FakeCall(FakeManager(), CallTarget("echo"), route=number_route())
    rig.dispatcher.call_status(echo.as_call(), "ringing")
    rig.dispatcher.call_released(echo.as_call())
    assert rig.queued() == [] and rig.wakes == 0


def test_a_call_whose_assistant_request_failed_still_reports_to_the_number_server() -> None:
    rig = Rig()
    call = FakeCall(FakeManager(), CallTarget("request"), route=number_route())
    d = rig.dispatcher
    d.call_status(call.as_call(), "ringing")
    call.end("assistant-request-failed", T0 + 7.5)
    d.call_status(call.as_call(), "ended")
    d.call_released(call.as_call())
    assert rig.types() == ["status-update", "status-update", "end-of-call-report"]
    assert {m.url for m in rig.queued()} == {NUMBER_HOOK}
    assert {m.secret for m in rig.queued()} == {"number-secret"}
    assert rig.bodies()[2]["endedReason"] == "assistant-request-failed"


def test_the_assistant_chosen_by_assistant_request_takes_over_the_destination() -> None:
    rig = Rig()
    call = FakeCall(FakeManager(), CallTarget("request"), route=number_route())
    rig.dispatcher.call_status(call.as_call(), "ringing")
    call.target = CallTarget("assistant", assistant=assistant(server={"url": HOOK}))
    rig.dispatcher.call_status(call.as_call(), "in-progress")
    assert [m.url for m in rig.queued()] == [NUMBER_HOOK, HOOK]


def test_call_layer_messages_are_queued_but_tool_calls_are_not() -> None:
    rig = Rig()
    call = call_with(assistant(server={"url": HOOK}, serverMessages=["transfer-update", "tool-calls"]))
    d = rig.dispatcher
    d.call_message(call.as_call(), {"type": "tool-calls", "toolCallList": []})
    d.call_message(call.as_call(), {"type": "transfer-update", "destination": {"type": "number", "number": "+1"}})
    d.call_message(call.as_call(), {"no": "type"})
    (body,) = rig.bodies()
    assert body["type"] == "transfer-update" and body["destination"]["number"] == "+1"
    assert body["call"]["id"] == call.id and body["timestamp"] == int(T0 * 1000)


def test_hang_when_the_assistant_does_not_answer_within_five_seconds() -> None:
    rig = Rig()
    call = call_with(assistant(server={"url": HOOK}))
    d = rig.dispatcher
    d.call_event(call.as_call(), SpeechUpdate(role="user", status="started"))
    d.call_event(call.as_call(), SpeechUpdate(role="user", status="stopped"))
    (timer,) = rig.timers
    assert timer.delay == 5.0
    rig.now = T0 + 5
    timer.callback()
    assert rig.types()[-1] == "hang"
    assert rig.bodies()[-1]["timestamp"] == int((T0 + 5) * 1000)


def test_no_hang_when_someone_speaks_in_time_or_the_call_ends() -> None:
    rig = Rig()
    call = call_with(assistant(server={"url": HOOK}))
    d = rig.dispatcher
    d.call_event(call.as_call(), SpeechUpdate(role="user", status="stopped"))
    d.call_event(call.as_call(), SpeechUpdate(role="assistant", status="started"))
    d.call_event(call.as_call(), SpeechUpdate(role="assistant", status="stopped"))
    d.call_event(call.as_call(), SpeechUpdate(role="user", status="stopped"))
    call.end("customer-ended-call", T0 + 1)
    d.call_status(call.as_call(), "ended")
    assert [t.cancelled for t in rig.timers] == [True, True]
    assert "hang" not in rig.types()


def test_no_hang_timer_when_hang_is_not_wanted() -> None:
    rig = Rig()
    call = call_with(assistant(server={"url": HOOK}, serverMessages=["end-of-call-report"]))
    rig.dispatcher.call_event(call.as_call(), SpeechUpdate(role="user", status="stopped"))
    assert rig.timers == []


def test_speech_updates_count_turns() -> None:
    rig = Rig()
    call = call_with(assistant(server={"url": HOOK}))
    for role, status in [("assistant", "started"), ("assistant", "stopped"), ("user", "started"),
                         ("user", "stopped"), ("user", "started"), ("user", "stopped"), ("assistant", "started")]:
        rig.dispatcher.call_event(call.as_call(), SpeechUpdate(role=role, status=status))  # type: ignore[arg-type]
    assert [b["turn"] for b in rig.bodies()] == [0, 0, 1, 1, 1, 1, 2]


def test_an_invalid_assistant_sends_nothing_rather_than_failing() -> None:
    rig = Rig()
    call = FakeCall(FakeManager(), CallTarget("assistant", assistant={"model": {"provider": "nope"}}))
    rig.dispatcher.call_status(call.as_call(), "ringing")
    assert rig.queued() == []
    assert parse_assistant(assistant()).server is None
