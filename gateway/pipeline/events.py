"""What a conversation tells its call: transcripts, speech state, interruptions, timings, and the end.

The call (and, through it, the webhooks and the API) consumes these; the pipeline never reaches into the
call. Times are the loop's monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.providers.base import ChatMessage

__all__ = [
    "ConversationUpdate",
    "EndCall",
    "ProviderFailure",
    "SessionEvent",
    "SpeechUpdate",
    "TranscriptEvent",
    "TurnTiming",
    "UserInterrupted",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptEvent:
    """Vapi ``transcript``: ``role`` user (from STT) or assistant (what was spoken)."""

    role: Literal["user", "assistant"]
    text: str
    final: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechUpdate:
    """Vapi ``speech-update``."""

    role: Literal["user", "assistant"]
    status: Literal["started", "stopped"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UserInterrupted:
    """Vapi ``user-interrupted``: the caller barged in; ``heard`` is what they heard of the cut message."""

    reason: str
    heard: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationUpdate:
    """Vapi ``conversation-update``: the history after a change."""

    messages: tuple[ChatMessage, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnTiming:
    """One turn's timeline (loop clock, seconds; None when a stage did not happen).

    ``speech_ended_at``: the caller's last voiced audio; ``endpointed_at``: the end-of-turn rule fired;
    ``stt_final_at``; ``llm_request_at``/``llm_first_token_at``; ``tts_request_at``/``tts_first_byte_at``
    (first chunk); ``first_voiced_out_at``: send time of our first voiced RTP packet of the reply.
    """

    turn: int
    rule: str
    speech_ended_at: float | None
    endpointed_at: float
    stt_final_at: float | None
    llm_request_at: float | None
    llm_first_token_at: float | None
    tts_request_at: float | None
    tts_first_byte_at: float | None
    first_voiced_out_at: float | None
    speak_not_before: float | None = None  # startSpeakingPlan.waitSeconds / barge-in backoff

    @property
    def gateway_added(self) -> float | None:
        """End-of-turn decision to our first voiced packet, less what the gateway waited for: the LLM
        until its first speakable chunk (request to the first TTS request: the chunker waits for a
        sentence boundary in the model's tokens), the TTS until its first byte, and the hold the
        assistant asks for (``waitSeconds``, barge-in backoff). What remains is the gateway's own work
        and the 20 ms playout grid."""
        if self.first_voiced_out_at is None:
            return None
        total = self.first_voiced_out_at - self.endpointed_at
        if self.llm_request_at is not None and self.tts_request_at is not None:
            total -= self.tts_request_at - self.llm_request_at
        elif self.llm_request_at is not None and self.llm_first_token_at is not None:
            total -= self.llm_first_token_at - self.llm_request_at
        if self.tts_request_at is not None and self.tts_first_byte_at is not None:
            total -= self.tts_first_byte_at - self.tts_request_at
            if self.speak_not_before is not None:
                total -= max(0.0, self.speak_not_before - self.tts_first_byte_at)
        return total

    @property
    def voice_to_voice(self) -> float | None:
        if self.first_voiced_out_at is None or self.speech_ended_at is None:
            return None
        return self.first_voiced_out_at - self.speech_ended_at

    def log_fields(self) -> dict[str, float | int | str | None]:
        def ms(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round(1000 * (b - a), 1)

        added = self.gateway_added
        v2v = self.voice_to_voice
        return {
            "turn": self.turn,
            "rule": self.rule,
            "endpointing_ms": ms(self.speech_ended_at, self.endpointed_at),
            "stt_final_ms": ms(self.speech_ended_at, self.stt_final_at),
            "llm_first_token_ms": ms(self.llm_request_at, self.llm_first_token_at),
            "tts_first_byte_ms": ms(self.tts_request_at, self.tts_first_byte_at),
            "endpoint_to_voice_ms": ms(self.endpointed_at, self.first_voiced_out_at),
            "gateway_added_ms": None if added is None else round(1000 * added, 1),
            "voice_to_voice_ms": None if v2v is None else round(1000 * v2v, 1),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderFailure:
    provider: str
    stage: Literal["stt", "llm", "tts"]
    kind: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EndCall:
    """The conversation is over: hang up with Vapi's ``endedReason``."""

    reason: str


SessionEvent = (
    TranscriptEvent | SpeechUpdate | UserInterrupted | ConversationUpdate | TurnTiming | ProviderFailure | EndCall
)
