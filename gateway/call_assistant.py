"""An answered call connected to its assistant: builds the conversation from the assistant's JSON, wires it
to the call's media, and turns the conversation's end into a BYE with Vapi's ``endedReason``.

The conversation's events (transcripts, speech updates, interruptions, turn timings) are logged here with
the call's bound context and kept on the call for the end-of-call report; server messages are the control
plane's (webhooks) and subscribe through ``listeners``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.assistants import Assistant
from gateway.assistants.variables import default_variables, render_assistant
from gateway.call_tools import CallTools
from gateway.call_types import CallState
from gateway.observability.logging import get_logger
from gateway.pipeline.events import (
    ConversationUpdate,
    EndCall,
    ProviderFailure,
    SessionEvent,
    SpeechUpdate,
    TranscriptEvent,
    TurnTiming,
    UserInterrupted,
)
from gateway.pipeline.plan import settings_for
from gateway.pipeline.session import ConversationSession

if TYPE_CHECKING:
    from gateway.call import Call

__all__ = ["CallConversation"]


class CallConversation:
    """The assistant side of one call (see module doc)."""

    def __init__(
        self,
        call: Call,
        assistant: Assistant,
        *,
        variable_values: dict[str, Any] | None = None,
        end_with: tuple[str, str] | None = None,
    ) -> None:
        self.call = call
        self.end_with = end_with  # (endedReason, message): say the message, then hang up
        self.assistant = assistant
        self.variable_values = dict(variable_values or {})
        self.session: ConversationSession | None = None
        self.transcript: list[tuple[str, str]] = []  # (role, text) finals, in order
        # Vapi artifact.messages: {role: system|bot|user|tool_calls|tool_call_result, message, time, ...}
        self.messages: list[dict[str, Any]] = []
        self.timings: list[TurnTiming] = []
        self.listeners: list[Callable[[SessionEvent], None]] = []
        self.ended_reason: str | None = None

    def variables(self) -> dict[str, Any]:
        call = self.call
        values = default_variables(datetime.now(UTC), customer_number=call.customer_number, call_id=call.id)
        values.update(call.variables)  # X- headers of the INVITE
        values.update(self.variable_values)  # assistantOverrides.variableValues win
        return values

    def start(self) -> None:
        """The call is confirmed: build the pipeline and converse (inside the call's TaskGroup)."""
        call = self.call
        manager = call.manager
        assistant = render_assistant(self.assistant, self.variables())
        settings = settings_for(assistant)
        providers = manager.providers.for_assistant(assistant, tools=CallTools(call, assistant))
        session = ConversationSession(
            settings,
            providers,
            on_event=self._on_event,
            metrics=manager.metrics,
            encoding=call.media.stt_encoding,
            log=get_logger("conversation").bind(**call.log_fields),
        )
        self.session = session
        for message in settings.messages:
            if message.role == "system" and message.content:
                self.record_message("system", message.content)
        call.media.conversation = session
        session.withdraw_audio = call.media.withdraw_audio
        call.media.on_dtmf = lambda event: session.on_dtmf(event.digit, session.loop.time())
        call.spawn(self._run(session))
        if self.end_with is not None:
            call.spawn(self._say_and_end(session, *self.end_with))

    async def _say_and_end(self, session: ConversationSession, reason: str, message: str) -> None:
        await session.running.wait()
        session.end(reason, message)

    async def _run(self, session: ConversationSession) -> None:
        started = time.monotonic()
        reason = await session.run()
        self.ended_reason = reason
        self.call.log.info("conversation_ended", reason=reason, seconds=round(time.monotonic() - started, 3),
                           turns=len(self.timings))
        if self.call.state is CallState.CONFIRMED:
            self.call.hangup(reason)

    def release(self) -> None:
        """The call is over and its report taken: break the links that make the call, this conversation and
        its pipeline a reference cycle (see ``ConversationSession.release``)."""
        self.listeners.clear()
        media = self.call.media
        media.on_dtmf = None
        media.conversation = None
        if self.session is not None:
            self.session.release()

    def stop(self, reason: str) -> None:
        """The call ended from the SIP side."""
        if self.session is not None:
            self.session.stop(reason)
        self.call.media.conversation = None

    def record_message(self, role: str, message: str | None = None, **fields: Any) -> dict[str, Any]:
        """Append one entry to the call's artifact messages (Vapi shape); times are Unix milliseconds."""
        now = time.time()
        started = self.call.answered_at or self.call.created_at
        entry: dict[str, Any] = {"role": role, "time": int(now * 1000),
                                 "secondsFromStart": round(max(0.0, now - started), 3)}
        if message is not None:
            entry["message"] = message
        entry.update(fields)
        self.messages.append(entry)
        return entry

    def _on_event(self, event: SessionEvent) -> None:
        log = self.call.log
        match event:
            case TranscriptEvent():
                if event.final:
                    self.transcript.append((event.role, event.text))
                    self.record_message("bot" if event.role == "assistant" else "user", event.text)
                    log.info("transcript", role=event.role, text=event.text)
            case TurnTiming():
                self.timings.append(event)
            case UserInterrupted():
                log.info("user_interrupted", reason=event.reason, heard=event.heard)
            case ProviderFailure():
                pass  # logged by the session
            case EndCall():
                self.ended_reason = event.reason
            case SpeechUpdate() | ConversationUpdate():
                pass
        for listener in self.listeners:
            listener(event)
        self.call.manager.notify_event(self.call, event)
