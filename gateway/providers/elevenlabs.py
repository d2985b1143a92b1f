"""ElevenLabs streaming text to speech (``POST /v1/text-to-speech/{voice_id}/stream``) through the
official ``elevenlabs`` SDK.

Output format: ``pcm_8000`` — raw 16-bit little-endian PCM at the telephone rate, which is what
:class:`~gateway.providers.base.TtsProvider` promises, with no decoding and no resampling here, and no
second companding loss when the call's codec is not μ-law (``ulaw_8000`` would halve the bytes on the
wire, but a few kB/s is not worth an extra lossy step in an A-law call).

HTTP chunks arrive at any size; PCM samples are two bytes, so an odd byte is held back and joined to the
next chunk (every chunk yielded has an even length).

Errors (ElevenLabs answers JSON ``{"detail": {"status", "message"}}``): 401/403 ``auth``, 429
``rate_limit``, 5xx ``server``, other 4xx ``bad_request`` with the vendor's message, no answer within
``timeout`` (or a stall of that long between chunks) ``timeout``, a broken connection ``connection``.
The SDK's own retries are off: whether to retry or fall back is the pipeline's decision, in call time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, Final, cast

import httpx
from elevenlabs import AsyncElevenLabs, VoiceSettings
from elevenlabs.core.api_error import ApiError
from elevenlabs.core.request_options import RequestOptions

from gateway.observability.logging import get_logger
from gateway.providers.base import ProviderError, ProviderErrorKind, TtsOptions
from gateway.providers.deadline import Deadline
from gateway.providers.http_pool import shared_client

__all__ = ["DEFAULT_MODEL", "DEFAULT_VOICE_ID", "OUTPUT_FORMAT", "ElevenLabsTts"]

NAME: Final = "11labs"
# "George", the voice of the SDK's and the API reference's examples (a premade voice every account has).
DEFAULT_VOICE_ID: Final = "JBFqnCBsd6RMkjVDRZzb"
DEFAULT_MODEL: Final = "eleven_flash_v2_5"  # ElevenLabs' low-latency model for conversational use
OUTPUT_FORMAT: Final = "pcm_8000"
# voice_settings fields, by ElevenLabs' name, and the Vapi (camelCase) spelling accepted in TtsOptions.extra.
_VOICE_SETTINGS: Final = {
    "stability": "stability", "similarity_boost": "similarityBoost", "style": "style",
    "use_speaker_boost": "useSpeakerBoost",
}


def _status_kind(status: int) -> ProviderErrorKind:
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limit"
    if status >= 500:
        return "server"
    return "bad_request"


def _detail_message(body: object) -> str:
    """The human part of an ElevenLabs error body (``detail.message``, or FastAPI's validation list)."""
    detail = body.get("detail", body) if isinstance(body, Mapping) else body
    if isinstance(detail, Mapping):
        return str(detail.get("message") or detail.get("status") or dict(detail))
    if isinstance(detail, list):
        return "; ".join(str(item.get("msg", item)) if isinstance(item, Mapping) else str(item) for item in detail)
    return str(detail)


def _extra(extra: Mapping[str, Any], snake: str, camel: str) -> Any:
    return extra[snake] if extra.get(snake) is not None else extra.get(camel)


class ElevenLabsTts:
    """A :class:`~gateway.providers.base.TtsProvider` for ElevenLabs' HTTP streaming endpoint.

    ``TtsOptions``: ``voice_id`` (else ``voice_id`` here), ``model`` (ElevenLabs ``model_id``), ``speed``
    and, in ``extra``, ``stability``/``similarity_boost``/``style``/``use_speaker_boost`` (voice settings)
    and ``optimize_streaming_latency`` (snake_case or Vapi's camelCase), ``language`` (``language_code``).
    ``chunk_size=None`` hands on bytes as the network delivers them, for the least latency.
    """

    name = NAME

    def __init__(self, api_key: str, base_url: str | None = None, timeout: float = 10.0, *,
                 voice_id: str = DEFAULT_VOICE_ID, model: str = DEFAULT_MODEL,
                 optimize_streaming_latency: int | None = None, chunk_size: int | None = None) -> None:
        self.timeout = timeout
        self.voice_id = voice_id
        self.model = model
        self.optimize_streaming_latency = optimize_streaming_latency
        self.chunk_size = chunk_size
        # Every call's speech goes through this one provider and its one connection pool (see http_pool).
        self._http = shared_client(timeout=timeout)
        self._client = AsyncElevenLabs(api_key=api_key, base_url=base_url.rstrip("/") if base_url else None,
                                       timeout=timeout, httpx_client=self._http)
        self._log = get_logger("tts").bind(provider=NAME)

    async def aclose(self) -> None:
        """Release the HTTP connection pool."""
        await self._http.aclose()

    def request_arguments(self, text: str, options: TtsOptions) -> dict[str, Any]:
        """The keyword arguments of ``text_to_speech.stream`` for ``text`` and ``options``."""
        extra = options.extra
        settings: dict[str, Any] = {}
        for snake, camel in _VOICE_SETTINGS.items():
            value = _extra(extra, snake, camel)
            if value is not None:
                settings[snake] = value
        if options.speed is not None:
            settings["speed"] = options.speed
        latency = _extra(extra, "optimize_streaming_latency", "optimizeStreamingLatency")
        if latency is None:
            latency = self.optimize_streaming_latency
        request_options: dict[str, Any] = {"max_retries": 0, "timeout_in_seconds": self.timeout,
                                           "chunk_size": self.chunk_size}
        arguments: dict[str, Any] = {
            "text": text,
            "model_id": options.model or self.model,
            "output_format": OUTPUT_FORMAT,
            "request_options": cast(RequestOptions, request_options),
        }
        if latency is not None:
            arguments["optimize_streaming_latency"] = int(latency)
        if settings:
            arguments["voice_settings"] = VoiceSettings(**settings)
        if options.language:
            arguments["language_code"] = options.language
        return arguments

    async def synthesize(self, text: str, options: TtsOptions) -> AsyncIterator[bytes]:
        voice_id = options.voice_id or self.voice_id
        carry = b""
        loop = asyncio.get_running_loop()
        # Each chunk must come within ``timeout``: one lazily re-armed timer for the request's chunks.
        deadline = Deadline()
        arguments = self.request_arguments(text, options)
        stream = cast(AsyncGenerator[bytes, None], self._client.text_to_speech.stream(voice_id, **arguments))
        # aclosing: cancelling or abandoning this generator closes the HTTP response at once.
        async with contextlib.aclosing(stream):
            while True:
                try:
                    async with deadline.at(loop.time() + self.timeout):
                        chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:  # our deadline (asyncio) or httpx's read/connect timeout
                    raise ProviderError(NAME, "timeout", f"no audio within {self.timeout}s") from exc
                except httpx.TimeoutException as exc:
                    raise ProviderError(NAME, "timeout", f"no audio within {self.timeout}s ({exc!r})") from exc
                except ApiError as exc:
                    status = exc.status_code or 0
                    kind = _status_kind(status)
                    raise ProviderError(NAME, kind, _detail_message(exc.body), status=status) from exc
                except httpx.HTTPError as exc:
                    raise ProviderError(NAME, "connection", f"{type(exc).__name__}: {exc}") from exc
                data = carry + chunk
                whole = len(data) & ~1
                carry = data[whole:]
                if whole:
                    yield data[:whole]
        deadline.close()
        if carry:
            self._log.warning("tts_odd_trailing_byte", voice_id=voice_id)
