"""The assistant's behaviour plans: turn taking, idle messages, hooks, keypad input, webhook server, denoising.

Shapes and defaults follow Vapi's assistant schema (``StartSpeakingPlan``, ``StopSpeakingPlan``,
``TranscriptionEndpointingPlan``, ``CallHookCustomerSpeechTimeout``, ``KeypadInputPlan``, ``Server``,
``BackgroundSpeechDenoisingPlan``, ``ArtifactPlan``) and the older ``messagePlan`` documented on Vapi's
"Idle messages" page.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator

from gateway.assistants.base import VapiModel, check_http_url, check_regex

__all__ = [
    "DEFAULT_ACKNOWLEDGEMENT_PHRASES",
    "DEFAULT_INTERRUPTION_PHRASES",
    "ArtifactPlan",
    "BackgroundSpeechDenoisingPlan",
    "CustomEndpointingRule",
    "CustomerSpeechTimeoutHook",
    "CustomerSpeechTimeoutOptions",
    "EventHook",
    "FourierDenoisingPlan",
    "Hook",
    "HookAction",
    "KeypadInputPlan",
    "MessagePlan",
    "RegexOption",
    "Server",
    "SmartDenoisingPlan",
    "SmartEndpointingPlan",
    "StartSpeakingPlan",
    "StopSpeakingPlan",
    "TranscriptionEndpointingPlan",
    "regex_flags",
]

# StopSpeakingPlan.acknowledgementPhrases / interruptionPhrases: the schema's ``default`` lists.
DEFAULT_ACKNOWLEDGEMENT_PHRASES: tuple[str, ...] = (
    "i understand", "i see", "i got it", "i hear you", "im listening", "im with you", "right", "okay", "ok",
    "sure", "alright", "got it", "understood", "yeah", "yes", "uh-huh", "mm-hmm", "gotcha", "mhmm", "ah",
    "yeah okay", "yeah sure",
)
DEFAULT_INTERRUPTION_PHRASES: tuple[str, ...] = (
    "stop", "shut", "up", "enough", "quiet", "silence", "but", "dont", "not", "no", "hold", "wait", "cut",
    "pause", "nope", "nah", "nevermind", "never", "bad", "actually",
)


class RegexOption(VapiModel):
    type: Literal["ignore-case", "whole-word", "multi-line"]
    enabled: bool = False


def regex_flags(options: list[RegexOption]) -> int:
    flags = 0
    for option in options:
        if option.enabled and option.type == "ignore-case":
            flags |= re.IGNORECASE
        elif option.enabled and option.type == "multi-line":
            flags |= re.MULTILINE
    return flags


# -- turn taking ---------------------------------------------------------------------------------------


class TranscriptionEndpointingPlan(VapiModel):
    """How long to wait after the last transcript before the caller's turn is over (seconds)."""

    on_punctuation_seconds: float = Field(0.1, ge=0, le=3)
    on_no_punctuation_seconds: float = Field(1.5, ge=0, le=3)
    # The schema's text says 0.4, its @default says 0.5: the @default wins.
    on_number_seconds: float = Field(0.5, ge=0, le=3)


class SmartEndpointingPlan(VapiModel):
    """A model-based end-of-turn detector; kept as configuration (no such model runs here)."""

    provider: Literal["vapi", "livekit", "custom-endpointing-model"]
    wait_function: str | None = None
    server: Server | None = None


class CustomEndpointingRule(VapiModel):
    """``type: assistant`` (regex on the assistant's last message), ``customer`` (on the caller's
    transcript) or ``both``: when it matches, wait ``timeoutSeconds`` for the caller's turn to end."""

    type: Literal["assistant", "customer", "both"]
    regex: str | None = None
    regex_options: list[RegexOption] = Field(default_factory=list)
    assistant_regex: str | None = None
    assistant_regex_options: list[RegexOption] = Field(default_factory=list)
    customer_regex: str | None = None
    customer_regex_options: list[RegexOption] = Field(default_factory=list)
    timeout_seconds: float = Field(ge=0, le=15)

    @model_validator(mode="after")
    def _check_regexes(self) -> CustomEndpointingRule:
        if self.type == "both":
            if self.assistant_regex is None or self.customer_regex is None:
                raise ValueError("a rule of type 'both' needs assistantRegex and customerRegex")
            check_regex(self.assistant_regex, regex_flags(self.assistant_regex_options))
            check_regex(self.customer_regex, regex_flags(self.customer_regex_options))
        else:
            if self.regex is None:
                raise ValueError(f"a rule of type {self.type!r} needs regex")
            check_regex(self.regex, regex_flags(self.regex_options))
        return self


class StartSpeakingPlan(VapiModel):
    """When the assistant starts talking after the caller stops."""

    wait_seconds: float = Field(0.4, ge=0, le=5)
    smart_endpointing_enabled: bool | Literal["livekit"] = False  # deprecated by Vapi for the plan below
    smart_endpointing_plan: SmartEndpointingPlan | None = None
    transcription_endpointing_plan: TranscriptionEndpointingPlan = Field(
        default_factory=TranscriptionEndpointingPlan
    )
    custom_endpointing_rules: list[CustomEndpointingRule] = Field(default_factory=list)


