"""Vapi server messages (``ServerMessage*`` of Vapi's OpenAPI document) built from a live call.

Every message is sent as ``{"message": {...}}`` and carries the common fields Vapi puts on all of them:
``type``, ``timestamp`` (Unix milliseconds), ``call`` (the ``Call`` object of :mod:`gateway.call_record`),
``customer``, ``phoneNumber`` and, when the call has one, ``assistant``. The builders are pure: the time is a
parameter (``now``, Unix seconds) and nothing is sent from here.

Shapes (required fields per Vapi's schema): ``status-update`` (status; endedReason when ended),
``transcript`` (role, transcriptType, transcript), ``conversation-update`` (messages,
messagesOpenAIFormatted), ``speech-update`` (status, role, turn), ``user-interrupted``, ``hang``,
``end-of-call-report`` (endedReason, artifact, analysis, plus Vapi's report fields: transcript, messages,
summary, recordingUrl, durations and zero costs).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gateway.call_record import artifact, call_object, iso_time
from gateway.pipeline.events import ConversationUpdate, SpeechUpdate, TranscriptEvent

if TYPE_CHECKING:
    from gateway.assistants import Assistant
    from gateway.call import Call

__all__ = [
    "conversation_update",
    "encode",
    "end_of_call_report",
    "hang",
    "speech_update",
    "status_update",
    "transcript",
    "user_interrupted",
    "with_common_fields",
]

# Vapi's CostBreakdown, all zero: the gateway bills nothing.
ZERO_COST_BREAKDOWN: dict[str, Any] = {
    "transport": 0, "stt": 0, "llm": 0, "tts": 0, "vapi": 0, "chat": 0, "total": 0,
    "llmPromptTokens": 0, "llmCompletionTokens": 0, "llmCachedPromptTokens": 0, "ttsCharacters": 0,
    "analysisCostBreakdown": {
        "summary": 0, "summaryPromptTokens": 0, "summaryCompletionTokens": 0,
        "structuredData": 0, "structuredDataPromptTokens": 0, "structuredDataCompletionTokens": 0,
        "successEvaluation": 0, "successEvaluationPromptTokens": 0, "successEvaluationCompletionTokens": 0,
    },
}


def encode(message: dict[str, Any]) -> bytes:
    """The POST body: ``{"message": message}`` as compact UTF-8 JSON (the exact bytes that are signed)."""
    return json.dumps({"message": message}, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def assistant_json(assistant: Assistant | None) -> dict[str, Any] | None:
    """The assistant as the user wrote it (camelCase, only the fields that were set)."""
    if assistant is None:
        return None
    dumped: dict[str, Any] = assistant.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return dumped


def with_common_fields(
    call: Call, message: dict[str, Any], *, now: float, assistant: Assistant | None = None
) -> dict[str, Any]:
    """``message`` (which has at least ``type``) plus the fields every server message carries; fields the
    message already has win."""
    common: dict[str, Any] = {
        "timestamp": int(now * 1000),
        "call": call_object(call),
        "customer": {"number": call.customer_number} if call.customer_number else {},
    }
    if call.phone_number:
        common["phoneNumber"] = {"number": call.phone_number}
    dumped = assistant_json(assistant)
    if dumped is not None:
        common["assistant"] = dumped
    return {**common, **message}


def status_update(call: Call, status: str, *, now: float, assistant: Assistant | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "status-update", "status": status}
    if status == "ended":
        message["endedReason"] = call.ended_reason or "unknown-error"
    destination = getattr(call, "transfer_destination", None)
    if status == "forwarding" and destination:
        message["destination"] = destination
    return with_common_fields(call, message, now=now, assistant=assistant)


def transcript(
    call: Call, event: TranscriptEvent, *, now: float, assistant: Assistant | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "transcript",
        "role": event.role,
        "transcriptType": "final" if event.final else "partial",
        "transcript": event.text,
    }
    if event.role == "assistant" and assistant is not None and assistant.name:
        message["assistantName"] = assistant.name
    return with_common_fields(call, message, now=now, assistant=assistant)


def conversation_update(
    call: Call, event: ConversationUpdate | None, *, now: float, assistant: Assistant | None = None
) -> dict[str, Any]:
    """``messages``: the call's artifact messages so far; ``messagesOpenAIFormatted``: the model's history
    (from ``event`` when given, else the session's)."""
    art = artifact(call)
    openai = [m.to_openai() for m in event.messages] if event is not None else art["messagesOpenAIFormatted"]
    message = {"type": "conversation-update", "messages": art["messages"], "messagesOpenAIFormatted": openai}
    return with_common_fields(call, message, now=now, assistant=assistant)


def speech_update(
    call: Call, event: SpeechUpdate, *, turn: int, now: float, assistant: Assistant | None = None
) -> dict[str, Any]:
    message = {"type": "speech-update", "status": event.status, "role": event.role, "turn": turn}
    return with_common_fields(call, message, now=now, assistant=assistant)


def user_interrupted(call: Call, *, now: float, assistant: Assistant | None = None) -> dict[str, Any]:
    return with_common_fields(call, {"type": "user-interrupted"}, now=now, assistant=assistant)


def hang(call: Call, *, now: float, assistant: Assistant | None = None) -> dict[str, Any]:
    return with_common_fields(call, {"type": "hang"}, now=now, assistant=assistant)


def end_of_call_report(call: Call, *, now: float, assistant: Assistant | None = None) -> dict[str, Any]:
    """Vapi's end-of-call report. Durations run from the answer to the end (zero for a call never
    answered); ``startedAt`` is the answer time, or the creation time of a call never answered."""
    art = artifact(call)
    ended_at = call.ended_at if call.ended_at is not None else now
    started_at = call.answered_at if call.answered_at is not None else call.created_at
    seconds = max(0.0, ended_at - call.answered_at) if call.answered_at is not None else 0.0
    message: dict[str, Any] = {
        "type": "end-of-call-report",
        "endedReason": call.ended_reason or "unknown-error",
        "call": call_object(call, with_artifact=True),
        "artifact": art,
        "analysis": {},
        "transcript": art["transcript"],
        "messages": art["messages"],
        "summary": "",
        "startedAt": iso_time(started_at),
        "endedAt": iso_time(ended_at),
        "durationMs": round(seconds * 1000),
        "durationSeconds": round(seconds, 3),
        "durationMinutes": round(seconds / 60.0, 4),
        "cost": 0,
        "costs": [],
        "costBreakdown": dict(ZERO_COST_BREAKDOWN),
    }
    if "recordingUrl" in art:
        message["recordingUrl"] = art["recordingUrl"]
        message["stereoRecordingUrl"] = art.get("stereoRecordingUrl", art["recordingUrl"])
    destination = getattr(call, "transfer_destination", None)
    if destination:
        message["destination"] = destination
    return with_common_fields(call, message, now=now, assistant=assistant)
