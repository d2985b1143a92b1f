"""A call as Vapi's ``Call`` object: what ``GET /call/{id}`` returns and what every server message carries
in ``message.call``. Built from a live :class:`~gateway.call.Call`; the end-of-call report and the call store
use the same function so the API and the webhooks never disagree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.call import Call

__all__ = ["artifact", "call_object", "iso_time", "transcript_text"]


def iso_time(ts: float | None) -> str | None:
    """Unix seconds → ISO 8601 in UTC with milliseconds and ``Z`` (Vapi's format)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def transcript_text(messages: list[dict[str, Any]]) -> str:
    """Vapi's ``artifact.transcript``: ``AI: ...`` / ``User: ...`` lines from the spoken messages."""
    lines = []
    for m in messages:
        if m.get("role") == "bot":
            lines.append(f"AI: {m.get('message', '')}")
        elif m.get("role") == "user":
            lines.append(f"User: {m.get('message', '')}")
    return "\n".join(lines)


def artifact(call: Call) -> dict[str, Any]:
    """``call.artifact``: messages, the OpenAI-formatted history, the transcript, and the recording when
    one was made."""
    conversation = call.conversation
    messages = list(conversation.messages) if conversation is not None else []
    openai: list[dict[str, Any]] = []
    if conversation is not None and conversation.session is not None:
        openai = [m.to_openai() for m in conversation.session.history]
    out: dict[str, Any] = {
        "messages": messages,
        "messagesOpenAIFormatted": openai,
        "transcript": transcript_text(messages),
    }
    recording = getattr(call, "recording_url", None)
    if recording:
        out["recordingUrl"] = recording
        out["stereoRecordingUrl"] = recording
        out["recording"] = {"stereoUrl": recording}  # Vapi's Recording object
    # gateway extensions: where the files are on this machine (GET /call/{id}/stereo-recording reads the WAV)
    path = getattr(call, "recording_path", None)
    if path:
        out["recordingPath"] = path
    capture = getattr(call, "recording", None)
    if capture is not None and capture.pcap_path is not None:
        out["pcapPath"] = str(capture.pcap_path)
    return out


def call_object(call: Call, *, with_artifact: bool = False) -> dict[str, Any]:
    """Vapi's ``Call`` for ``call`` (see module doc). Costs are zero: the gateway bills nothing."""
    target = call.target
    obj: dict[str, Any] = {
        "id": call.id,
        "orgId": "local",
        "type": "inboundPhoneCall" if call.direction == "inbound" else "outboundPhoneCall",
        "status": call.status,
        "createdAt": iso_time(call.created_at),
        "updatedAt": iso_time(call.ended_at or call.answered_at or call.created_at),
        "phoneCallProvider": "sip",
        "phoneCallTransport": "sip",
        "phoneCallProviderId": call.sip_call_id,
        "cost": 0,
        "costs": [],
    }
    if call.answered_at is not None:
        obj["startedAt"] = iso_time(call.answered_at)
    if call.ended_at is not None:
        obj["endedAt"] = iso_time(call.ended_at)
    if call.ended_reason is not None:
        obj["endedReason"] = call.ended_reason
    if call.customer_number:
        obj["customer"] = {"number": call.customer_number}
    if call.phone_number:
        obj["phoneNumber"] = {"number": call.phone_number}
    if target.kind == "assistant":
        if target.assistant is not None:
            obj["assistant"] = target.assistant
        elif target.name is not None:
            obj["assistantId"] = target.name
        if target.overrides:
            obj["assistantOverrides"] = target.overrides
        elif target.variable_values:
            obj["assistantOverrides"] = {"variableValues": target.variable_values}
    destination = getattr(call, "transfer_destination", None)
    if destination:
        obj["destination"] = destination
    if with_artifact:
        art = artifact(call)
        obj["artifact"] = art
        obj["messages"] = art["messages"]
        obj["transcript"] = art["transcript"]
    return obj
