"""Which provider serves which stage of a call, from the assistant and the gateway's ``providers:`` config.

Cloud clients hold connection pools, so one client per vendor (and per custom-llm URL) is shared by all
calls: :class:`ProviderPool` lives as long as the server. A cloud provider without an API key is not an
error at load (keys are often added later); the call gets a provider that fails with a clear
``auth`` error, and the session apologises in the local voice and ends the call with Vapi's reason.

The voice chain is the assistant's voice, then its ``fallbackPlan.voices``, then the local espeak-ng
voice, so a caller always hears the apology even when every cloud voice is down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from gateway.assistants import Assistant
from gateway.assistants.providers import (
    CustomLLMModel,
    DeepgramTranscriber,
    ElevenLabsVoice,
    EspeakVoice,
    OpenAIModel,
    RulesModel,
)
from gateway.config import ProviderConfig, ProvidersConfig
from gateway.pipeline.session import Providers, ToolRunner
from gateway.providers.base import (
    AudioEncoding,
    ChatMessage,
    LlmEvent,
    LlmOptions,
    LlmProvider,
    ProviderError,
    SttOptions,
    SttProvider,
    SttStream,
    ToolSpec,
    TtsOptions,
    TtsProvider,
)
from gateway.providers.deepgram import DeepgramStt
from gateway.providers.elevenlabs import ElevenLabsTts
from gateway.providers.espeak import EspeakTts
from gateway.providers.openai_llm import OpenAiLlm, custom_llm
from gateway.providers.pocketsphinx_stt import PocketsphinxStt
from gateway.providers.rules import Rule, RulesResponder

__all__ = ["MissingKey", "ProviderPool"]

T = TypeVar("T")


class MissingKey:
    """Stands in for a cloud provider whose API key is not configured: every use fails with ``auth``."""

    def __init__(self, name: str, setting: str) -> None:
        self.name = name
        self._message = f"no API key configured (set {setting} or its environment variable)"

    def _error(self) -> ProviderError:
        return ProviderError(self.name, "auth", self._message)

    def accepts(self, encoding: AudioEncoding) -> bool:
        return True

    async def connect(self, options: SttOptions) -> SttStream:
        raise self._error()

    async def stream(self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = (),
                     options: LlmOptions) -> AsyncIterator[LlmEvent]:
        raise self._error()
        yield  # pragma: no cover - makes this an async generator

    async def synthesize(self, text: str, options: TtsOptions) -> AsyncIterator[bytes]:
        raise self._error()
        yield b""  # pragma: no cover


def _key(cfg: ProviderConfig) -> str | None:
    return cfg.api_key or None


class ProviderPool:
    """Shared provider clients for every call of the server (see module doc)."""

    def __init__(self, config: ProvidersConfig, *, log: Any = None) -> None:
        self.config = config
        self._log = log
        self._shared: dict[tuple[str, ...], Any] = {}
        self._retired: list[Any] = []
        self._espeak = EspeakTts()
        self._pocketsphinx = PocketsphinxStt()

    def update(self, config: ProvidersConfig) -> None:
        """New keys/URLs (config reload): clients are rebuilt now; calls in progress keep theirs."""
        self.config = config
        self._retired.extend(self._shared.values())  # closed at shutdown, when no call can still use them
        self._shared.clear()
        self.warm()

    def for_assistant(self, assistant: Assistant, *, tools: ToolRunner | None = None) -> Providers:
        return Providers(stt=self.stt(assistant), llm=self.llm(assistant), tts=self.voices(assistant), tools=tools)

    # -- stages ------------------------------------------------------------------------------------

    def stt(self, assistant: Assistant) -> SttProvider:
        t = assistant.transcriber
        if isinstance(t, DeepgramTranscriber):
            cfg = self.config.deepgram
            key = _key(cfg)
            if key is None:
                return MissingKey("deepgram", "providers.deepgram.api_key")
            # Per-assistant settings (endpointing, keyterms) travel in SttOptions.extra: one client serves all.
            return self._deepgram(key, cfg.base_url)
        return self._pocketsphinx

    def llm(self, assistant: Assistant) -> LlmProvider:
        m = assistant.model
        if isinstance(m, RulesModel):
            return RulesResponder(
                [Rule(keywords=tuple(r.keywords), reply=r.reply, end_call=r.end_call) for r in m.rules],
                m.fallback,
                greeting=assistant.first_message or None,
            )
        if isinstance(m, CustomLLMModel):
            return self._get(
                ("custom-llm", m.url, repr(sorted(m.headers.items()))),
                lambda: custom_llm(m.url, None, headers=m.headers, first_token_timeout=m.timeout_seconds),
            )
        assert isinstance(m, OpenAIModel)
        cfg = self.config.openai
        key = _key(cfg)
        if key is None:
            return MissingKey("openai", "providers.openai.api_key")
        return self._openai(key, cfg.base_url)

    def voices(self, assistant: Assistant) -> list[TtsProvider]:
        """The voice chain: the voice, its fallbacks, then the local voice (once)."""
        chain: list[TtsProvider] = []
        voices = [assistant.voice, *(assistant.voice.fallback_plan.voices if assistant.voice.fallback_plan else [])]
        for v in voices:
            if isinstance(v, ElevenLabsVoice):
                cfg = self.config.elevenlabs
                key = _key(cfg)
                if key is None:
                    chain.append(MissingKey("11labs", "providers.elevenlabs.api_key"))
                else:
                    chain.append(self._elevenlabs(key, cfg.base_url))
            elif isinstance(v, EspeakVoice):
                chain.append(self._espeak)
        if not chain or chain[-1] is not self._espeak:
            chain.append(self._espeak)
        return chain

    def warm(self) -> None:
        """Build the vendor clients whose keys are configured now, not during the first call's setup:
        each builds HTTP clients and loads the CA bundle (tens of ms of the event loop, with every call's
        audio waiting behind it)."""
        cfg = self.config
        if (key := _key(cfg.deepgram)) is not None:
            self._deepgram(key, cfg.deepgram.base_url)
        if (key := _key(cfg.openai)) is not None:
            self._openai(key, cfg.openai.base_url)
        if (key := _key(cfg.elevenlabs)) is not None:
            self._elevenlabs(key, cfg.elevenlabs.base_url)

    def _deepgram(self, key: str, base_url: str | None) -> DeepgramStt:
        return self._get(("deepgram", key, base_url or ""), lambda: DeepgramStt(key, base_url))

    def _openai(self, key: str, base_url: str | None) -> OpenAiLlm:
        return self._get(("openai", key, base_url or ""), lambda: OpenAiLlm(key, base_url))

    def _elevenlabs(self, key: str, base_url: str | None) -> ElevenLabsTts:
        return self._get(("11labs", key, base_url or ""), lambda: ElevenLabsTts(key, base_url))

    def _get(self, key: tuple[str, ...], build: Callable[[], T]) -> T:
        client = self._shared.get(key)
        if client is None:
            client = self._shared[key] = build()
        return client  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        for client in [*self._shared.values(), *self._retired]:
            close = getattr(client, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # closing a pool at shutdown must not mask the shutdown
                    pass
        self._shared.clear()
        self._retired.clear()