class StopSpeakingPlan(VapiModel):
    """When the caller's speech interrupts the assistant (barge-in)."""

    num_words: int = Field(0, ge=0, le=10)
    voice_seconds: float = Field(0.2, ge=0, le=0.5)
    backoff_seconds: float = Field(1.0, ge=0, le=10)
    acknowledgement_phrases: list[str] = Field(default_factory=lambda: list(DEFAULT_ACKNOWLEDGEMENT_PHRASES))
    interruption_phrases: list[str] = Field(default_factory=lambda: list(DEFAULT_INTERRUPTION_PHRASES))


# -- idle messages: the old messagePlan and the current hooks ----------------------------------------


class MessagePlan(VapiModel):
    """Vapi's older idle-message settings (docs "Idle messages"; ranges from its options table)."""

    idle_messages: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list)
    idle_timeout_seconds: float = Field(10.0, ge=5, le=60)
    idle_message_max_spoken_count: int = Field(3, ge=1, le=10)
    idle_message_reset_count_on_user_speech_enabled: bool = False
    silence_timeout_message: str | None = None


class HookAction(VapiModel):
    """One ``do`` entry: ``say`` (``exact`` text, one picked at random from a list, or a ``prompt``
    for the model), ``tool`` or ``message.add`` (kept as data)."""

    type: str
    exact: str | list[str] | None = None
    prompt: str | list[dict[str, Any]] | None = None
    tool: dict[str, Any] | None = None
    message: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check_say(self) -> HookAction:
        if self.type == "say" and self.exact is None and self.prompt is None:
            raise ValueError("a 'say' action needs exact or prompt")
        return self

    @property
    def exact_texts(self) -> list[str]:
        if self.exact is None:
            return []
        return [self.exact] if isinstance(self.exact, str) else list(self.exact)


class CustomerSpeechTimeoutOptions(VapiModel):
    timeout_seconds: float = Field(7.5, ge=1, le=1000)
    trigger_max_count: int = Field(3, ge=1, le=10)
    trigger_reset_mode: Literal["onUserSpeech", "never"] = "never"


class CustomerSpeechTimeoutHook(VapiModel):
    """``on: customer.speech.timeout`` (or ``customer.speech.timeout[property=value]``)."""

    on: str
    do: list[HookAction] = Field(default_factory=list)
    options: CustomerSpeechTimeoutOptions = Field(default_factory=CustomerSpeechTimeoutOptions)
    name: str | None = None


class EventHook(VapiModel):
    """Any other hook (``call.ending``, ``customer.speech.interrupted``, ...): kept as data."""

    on: str
    do: list[HookAction] = Field(default_factory=list)
    options: dict[str, Any] | None = None
    filters: list[dict[str, Any]] | None = None
    name: str | None = None


def _hook_kind(value: Any) -> str:
    on = value.get("on", "") if isinstance(value, dict) else getattr(value, "on", "")
    return "speech_timeout_hook" if isinstance(on, str) and on.startswith("customer.speech.timeout") else "event_hook"


Hook = Annotated[
    Annotated[CustomerSpeechTimeoutHook, Tag("speech_timeout_hook")] | Annotated[EventHook, Tag("event_hook")],
    Discriminator(_hook_kind),
]


# -- keypad, webhook server, denoising, artifacts ----------------------------------------------------------


def _delimiters(value: Any) -> Any:
    """``delimiters`` is documented as ``'#'``, ``'*'`` or an empty value; a list is accepted too."""
    if isinstance(value, str):
        return [value] if value else []
    return value


class KeypadInputPlan(VapiModel):
    enabled: bool = False
    timeout_seconds: float = Field(2.0, ge=0, le=10)
    delimiters: Annotated[list[Literal["#", "*"]], BeforeValidator(_delimiters)] = Field(default_factory=list)


class Server(VapiModel):
    """Where webhooks (server messages, tool calls) go."""

    url: str | None = None
    secret: str | None = Field(None, description="sent as X-Vapi-Secret")
    timeout_seconds: float = Field(20.0, ge=1, le=300)
    headers: dict[str, str] = Field(default_factory=dict)
    credential_id: str | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        return None if v is None else check_http_url(v)


class SmartDenoisingPlan(VapiModel):
    enabled: bool = True


class FourierDenoisingPlan(VapiModel):
    enabled: bool = False
    media_detection_enabled: bool = True
    static_threshold: float = Field(-35, ge=-80, le=0)
    baseline_offset_db: float = Field(-15, ge=-30, le=-5)
    window_size_ms: int = Field(3000, ge=1000, le=30000)
    baseline_percentile: float = Field(85, ge=1, le=99)


class BackgroundSpeechDenoisingPlan(VapiModel):
    smart_denoising_plan: SmartDenoisingPlan | None = None
    fourier_denoising_plan: FourierDenoisingPlan | None = None

    @property
    def enabled(self) -> bool:
        smart = self.smart_denoising_plan is not None and self.smart_denoising_plan.enabled
        fourier = self.fourier_denoising_plan is not None and self.fourier_denoising_plan.enabled
        return smart or fourier


class ArtifactPlan(VapiModel):
    """What is kept after a call. Fields not listed here are kept as data (and reported as unused)."""

    recording_enabled: bool = True
    recording_format: Literal["wav;l16", "mp3"] = "wav;l16"
    recording_path: str | None = None
    pcap_enabled: bool = True
    logging_enabled: bool = True
    transcript_plan: dict[str, Any] | None = None


# SmartEndpointingPlan refers to Server, defined after it.
SmartEndpointingPlan.model_rebuild()
