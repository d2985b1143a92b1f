"""Server message builders against Vapi's schema (../shared/reference/vapi-server-messages-schema.json): every
required field present, enumerated values from Vapi's lists, and the end-of-call report's durations, costs
and artifact. Also home of the call stand-ins the dispatcher tests use (no SIP, no media)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog

from gateway.assistants import Assistant, parse_assistant
from gateway.call import Call
from gateway.call_types import CallTarget
from gateway.config import NumberRoute
from gateway.pipeline.events import ConversationUpdate, SpeechUpdate, TranscriptEvent
from gateway.providers.base import ChatMessage
from gateway.webhooks import messages

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "reference" / "vapi-server-messages-schema.json"
T0 = 1_763_712_000.0

# ------------------------------------------------------------------ call stand-ins


class FakeManager:
    def __init__(self, assistants: dict[str, dict[str, Any]] | None = None) -> None:
        self.assistants = {name: parse_assistant(raw) for name, raw in (assistants or {}).items()}

    def assistant_for(self, target: CallTarget) -> Assistant | None:
        if target.assistant is not None:
            return parse_assistant(target.assistant)
        return self.assistants.get(target.name or "")


@dataclass
class FakeCall:
    manager: FakeManager
    target: CallTarget
    id: str = "3f1c9a2e-0000-4000-8000-000000000001"
    route: NumberRoute | None = None
    conversation: Any = None
    status: str = "ringing"
    direction: str = "inbound"
    created_at: float = T0
    answered_at: float | None = None
    ended_at: float | None = None
    ended_reason: str | None = None
    customer_number: str | None = "+15551234567"
    phone_number: str | None = "+15550001111"
    sip_call_id: str = "a84b4c76e66710@pc33.example.com"
    log: Any = field(default_factory=structlog.get_logger)

    def as_call(self) -> Call:
        return cast(Call, self)

    def answer(self, at: float) -> None:
        self.answered_at = at
        self.status = "in-progress"

    def end(self, reason: str, at: float) -> None:
        self.ended_reason = reason
        self.ended_at = at
        self.status = "ended"


def conversation(assistant: Assistant, spoken: Sequence[tuple[str, str]] = ()) -> SimpleNamespace:
    """A conversation that has ``spoken`` (role bot/user, text) and the matching model history."""
    entries = [{"role": role, "message": text, "time": int(T0 * 1000) + i, "secondsFromStart": float(i)}
               for i, (role, text) in enumerate(spoken)]
    history = [ChatMessage(role="assistant" if role == "bot" else "user", content=text) for role, text in spoken]
    return SimpleNamespace(assistant=assistant, messages=entries, session=SimpleNamespace(history=history))


ASSISTANT = {"name": "booking", "firstMessage": "Hello", "model": {"provider": "rules"},
             "server": {"url": "http://127.0.0.1:9/hook", "secret": "s3cret"}}


def answered_call(**kwargs: Any) -> FakeCall:
    call = FakeCall(FakeManager(), CallTarget("assistant", assistant=ASSISTANT), **kwargs)
    call.answer(T0 + 2)
    call.conversation = conversation(parse_assistant(ASSISTANT),
                                     [("bot", "Hello"), ("user", "I would like a table"), ("bot", "For when?")])
    return call


# ------------------------------------------------------------------ the schema


@cache
def schemas() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA.read_text())
    return dict(data["schemas"])


SCHEMA_NAMES = {
    "status-update": "ServerMessageStatusUpdate",
    "transcript": "ServerMessageTranscript",
    "conversation-update": "ServerMessageConversationUpdate",
    "speech-update": "ServerMessageSpeechUpdate",
    "user-interrupted": "ServerMessageUserInterrupted",
    "hang": "ServerMessageHang",
    "end-of-call-report": "ServerMessageEndOfCallReport",
    "transfer-update": "ServerMessageTransferUpdate",
}


def check_against_schema(message: dict[str, Any]) -> None:
    """Required fields present; top-level enums respected; the call has the Call object's required fields;
    the whole thing survives the JSON encoding it is sent with."""
    schema = schemas()[SCHEMA_NAMES[message["type"]]]
    missing = [name for name in schema.get("required", []) if name not in message]
    assert not missing, f"{message['type']}: missing {missing}"
    for name, value in message.items():
        prop = schema["properties"].get(name)
        assert prop is not None, f"{message['type']}: {name!r} is not a field of {SCHEMA_NAMES[message['type']]}"
        if "enum" in prop:
            assert value in prop["enum"], f"{message['type']}.{name} = {value!r} not in Vapi's list"
        if prop.get("type") == "number":
            assert isinstance(value, int | float)
        if prop.get("type") == "string":
            assert isinstance(value, str), f"{message['type']}.{name} = {value!r}"
    call_schema = schemas()["Call"]
    assert all(name in message["call"] for name in call_schema["required"])
    # call_record adds Vapi's older top-level call.transcript next to call.artifact.transcript
    assert set(message["call"]) - {"transcript"} <= set(call_schema["properties"])
    assert json.loads(messages.encode(message)) == {"message": message}


# Vapi's report fields that its current schema no longer lists (its docs and receivers still read them).
REPORT_EXTRAS = {"transcript", "messages", "summary", "recordingUrl", "stereoRecordingUrl", "durationMs",
                 "durationSeconds", "durationMinutes", "costBreakdown"}


def test_status_updates_match_the_schema() -> None:
    call = FakeCall(FakeManager(), CallTarget("assistant", "booking"))
    ringing = messages.status_update(call.as_call(), "ringing", now=T0 + 0.5)
    check_against_schema(ringing)
    assert ringing["timestamp"] == int((T0 + 0.5) * 1000)
    assert ringing["status"] == "ringing" and "endedReason" not in ringing
    assert ringing["customer"] == {"number": "+15551234567"}
    assert ringing["phoneNumber"] == {"number": "+15550001111"}
    assert ringing["call"]["id"] == call.id and ringing["call"]["assistantId"] == "booking"
    call.end("customer-ended-call", T0 + 9)
    ended = messages.status_update(call.as_call(), "ended", now=T0 + 9)
    check_against_schema(ended)
    assert ended["endedReason"] == "customer-ended-call"


def test_conversation_messages_match_the_schema() -> None:
    call = answered_call()
    assistant = call.conversation.assistant
    final = messages.transcript(call.as_call(), TranscriptEvent(role="user", text="a table", final=True), now=T0,
                                assistant=assistant)
    partial = messages.transcript(call.as_call(), TranscriptEvent(role="user", text="a ta", final=False), now=T0)
    spoken = messages.transcript(call.as_call(), TranscriptEvent(role="assistant", text="Hello", final=True),
                                 now=T0, assistant=assistant)
    for message in (final, partial, spoken):
        fields = {k: v for k, v in message.items() if k != "assistant"}  # the assistant is Vapi's DTO, not ours
        check_against_schema(fields)
    assert (final["transcriptType"], partial["transcriptType"]) == ("final", "partial")
    assert spoken["assistantName"] == "booking"
    assert final["assistant"]["server"]["url"] == "http://127.0.0.1:9/hook"

    update = messages.conversation_update(
        call.as_call(), ConversationUpdate(messages=tuple(call.conversation.session.history)), now=T0)
    check_against_schema({k: v for k, v in update.items() if k != "assistant"})
    assert [m["message"] for m in update["messages"]] == ["Hello", "I would like a table", "For when?"]
    assert update["messagesOpenAIFormatted"][1] == {"role": "user", "content": "I would like a table"}

    speech = messages.speech_update(call.as_call(), SpeechUpdate(role="assistant", status="started"), turn=2,
                                    now=T0)
    check_against_schema(speech)
    assert (speech["status"], speech["role"], speech["turn"]) == ("started", "assistant", 2)
    check_against_schema(messages.user_interrupted(call.as_call(), now=T0))
    check_against_schema(messages.hang(call.as_call(), now=T0))


def test_a_transfer_update_from_the_call_layer_gets_the_common_fields() -> None:
    call = answered_call()
    built = {"type": "transfer-update", "destination": {"type": "number", "number": "+15559990000"}}
    message = messages.with_common_fields(call.as_call(), built, now=T0 + 3)
    check_against_schema(message)
    assert message["destination"] == built["destination"] and message["timestamp"] == int((T0 + 3) * 1000)


def test_end_of_call_report() -> None:
    call = answered_call()
    call.recording_url = "http://127.0.0.1:8080/recordings/x.wav"  # type: ignore[attr-defined]
    call.end("customer-ended-call", T0 + 2 + 83.5)
    report = messages.end_of_call_report(call.as_call(), now=T0 + 86)
    schema_fields = {k: v for k, v in report.items() if k not in REPORT_EXTRAS}
    check_against_schema(schema_fields)
    assert report["endedReason"] == "customer-ended-call"
    assert report["startedAt"] == "2025-11-21T08:00:02.000Z"
    assert report["endedAt"] == "2025-11-21T08:01:25.500Z"
    assert (report["durationMs"], report["durationSeconds"]) == (83500, 83.5)
    assert report["durationMinutes"] == pytest.approx(83.5 / 60, abs=1e-4)
    assert report["cost"] == 0 and report["costs"] == [] and report["summary"] == "" and report["analysis"] == {}
    breakdown = report["costBreakdown"]
    assert breakdown["total"] == 0 and all(v == 0 for v in breakdown["analysisCostBreakdown"].values())
    assert report["transcript"] == "AI: Hello\nUser: I would like a table\nAI: For when?"
    assert report["artifact"]["transcript"] == report["transcript"]
    assert [m["role"] for m in report["messages"]] == ["bot", "user", "bot"]
    assert report["artifact"]["messagesOpenAIFormatted"][2] == {"role": "assistant", "content": "For when?"}
    assert report["recordingUrl"] == report["artifact"]["recordingUrl"] == call.recording_url  # type: ignore[attr-defined]
    assert report["call"]["endedReason"] == "customer-ended-call" and report["call"]["artifact"]
    assert set(schemas()["Artifact"]["properties"]) >= set(report["artifact"])


def test_a_call_never_answered_reports_zero_duration() -> None:
    call = FakeCall(FakeManager(), CallTarget("request"))
    call.end("assistant-request-failed", T0 + 7.5)
    report = messages.end_of_call_report(call.as_call(), now=T0 + 8)
    check_against_schema({k: v for k, v in report.items() if k not in REPORT_EXTRAS})
    assert report["durationMs"] == 0 and report["durationSeconds"] == 0
    assert report["startedAt"] == "2025-11-21T08:00:00.000Z" and report["endedAt"] == "2025-11-21T08:00:07.500Z"
    assert report["messages"] == [] and report["transcript"] == "" and "recordingUrl" not in report
