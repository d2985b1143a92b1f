"""The call store's observer: keeps every call's record and event log in SQLite so ``GET /call`` and
``GET /call/{id}/logs`` answer after the call ended, and after a restart.

The record is Vapi's ``Call`` (``gateway.call_record.call_object``), written at each status change and, with
its artifact (messages, transcript), once the call is released. The event log keeps what an operator reads
when a call went wrong: status changes, final transcripts, tool calls, transfer updates and the end.
Observers run on the loop: the store only queues the writes.
"""

from __future__ import annotations

from typing import Any

from gateway.call import Call
from gateway.call_record import call_object
from gateway.pipeline.events import SessionEvent, TranscriptEvent
from gateway.store import Store

__all__ = ["CallRecorder"]

# Server messages the call layer builds (CallObserver.call_message) kept in the log, with the fields kept.
_LOGGED_MESSAGES = ("tool-calls", "tool-calls-result", "transfer-update", "transfer-destination-request",
                    "hang", "phone-call-control")


class CallRecorder:
    """A ``CallObserver`` writing to ``store``; ``extras`` adds API-only fields (``name``,
    ``phoneNumberId``, the customer's name) to a call's object."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._extras: dict[str, dict[str, Any]] = {}

    def set_extras(self, call: Call, fields: dict[str, Any]) -> None:
        """Fields of ``POST /call`` the call object does not know; saved with the record from now on."""
        if fields:
            self._extras.setdefault(call.id, {}).update(fields)
            self.store.save_call(self.call_object(call))

    def call_object(self, call: Call, *, with_artifact: bool = False) -> dict[str, Any]:
        obj = call_object(call, with_artifact=with_artifact)
        for key, value in self._extras.get(call.id, {}).items():
            if isinstance(value, dict) and isinstance(obj.get(key), dict):
                obj[key] = {**obj[key], **value}
            else:
                obj[key] = value
        return obj

    # ------------------------------------------------------------------ CallObserver

    def call_status(self, call: Call, status: str) -> None:
        self.store.save_call(self.call_object(call))
        data: dict[str, Any] = {"status": status}
        if status == "ended" and call.ended_reason:
            data["endedReason"] = call.ended_reason
        self.store.append_event(call.id, "status-update", data)

    def call_event(self, call: Call, event: SessionEvent) -> None:
        # Only final transcripts: partials and speech updates are many per second and say little afterwards.
        if isinstance(event, TranscriptEvent) and event.final:
            self.store.append_event(call.id, "transcript",
                                    {"role": event.role, "transcriptType": "final", "transcript": event.text})

    def call_message(self, call: Call, message: dict[str, Any]) -> None:
        kind = str(message.get("type", "message"))
        if kind in _LOGGED_MESSAGES:
            self.store.append_event(call.id, kind, {k: v for k, v in message.items() if k not in ("type", "call")})

    def call_released(self, call: Call) -> None:
        self.store.save_call(self.call_object(call, with_artifact=True))
        self.store.append_event(call.id, "call-ended", {"endedReason": call.ended_reason})
        self._extras.pop(call.id, None)
