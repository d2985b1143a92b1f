"""Which server messages a call sends, and where: the call observer that fills the outbox.

Destination (Vapi's precedence): the assistant's server (``assistant.server.url``, or the old
``serverUrl``/``serverUrlSecret``), else the inbound number's ``server`` (the assistant-request server), else
nowhere. The secret is the server's own, else ``webhooks.signing_secret``. Messages are filtered by the
assistant's ``serverMessages`` (Vapi's default list when the assistant does not set it; a call with no
assistant yet, such as one whose assistant-request failed, uses the default list too, so the number's server
still gets ``status-update`` ended and the ``end-of-call-report``). Echo calls send nothing.

``hang`` is detected here: Vapi sends it when the assistant has not started speaking some seconds after the
caller stopped (5 s by default). A per-call timer starts when the caller's speech stops and is cancelled when
anyone starts speaking or the call ends.

Request/response messages (``tool-calls``, ``assistant-request``, ``transfer-destination-request``...) are
POSTed synchronously by the call layer, which needs their answer; they are never queued here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, assert_never

from gateway.assistants import Assistant, AssistantError
from gateway.assistants.model import DEFAULT_SERVER_MESSAGES
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
from gateway.webhooks import messages
from gateway.webhooks.outbox import Outbox, OutboxEntry

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.config import WebhookConfig

__all__ = ["DEFAULT_HANG_SECONDS", "NOT_QUEUED", "Destination", "WebhookDispatcher", "wants"]

DEFAULT_HANG_SECONDS = 5.0

# Messages whose answer the call layer waits for: POSTed synchronously, never through the outbox.
NOT_QUEUED = frozenset({
    "assistant-request", "tool-calls", "function-call", "transfer-destination-request",
    "handoff-destination-request", "knowledge-base-request", "voice-request", "call.endpointing.request",
})


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], TimerHandle]


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """Where a call's server messages go and how they are signed."""

    url: str
    secret: str | None
    headers: dict[str, str] = field(default_factory=dict)


def wants(server_messages: Sequence[str], message_type: str, *, transcript_type: str | None = None) -> bool:
    """Does ``serverMessages`` ask for this message? ``transcript`` asks for both kinds of transcript;
    Vapi's ``transcript[transcriptType="final"]`` for the final ones only."""
    if message_type in server_messages:
        return True
    if message_type == "transcript" and transcript_type is not None:
        return f'transcript[transcriptType="{transcript_type}"]' in server_messages
    return False


@dataclass
class _CallState:
    target: object = None  # the CallTarget the assistant below was resolved for (identity)
    assistant: Assistant | None = None
    turn: int = 0
    last_speaker: str | None = None
    hang_timer: TimerHandle | None = None

    def cancel_hang(self) -> None:
        if self.hang_timer is not None:
            self.hang_timer.cancel()
            self.hang_timer = None


