"""The contracts between a call's pipeline and the speech/language vendors: STT, LLM and TTS.

Every provider sits behind one small Protocol here, so the pipeline never imports a vendor SDK and a
test can swap any stage. Audio crossing these contracts is telephone audio: mono, 8 kHz, either
16-bit little-endian linear PCM (``linear16``) or the call's G.711 bytes as they came off the wire
(``mulaw`` / ``alaw``, so an STT that accepts them needs no transcoding).

Errors: a provider raises :class:`ProviderError` naming itself and what went wrong (``kind``), never a
vendor SDK's exception type; every network wait has a deadline and a deadline miss is ``kind="timeout"``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "AudioEncoding",
    "ChatMessage",
    "LlmDone",
    "LlmEvent",
    "LlmOptions",
    "LlmProvider",
    "ProviderError",
    "ProviderErrorKind",
    "SttOptions",
    "SttProvider",
    "SttStream",
    "TextDelta",
    "ToolCall",
    "ToolCallsDone",
    "ToolSpec",
    "Transcript",
    "TtsOptions",
    "TtsProvider",
]

AudioEncoding = Literal["linear16", "mulaw", "alaw"]
SAMPLE_RATE = 8000

ProviderErrorKind = Literal[
    "auth",  # the vendor refused the key (401/403)
    "timeout",  # a deadline passed
    "connection",  # could not connect, or the socket dropped
    "protocol",  # the vendor answered something we cannot read
    "rate_limit",  # 429
    "server",  # 5xx
    "bad_request",  # 4xx other than the above: our request or the assistant's settings are wrong
    "unavailable",  # a local engine is missing (e.g. espeak-ng not installed)
]


class ProviderError(Exception):
    """A provider failed. ``provider`` is its config name (``deepgram``, ``openai``, ``11labs``...)."""

    def __init__(self, provider: str, kind: ProviderErrorKind, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{provider}: {kind}: {message}")
        self.provider = provider
        self.kind = kind
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.kind in ("timeout", "connection", "rate_limit", "server")


# -- speech to text ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SttOptions:
    """What the stream is asked for. ``keywords`` are phrases the caller is expected to say (a grammar
    for a constrained local recognizer, keyword boosting for a cloud one)."""

    encoding: AudioEncoding = "linear16"
    sample_rate: int = SAMPLE_RATE
    language: str = "en"
    model: str | None = None
    keywords: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcript:
    """A transcription result. ``is_final``: this text for this span of audio will not change.
    ``speech_final``: the recognizer's own end-of-utterance verdict. ``start``/``end`` are seconds of
    audio since the stream opened (``end`` is where the last word ended)."""

    text: str
    is_final: bool
    speech_final: bool = False
    confidence: float = 1.0
    start: float = 0.0
    end: float = 0.0
    language: str | None = None


class SttStream(Protocol):
    """One open recognition stream (one per call)."""

    async def send(self, audio: bytes) -> None:
        """Audio in the encoding the stream was opened with, in arrival order (20 ms frames typically)."""

    def results(self) -> AsyncIterator[Transcript]:
        """Transcripts as they arrive; ends when the stream is closed. A dropped connection raises
        :class:`ProviderError` (``kind="connection"``) from the iterator."""

    async def finalize(self) -> None:
        """The caller stopped speaking: produce the final transcript for the audio sent so far."""

    async def close(self) -> None:
        """Close the stream (idempotent); ``results()`` then ends."""


class SttProvider(Protocol):
    name: str

    def accepts(self, encoding: AudioEncoding) -> bool:
        """Whether the provider takes this encoding directly (else it is sent ``linear16``)."""

    async def connect(self, options: SttOptions) -> SttStream:
        """Open a stream (within the provider's connect deadline) or raise :class:`ProviderError`."""


# -- language model -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text as the model produced it


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage:
    """One message of the conversation in OpenAI's chat shape (role system/user/assistant/tool)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """A function the model may call (OpenAI ``tools[].function``)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmOptions:
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    """The next piece of the assistant's reply text."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallsDone:
    """The model asks for these tool calls (emitted once, when their arguments are complete)."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmDone:
    """The stream ended normally (``finish_reason`` as the vendor gave it). ``end_call`` is set by a
    local responder whose rule ends the call after this reply."""

    finish_reason: str = "stop"
    end_call: bool = False


LlmEvent = TextDelta | ToolCallsDone | LlmDone


class LlmProvider(Protocol):
    name: str

    def stream(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = (), options: LlmOptions
    ) -> AsyncIterator[LlmEvent]:
        """Stream one reply: text deltas, then at most one ``ToolCallsDone``, then ``LlmDone``.
        Raises :class:`ProviderError`; cancelling the iteration aborts the request."""


# -- text to speech -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TtsOptions:
    voice_id: str | None = None
    model: str | None = None
    language: str | None = None
    speed: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TtsProvider(Protocol):
    name: str

    def synthesize(self, text: str, options: TtsOptions) -> AsyncIterator[bytes]:
        """Speech for ``text`` as 8 kHz mono 16-bit little-endian PCM, streamed in chunks of any size
        (an even number of bytes each). Raises :class:`ProviderError`; cancelling aborts the request."""
