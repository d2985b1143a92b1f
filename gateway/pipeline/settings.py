"""A conversation's settings as plain values: what the session needs from the assistant, resolved once
per call (variables substituted, old and new Vapi shapes folded together) so the hot path reads fields,
not JSON. :func:`gateway.pipeline.plan.settings_for` builds one from an assistant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.pipeline.chunker import ChunkOptions
from gateway.pipeline.turn import TurnOptions
from gateway.pipeline.vad import VadOptions
from gateway.providers.base import ChatMessage, LlmOptions, SttOptions, ToolSpec, TtsOptions

__all__ = [
    "DEFAULT_TOOL_FILLERS",
    "IdleSettings",
    "KeypadSettings",
    "SessionSettings",
    "ToolBehaviour",
    "ToolCondition",
    "ToolMessageSpec",
]

FirstMessageMode = Literal[
    "assistant-speaks-first", "assistant-waits-for-user", "assistant-speaks-first-with-model-generated-message"
]

DEFAULT_APOLOGY = "Sorry, I am having technical difficulties right now. Please call again later. Goodbye."
DEFAULT_LLM_ERROR_MESSAGE = "Sorry, I could not answer that just now. Could you say it again?"


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


ToolMessageType = Literal["request-start", "request-complete", "request-failed", "request-response-delayed"]
ToolKind = Literal["endCall", "function", "dtmf", "transferCall"]

# Vapi ToolMessageStart: "If this message is not provided, one of the default filler messages ... will be used."
DEFAULT_TOOL_FILLERS = ("Hold on a sec.", "One moment.", "Just a sec.", "Give me a moment.", "This'll just take a sec.")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCondition:
    """Vapi ``Condition``: the tool call's argument ``param`` compared with ``value`` (numbers compare as
    numbers when both sides are numbers, else as strings)."""

    param: str
    operator: Literal["eq", "neq", "gt", "gte", "lt", "lte"]
    value: str

    def matches(self, arguments: Mapping[str, Any]) -> bool:
        if self.param not in arguments:
            return False
        actual: Any = arguments[self.param]
        if isinstance(actual, bool):
            actual = "true" if actual else "false"
        left: Any = actual
        right: Any = self.value
        try:
            left, right = float(actual), float(self.value)
        except (TypeError, ValueError):
            left, right = str(actual), self.value
        match self.operator:
            case "eq":
                return bool(left == right)
            case "neq":
                return bool(left != right)
            case "gt":
                return bool(left > right)
            case "gte":
                return bool(left >= right)
            case "lt":
                return bool(left < right)
            case "lte":
                return bool(left <= right)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolMessageSpec:
    """One of a tool's ``messages`` (Vapi ``ToolMessageStart/Complete/Failed/Delayed``), resolved to text."""

    type: ToolMessageType
    content: str
    role: Literal["assistant", "system"] = "assistant"  # system: a hint for the model, not speech
    blocking: bool = False  # request-start: the tool runs only once this has been spoken
    end_call_after_spoken: bool = False  # request-complete / request-failed
    timing_seconds: float | None = None  # request-response-delayed
    conditions: tuple[ToolCondition, ...] = ()

    def eligible(self, arguments: Mapping[str, Any]) -> bool:
        """Vapi: "conditions that the tool call arguments must meet in order for this message to be triggered"."""
        return all(c.matches(arguments) for c in self.conditions)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolBehaviour:
    """What the session itself does around a tool the model calls (the call itself goes to the tool runner).

    ``messages`` are the tool's Vapi messages; ``request_start`` ... ``request_delayed`` are a shorthand for
    assistant-role messages without conditions (both sources are used)."""

    name: str
    kind: ToolKind
    messages: tuple[ToolMessageSpec, ...] = ()
    request_start: str | None = None  # spoken when the call starts
    request_complete: str | None = None
    request_failed: str | None = None
    request_delayed: str | None = None
    delayed_after_seconds: float = 2.0
    is_async: bool = False
    timeout_seconds: float = 20.0
    default_fillers: bool = False  # speak one of Vapi's default fillers when no request-start is given

    def messages_of(self, type_: ToolMessageType, arguments: Mapping[str, Any]) -> list[ToolMessageSpec]:
        """The eligible messages of one type, the shorthand field first."""
        shorthand = {
            "request-start": self.request_start,
            "request-complete": self.request_complete,
            "request-failed": self.request_failed,
            "request-response-delayed": self.request_delayed,
        }[type_]
        out = []
        if shorthand:
            timing = self.delayed_after_seconds if type_ == "request-response-delayed" else None
            out.append(ToolMessageSpec(type=type_, content=shorthand, timing_seconds=timing))
        out += [m for m in self.messages if m.type == type_ and m.eligible(arguments)]
        return out

    def has_start_message(self) -> bool:
        return bool(self.request_start) or any(m.type == "request-start" for m in self.messages)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSettings:
    first_message: str | None = None
    first_message_mode: FirstMessageMode = "assistant-speaks-first"
    first_message_interruptible: bool = True
    messages: tuple[ChatMessage, ...] = ()  # the model's starting messages (system prompt...)
    tools: tuple[ToolSpec, ...] = ()
    tool_behaviour: dict[str, ToolBehaviour] = field(default_factory=dict)
    llm: LlmOptions = field(default_factory=LlmOptions)
    # Vapi model.fallbackModels: tried in order, same provider, when a request fails before any reply came.
    llm_fallback_models: tuple[str, ...] = ()
    # Replies in a row that failed on every model before the call ends with the model's pipeline-error.
    llm_failed_replies_to_end: int = 2
    llm_error_message: str = DEFAULT_LLM_ERROR_MESSAGE  # said after a reply failed, the call going on
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
