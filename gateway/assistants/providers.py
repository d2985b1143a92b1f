"""The assistant's ``transcriber``, ``model`` and ``voice``: the providers this gateway can run.

Supported: transcriber ``deepgram`` and ``pocketsphinx`` (local, our extension); model ``openai``,
``custom-llm`` and ``rules`` (a local keyword responder, our extension); voice ``11labs`` (``elevenlabs`` is
accepted as an alias) and ``espeak`` (local, our extension). Any other Vapi provider is rejected with a
message naming the field and the supported values. Shapes and defaults follow Vapi's ``DeepgramTranscriber``,
``OpenAIModel``, ``CustomLLMModel``, ``ElevenLabsVoice``, ``ChunkPlan`` and ``FormatPlan`` (docs: "Voice
formatting plan").
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gateway.assistants.base import VapiModel, check_http_url, check_regex, tag_checker
from gateway.assistants.plans import RegexOption, regex_flags
from gateway.assistants.tools import Tool

__all__ = [
    "DEFAULT_RULES_FALLBACK",
    "MODEL_PROVIDERS",
    "TRANSCRIBER_PROVIDERS",
    "VOICE_PROVIDERS",
    "ChunkPlan",
    "CustomLLMModel",
    "DeepgramTranscriber",
    "ElevenLabsVoice",
    "EspeakVoice",
    "ExactReplacement",
    "FormatPlan",
    "LanguageModel",
    "ModelMessage",
    "OpenAIModel",
    "PocketsphinxTranscriber",
    "RegexReplacement",
    "Replacement",
    "Rule",
    "RulesModel",
    "Transcriber",
    "TranscriberFallbackPlan",
    "Voice",
    "VoiceFallbackPlan",
]

TRANSCRIBER_PROVIDERS = ("deepgram", "pocketsphinx")
MODEL_PROVIDERS = ("openai", "custom-llm", "rules")
VOICE_PROVIDERS = ("11labs", "espeak")
VOICE_ALIASES: Mapping[str, str] = MappingProxyType({"elevenlabs": "11labs"})
DEFAULT_RULES_FALLBACK = "Sorry, I did not catch that."

# Vapi ChunkPlan.punctuationBoundaries; the ideographic full stop and comma, Arabic comma, Urdu full stop
# and Devanagari danda / double danda are written as escapes.
PunctuationBoundary = Literal[
    "\u3002", "\uff0c", ".", "!", "?", ";", ")", "\u060c", "\u06d4", "\u0964", "\u0965", "|", "||", ",", ":"
]
Formatter = Literal[
    "markdown", "asterisk", "quote", "dash", "newline", "colon", "acronym", "dollarAmount", "email", "date",
    "time", "distance", "unit", "percentage", "phoneNumber", "number", "stripAsterisk",
]


# -- transcriber -----------------------------------------------------------------------------------------


class DeepgramTranscriber(VapiModel):
    provider: Literal["deepgram"]
    model: str | None = None  # Deepgram's own default when unset
    language: str = "en"
    smart_format: bool = False
    numerals: bool = False
    profanity_filter: bool = False
    redaction: list[Literal["pci", "pii", "phi", "numbers"]] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    keyterm: list[str] = Field(default_factory=list)
    endpointing: int = Field(10, ge=10, le=500, description="milliseconds of silence before a final result")
    confidence_threshold: float = Field(0.4, ge=0, le=1)
    mip_opt_out: bool = False
    fallback_plan: TranscriberFallbackPlan | None = None


class PocketsphinxTranscriber(VapiModel):
    """Local recognizer (the model ships inside the pocketsphinx wheel). ``keywords``: phrases expected from
    the caller, used as a grammar so a small offline recognizer stays accurate."""

    provider: Literal["pocketsphinx"] = "pocketsphinx"
    language: str = "en"
    model: str | None = None
    keywords: list[str] = Field(default_factory=list)
    fallback_plan: TranscriberFallbackPlan | None = None


Transcriber = Annotated[
    DeepgramTranscriber | PocketsphinxTranscriber,
    Field(discriminator="provider"),
    BeforeValidator(tag_checker("provider", TRANSCRIBER_PROVIDERS)),
]


class TranscriberFallbackPlan(VapiModel):
    transcribers: list[Transcriber] = Field(default_factory=list)


# -- model -----------------------------------------------------------------------------------------------------


class ModelMessage(VapiModel):
    """``model.messages[]``: the system prompt and any seeded conversation (OpenAI chat shape)."""

    role: Literal["assistant", "function", "user", "system", "tool"]
    content: str


class _LanguageModelBase(VapiModel):
    messages: list[ModelMessage] = Field(default_factory=list)
    tools: list[Tool] = Field(default_factory=list)
    temperature: float = Field(0.5, ge=0, le=2)
    max_tokens: int = Field(250, ge=50, le=10000)

    @property
    def system_prompt(self) -> str | None:
        """The ``system`` messages' text joined by blank lines, or None when there is none."""
        parts = [m.content for m in self.messages if m.role == "system"]
        return "\n\n".join(parts) if parts else None


