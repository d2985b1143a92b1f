"""A conversation's settings as plain values: what the session needs from the assistant, resolved once
per call (variables substituted, old and new Vapi shapes folded together) so the hot path reads fields,
not JSON. :func:`gateway.pipeline.plan.settings_for` builds one from an assistant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.pipeline.chunker import ChunkOptions
from gateway.pipeline.turn import TurnOptions
from gateway.pipeline.vad import VadOptions
from gateway.providers.base import ChatMessage, LlmOptions, SttOptions, ToolSpec, TtsOptions

__all__ = ["IdleSettings", "KeypadSettings", "SessionSettings", "ToolBehaviour"]

FirstMessageMode = Literal[
    "assistant-speaks-first", "assistant-waits-for-user", "assistant-speaks-first-with-model-generated-message"
]

DEFAULT_APOLOGY = "Sorry, I am having technical difficulties right now. Please call again later. Goodbye."


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleSettings:
    """Idle messages (``messagePlan.idle*`` or a ``customer.speech.timeout`` hook)."""

    messages: tuple[str, ...] = ()
    timeout_seconds: float = 10.0
    max_spoken_count: int = 3
    reset_on_user_speech: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class KeypadSettings:
    """``keypadInputPlan``: digits are collected and sent to the model as the caller's words."""

    enabled: bool = False
    timeout_seconds: float = 2.0
    delimiters: tuple[str, ...] = ("#",)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolBehaviour:
    """What the session itself does for a tool the model calls (others go to the tool runner)."""

    name: str
    kind: Literal["endCall", "function", "dtmf", "transferCall"]
    request_start: str | None = None  # spoken when the call starts
    request_complete: str | None = None
    request_failed: str | None = None
    request_delayed: str | None = None
    delayed_after_seconds: float = 2.0
    is_async: bool = False
    timeout_seconds: float = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSettings:
    first_message: str | None = None
    first_message_mode: FirstMessageMode = "assistant-speaks-first"
    first_message_interruptible: bool = True
    messages: tuple[ChatMessage, ...] = ()  # the model's starting messages (system prompt...)
    tools: tuple[ToolSpec, ...] = ()
    tool_behaviour: dict[str, ToolBehaviour] = field(default_factory=dict)
    llm: LlmOptions = field(default_factory=LlmOptions)
    stt: SttOptions = field(default_factory=SttOptions)
    tts: tuple[TtsOptions, ...] = (TtsOptions(),)  # one per voice in the fallback chain, same order
    turn: TurnOptions = field(default_factory=TurnOptions)
    vad: VadOptions = field(default_factory=VadOptions)
    chunk: ChunkOptions = field(default_factory=ChunkOptions)
    idle: IdleSettings = field(default_factory=IdleSettings)
    keypad: KeypadSettings = field(default_factory=KeypadSettings)
    silence_timeout_seconds: float = 30.0
    silence_timeout_message: str | None = None
    max_duration_seconds: float = 600.0
    end_call_phrases: tuple[str, ...] = ()
    end_call_message: str | None = None
    apology: str = DEFAULT_APOLOGY
    max_tool_rounds: int = 5