class WebhookDispatcher:
    """A ``CallObserver`` (gateway.calls) turning call status, conversation events and call-layer messages
    into outbox entries (see module doc). ``wake`` tells the delivery worker something was queued."""

    def __init__(
        self,
        config: WebhookConfig,
        outbox: Outbox,
        *,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        call_later: CallLater | None = None,
        hang_seconds: float = DEFAULT_HANG_SECONDS,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.wake = wake
        self.clock = clock
        self._call_later = call_later
        self.hang_seconds = hang_seconds
        self._calls: dict[str, _CallState] = {}
        self.log = get_logger("webhooks")

    # ------------------------------------------------------------------ where and what

    def assistant(self, call: Call) -> Assistant | None:
        """The assistant the call talks to (or will once answered); None before one is known or for calls
        that have none."""
        if call.conversation is not None:
            return call.conversation.assistant
        state = self._state(call)
        if state.target is not call.target:
            state.target = call.target
            state.assistant = None
            if call.target.kind == "assistant":
                try:
                    state.assistant = call.manager.assistant_for(call.target)
                except AssistantError:
                    state.assistant = None  # the call itself reports it (assistant-not-valid)
        return state.assistant

    def destination(self, call: Call, assistant: Assistant | None) -> Destination | None:
        if call.target.kind in ("echo", "bridge"):
            return None
        server = assistant.webhook_server() if assistant is not None else None
        if server is not None and server.url:
            return Destination(url=server.url, secret=server.secret or self.config.signing_secret,
                               headers=dict(server.headers))
        route = call.route
        if route is not None and route.server is not None:
            return Destination(url=route.server.url, secret=route.server.secret or self.config.signing_secret,
                               headers=dict(route.server.headers))
        return None

    def _target(
        self, call: Call, message_type: str, *, transcript_type: str | None = None
    ) -> tuple[Destination, Assistant | None] | None:
        """Where a ``message_type`` message of ``call`` goes, or None when nobody asked for it."""
        assistant = self.assistant(call)
        destination = self.destination(call, assistant)
        if destination is None:
            return None
        server_messages = assistant.server_messages if assistant is not None else DEFAULT_SERVER_MESSAGES
        if not wants(server_messages, message_type, transcript_type=transcript_type):
            return None
        return destination, assistant

    def _state(self, call: Call) -> _CallState:
        state = self._calls.get(call.id)
        if state is None:
            state = self._calls[call.id] = _CallState()
        return state

    def _enqueue(self, call: Call, destination: Destination, message: dict[str, Any], *, durable: bool = False,
                 now: float) -> None:
        entry = OutboxEntry(
            call_id=call.id,
            type=str(message["type"]),
            url=destination.url,
            secret=destination.secret,
            body=messages.encode(message),
            created_at=now,
            headers=destination.headers,
        )
        if durable:
            self.outbox.add_durable(entry)
        else:
            self.outbox.add(entry)
        self.wake()

    # ------------------------------------------------------------------ CallObserver

    def call_status(self, call: Call, status: str) -> None:
        if status == "ended":
            self._state(call).cancel_hang()
        target = self._target(call, "status-update")
        if target is None:
            return
        destination, assistant = target
        now = self.clock()
        self._enqueue(call, destination, messages.status_update(call, status, now=now, assistant=assistant),
                      now=now)

    def call_event(self, call: Call, event: SessionEvent) -> None:
        now = self.clock()
        match event:
            case TranscriptEvent():
                kind = "final" if event.final else "partial"
                target = self._target(call, "transcript", transcript_type=kind)
                if target is not None:
                    message = messages.transcript(call, event, now=now, assistant=target[1])
                    self._enqueue(call, target[0], message, now=now)
            case SpeechUpdate():
                turn = self._on_speech(call, event)
                target = self._target(call, "speech-update")
                if target is not None:
                    message = messages.speech_update(call, event, turn=turn, now=now, assistant=target[1])
                    self._enqueue(call, target[0], message, now=now)
            case UserInterrupted():
                target = self._target(call, "user-interrupted")
                if target is not None:
                    self._enqueue(call, target[0], messages.user_interrupted(call, now=now, assistant=target[1]),
                                  now=now)
            case ConversationUpdate():
                target = self._target(call, "conversation-update")
                if target is not None:
                    message = messages.conversation_update(call, event, now=now, assistant=target[1])
                    self._enqueue(call, target[0], message, now=now)
            case TurnTiming() | ProviderFailure() | EndCall():
                pass
            case _:
                assert_never(event)

    def call_message(self, call: Call, message: dict[str, Any]) -> None:
        message_type = message.get("type")
        if not isinstance(message_type, str) or message_type in NOT_QUEUED:
            return
        target = self._target(call, message_type)
        if target is None:
            return
        now = self.clock()
        full = messages.with_common_fields(call, message, now=now, assistant=target[1])
        self._enqueue(call, target[0], full, now=now)

    def call_released(self, call: Call) -> None:
        target = self._target(call, "end-of-call-report")
        state = self._calls.pop(call.id, None)
        if state is not None:
            state.cancel_hang()
        if target is None:
            return
        now = self.clock()
        report = messages.end_of_call_report(call, now=now, assistant=target[1])
        # The report is on disk before the release completes: it survives a crash or restart from here on.
        self._enqueue(call, target[0], report, durable=True, now=now)
        call.log.info("webhook_report_queued", url=target[0].url)

    # ------------------------------------------------------------------ hang

    def _on_speech(self, call: Call, event: SpeechUpdate) -> int:
        """Track turns (a turn changes when the other party starts speaking) and the hang timer."""
        state = self._state(call)
        if event.status == "started":
            state.cancel_hang()
            if state.last_speaker is not None and state.last_speaker != event.role:
                state.turn += 1
            state.last_speaker = event.role
        elif event.role == "user" and self._target(call, "hang") is not None:
            state.cancel_hang()
            state.hang_timer = self._schedule(self.hang_seconds, lambda: self._hang(call))
        return state.turn

    def _schedule(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        if self._call_later is not None:
            return self._call_later(delay, callback)
        return asyncio.get_running_loop().call_later(delay, callback)

    def _hang(self, call: Call) -> None:
        state = self._calls.get(call.id)
        if state is not None:
            state.hang_timer = None
        if call.status == "ended" or call.id not in self._calls:
            return
        target = self._target(call, "hang")
        if target is None:
            return
        call.log.warning("assistant_hang", seconds=self.hang_seconds)
        now = self.clock()
        try:
            self._enqueue(call, target[0], messages.hang(call, now=now, assistant=target[1]), now=now)
        except Exception as exc:  # a timer callback: nobody else would log it with the call id
            call.log.error("webhook_enqueue_failed", type="hang", error=repr(exc))