class OpenAIModel(_LanguageModelBase):
    provider: Literal["openai"]
    model: str
    fallback_models: list[str] = Field(default_factory=list)


class CustomLLMModel(_LanguageModelBase):
    """An OpenAI-compatible chat completions server of the user's: ``url`` is the client's base URL."""

    provider: Literal["custom-llm"]
    url: str
    model: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(20.0, gt=0, le=300)
    metadata_send_mode: Literal["off", "variable", "destructured"] = "variable"

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return check_http_url(v)


class Rule(VapiModel):
    """Say ``reply`` when the caller's words contain one of ``keywords`` (case-insensitive, whole words)."""

    keywords: list[str] = Field(min_length=1)
    reply: str
    end_call: bool = False

    @field_validator("keywords")
    @classmethod
    def _check_keywords(cls, v: list[str]) -> list[str]:
        if any(not k.strip() for k in v):
            raise ValueError("keywords must not be empty strings")
        return v


class RulesModel(_LanguageModelBase):
    """The local responder: the first rule whose keyword the caller said gives the reply, else ``fallback``."""

    provider: Literal["rules"] = "rules"
    model: str | None = None
    rules: list[Rule] = Field(default_factory=list)
    fallback: str = DEFAULT_RULES_FALLBACK


LanguageModel = Annotated[
    OpenAIModel | CustomLLMModel | RulesModel,
    Field(discriminator="provider"),
    BeforeValidator(tag_checker("provider", MODEL_PROVIDERS)),
]


# -- voice ------------------------------------------------------------------------------------------------------


class ExactReplacement(VapiModel):
    type: Literal["exact"]
    key: str
    value: str
    replace_all_enabled: bool = False  # Vapi: "By default, it only replaces the first instance"


class RegexReplacement(VapiModel):
    type: Literal["regex"]
    regex: str
    value: str
    options: list[RegexOption] = Field(default_factory=list)

    @model_validator(mode="after")
    def _compile(self) -> RegexReplacement:
        check_regex(self.regex, regex_flags(self.options))
        return self


Replacement = Annotated[
    ExactReplacement | RegexReplacement,
    Field(discriminator="type"),
    BeforeValidator(tag_checker("type", ("exact", "regex"))),
]


class FormatPlan(VapiModel):
    """Voice input formatting of the model's text before TTS (docs: "Voice formatting plan")."""

    enabled: bool = True
    number_to_digits_cutoff: int = Field(2025, ge=0)
    replacements: list[Replacement] = Field(default_factory=list)
    formatters_enabled: list[Formatter] | None = None  # None: every default formatter


class ChunkPlan(VapiModel):
    """How the model's streamed text is cut into pieces for TTS."""

    enabled: bool = True
    min_characters: int = Field(30, ge=1, le=80)
    punctuation_boundaries: list[PunctuationBoundary] | None = None  # None: the provider's balanced default
    format_plan: FormatPlan = Field(default_factory=FormatPlan)


class _VoiceBase(VapiModel):
    chunk_plan: ChunkPlan = Field(default_factory=ChunkPlan)
    language: str | None = None
    fallback_plan: VoiceFallbackPlan | None = None


class ElevenLabsVoice(_VoiceBase):
    provider: Literal["11labs"]
    voice_id: str
    model: Literal[
        "eleven_multilingual_v2", "eleven_turbo_v2", "eleven_turbo_v2_5", "eleven_flash_v2", "eleven_flash_v2_5",
        "eleven_monolingual_v1", "eleven_v3",
    ] = "eleven_turbo_v2"
    speed: float | None = Field(None, ge=0.7, le=1.2)
    stability: float | None = Field(None, ge=0, le=1)
    similarity_boost: float | None = Field(None, ge=0, le=1)
    style: float | None = Field(None, ge=0, le=1)
    use_speaker_boost: bool | None = None
    optimize_streaming_latency: int = Field(3, ge=0, le=4)
    enable_ssml_parsing: bool = False
    auto_mode: bool = False
    caching_enabled: bool = True
    pronunciation_dictionary_locators: list[dict[str, Any]] = Field(default_factory=list)


class EspeakVoice(_VoiceBase):
    """Local speech (espeak-ng). ``voiceId`` is an espeak-ng voice name (e.g. ``en-us``); unset uses
    the engine's voice for ``language`` (or its default). ``speed`` scales the normal speaking rate."""

    provider: Literal["espeak"] = "espeak"
    voice_id: str | None = None
    speed: float = Field(1.0, gt=0, le=4)


Voice = Annotated[
    ElevenLabsVoice | EspeakVoice,
    Field(discriminator="provider"),
    BeforeValidator(tag_checker("provider", VOICE_PROVIDERS, aliases=VOICE_ALIASES)),
]


class VoiceFallbackPlan(VapiModel):
    voices: list[Voice] = Field(min_length=1)


# The fallback plans refer to the unions defined after the classes that hold them.
DeepgramTranscriber.model_rebuild()
PocketsphinxTranscriber.model_rebuild()
ElevenLabsVoice.model_rebuild()
EspeakVoice.model_rebuild()
