"""Deepgram live transcription (``/v1/listen`` websocket) through the official ``deepgram-sdk``.

Wire protocol: Deepgram "Live Audio" API — the stream's settings are query parameters of the websocket
URL, the key goes in ``Authorization: Token <key>``, audio goes up as binary messages and control as JSON
(``KeepAlive``, ``Finalize``, ``CloseStream``); ``Results`` messages come down, interim ones
(``is_final: false``) while the words may still change, then ``is_final`` (with ``speech_final`` when
Deepgram's endpointing decided the utterance is over). Deepgram closes a stream that gets neither audio
nor ``KeepAlive`` for 10 seconds, so a stream with no audio for ``keepalive_interval`` sends ``KeepAlive``.

Telephone audio goes up as it came off the wire: ``mulaw``/``alaw``/``linear16`` at 8000 Hz, mono. It goes
up uncompressed even when the server negotiated ``permessage-deflate`` (the SDK's client always offers it):
RFC 7692 section 6 lets an endpoint send a message uncompressed (RSV1 clear) under a negotiated extension,
and deflating telephone audio saves little while costing more CPU than the rest of the stream.

The SDK's websocket client takes its origin from ``DeepgramClientEnvironment.production``, so a
``base_url`` (the HTTP origin, ``http://host:port``) is honoured by mapping it to ``ws://host:port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.socket_client import AsyncV1SocketClient
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame

from gateway.observability.logging import get_logger
from gateway.providers.base import AudioEncoding, ProviderError, ProviderErrorKind, SttOptions, Transcript
from gateway.providers.deadline import Deadline

__all__ = ["DEFAULT_MODEL", "DeepgramStream", "DeepgramStt"]

NAME: Final = "deepgram"
DEFAULT_MODEL: Final = "nova-3"
_ABORT_GRACE: Final = 0.25  # seconds granted to an abandoned handshake's cleanup
_ENCODINGS: Final[frozenset[str]] = frozenset({"linear16", "mulaw", "alaw"})
# Query parameters an assistant's transcriber settings may set through ``SttOptions.extra``.
_EXTRA_PARAMS: Final[frozenset[str]] = frozenset({
    "endpointing", "utterance_end_ms", "smart_format", "punctuate", "numerals", "profanity_filter",
    "vad_events", "diarize", "filler_words", "redact", "replace", "search", "tag", "mip_opt_out",
})


def _status_kind(status: int) -> ProviderErrorKind:
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limit"
    if status >= 500:
        return "server"
    return "bad_request"


def _ws_origin(base_url: str) -> str:
    origin = base_url.rstrip("/")
    if origin.startswith("https://"):
        return "wss://" + origin.removeprefix("https://")
    if origin.startswith("http://"):
        return "ws://" + origin.removeprefix("http://")
    return origin  # already ws:// or wss://


class DeepgramStt:
    """An :class:`~gateway.providers.base.SttProvider` for Deepgram's live streaming API.

    ``endpointing_ms`` (Deepgram's silence before ``speech_final``; ``False`` turns it off) and
    ``utterance_end_ms`` are sent when given; ``SttOptions.extra`` may override them and set other
    query parameters by Deepgram's names (``endpointing``, ``utterance_end_ms``, ``smart_format``...).
    """

    name = NAME

    def __init__(self, api_key: str, base_url: str | None = None, connect_timeout: float = 5.0, *,
                 model: str = DEFAULT_MODEL, endpointing_ms: int | bool | None = None,
                 utterance_end_ms: int | None = None, smart_format: bool = True, punctuate: bool = True,
                 keepalive_interval: float = 4.0, send_timeout: float = 5.0, close_timeout: float = 5.0) -> None:
        environment = DeepgramClientEnvironment.PRODUCTION
        if base_url:
            ws_origin = _ws_origin(base_url)
            environment = DeepgramClientEnvironment(base=base_url.rstrip("/"), production=ws_origin,
                                                    agent=ws_origin, agent_rest=base_url.rstrip("/"))
        self._client = AsyncDeepgramClient(api_key=api_key, environment=environment)
        _fixed_headers(self._client)
        self.connect_timeout = connect_timeout
        self.model = model
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.smart_format = smart_format
        self.punctuate = punctuate
        self.keepalive_interval = keepalive_interval
        self.send_timeout = send_timeout
        self.close_timeout = close_timeout
        self._log = get_logger("stt").bind(provider=NAME)

    def accepts(self, encoding: AudioEncoding) -> bool:
        return encoding in _ENCODINGS

    def query_params(self, options: SttOptions) -> dict[str, Any]:
        """The ``listen.v1.connect`` arguments (Deepgram's query parameters) for ``options``."""
        model = options.model or self.model
        params: dict[str, Any] = {
            "model": model,
            "language": options.language,
            "encoding": options.encoding,
            "sample_rate": options.sample_rate,
            "channels": 1,
            "interim_results": "true",
            "punctuate": "true" if self.punctuate else "false",
            "smart_format": "true" if self.smart_format else "false",
        }
        if self.endpointing_ms is not None:
            params["endpointing"] = self.endpointing_ms
        if self.utterance_end_ms is not None:
            params["utterance_end_ms"] = self.utterance_end_ms
        if options.keywords:
            # Nova-3 takes "keyterm" prompting; older models take "keywords" boosting.
            key = "keyterm" if model.startswith("nova-3") else "keywords"
            params[key] = list(options.keywords)
        for key, value in options.extra.items():
            if key in _EXTRA_PARAMS and value is not None:
                params[key] = ("true" if value else "false") if isinstance(value, bool) else value
        return params

    async def connect(self, options: SttOptions) -> DeepgramStream:
        if options.encoding not in _ENCODINGS:
            raise ProviderError(NAME, "bad_request", f"unsupported encoding {options.encoding!r}")
        params = self.query_params(options)
        stack = contextlib.AsyncExitStack()
        try:
            # The SDK's (legacy ``websockets``) client, cancelled mid-handshake, then waits up to its own
            # 10 s close timeout for the server to hang up; the outer deadline cuts that wait short.
            async with asyncio.timeout(self.connect_timeout + _ABORT_GRACE):
                async with asyncio.timeout(self.connect_timeout):
                    socket = await stack.enter_async_context(self._client.listen.v1.connect(**params))
        except TimeoutError as exc:
            raise ProviderError(NAME, "timeout", f"no websocket within {self.connect_timeout}s") from exc
        except ApiError as exc:
            status = exc.status_code or 0
            raise ProviderError(NAME, _status_kind(status), str(exc.body), status=status) from exc
        except (OSError, WebSocketException) as exc:
            raise ProviderError(NAME, "connection", f"cannot connect: {exc}") from exc
        self._log.debug("stt_connected", model=params["model"], encoding=options.encoding)
        return DeepgramStream(socket, stack, language=options.language, keepalive_interval=self.keepalive_interval,
                              send_timeout=self.send_timeout, close_timeout=self.close_timeout, log=self._log)


def _fixed_headers(client: AsyncDeepgramClient) -> None:
    """The SDK builds every request's headers anew, reading its own version from the installed package's
    metadata on disk (``importlib.metadata.version``): ~1.6 % of the event loop while calls are being set up.
    They cannot change for one client (the key is the client's), so they are built once."""
    wrapper = getattr(client, "_client_wrapper", None)
    build = getattr(wrapper, "get_headers", None)
    if build is None:
        return  # another SDK layout: its own headers, as they come
    headers: dict[str, str] = build()
    wrapper.get_headers = lambda: dict(headers)  # type: ignore[union-attr]


class _SendUncompressed(Extension):
    """A negotiated extension (``permessage-deflate``) that decodes what the server sends and leaves what we
    send as it is: RFC 7692 section 6, "An endpoint ... MAY send a message uncompressed", i.e. with RSV1 clear.
    The compressor's context is never touched, so the server's decompressor stays in step."""

    def __init__(self, inner: Extension) -> None:
        self.inner = inner
        self.name = inner.name

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return self.inner.decode(frame, max_size=max_size)

    def encode(self, frame: Frame) -> Frame:
        return frame


def _send_uncompressed(socket: object) -> None:
    """Wrap the websocket's negotiated ``permessage-deflate`` so that sent messages skip it (see module doc)."""
    websocket = getattr(socket, "_websocket", None)
    extensions = getattr(websocket, "extensions", None)
    if isinstance(extensions, list):
        extensions[:] = [_SendUncompressed(e) if isinstance(e, PerMessageDeflate) else e for e in extensions]


class DeepgramStream:
    """One open ``/v1/listen`` websocket. ``results()`` is meant to be iterated by one task for the
    stream's life; it also sends ``KeepAlive`` when no audio went up for ``keepalive_interval``."""

    def __init__(self, socket: AsyncV1SocketClient, stack: contextlib.AsyncExitStack, *, language: str,
                 keepalive_interval: float, send_timeout: float, close_timeout: float, log: Any) -> None:
        self._socket = socket
        # Messages are read off the SDK's websocket and decoded as JSON here: the SDK's ``recv`` builds a
        # model of each one through its union-type search, ~2 % of the loop while calls are being set up.
        self._websocket = socket._websocket
        _send_uncompressed(socket)
        self._stack = stack
        self._language = language
        self._keepalive_interval = keepalive_interval
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._log = log
        self._closing = False
        self._released = False
        self._reading = False
        self._reader_done = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._last_sent = self._loop.time()
        # Every 20 ms frame is a send with a deadline: one lazily re-armed timer serves them all.
        self._send_deadline = Deadline()
        self.bytes_sent = 0
        self.keepalives_sent = 0

    async def send(self, audio: bytes) -> None:
        if not audio:
            return  # an empty binary message would tell Deepgram to close the stream
        await self._send("audio", lambda: self._socket.send_media(audio))
        self.bytes_sent += len(audio)

    async def finalize(self) -> None:
        await self._send("Finalize", self._socket.send_finalize)

    async def _send(self, what: str, op: Callable[[], Awaitable[None]]) -> None:
        if self._closing:
            raise ProviderError(NAME, "connection", f"{what} after the stream was closed")
        deadline = self._send_deadline
        # A KeepAlive from the reader may overlap the pump's audio send: that one takes its own scope.
        scope = (asyncio.timeout(self._send_timeout) if deadline.entered()
                 else deadline.at(self._loop.time() + self._send_timeout))
        try:
            async with scope:
                await op()
        except TimeoutError as exc:
            raise ProviderError(NAME, "timeout", f"sending {what} took over {self._send_timeout}s") from exc
        except ConnectionClosed as exc:
            raise ProviderError(NAME, "connection", f"socket closed ({exc.rcvd or 'no close frame'})") from exc
        self._last_sent = self._loop.time()

    async def results(self) -> AsyncIterator[Transcript]:
        self._reading = True
        loop = self._loop
        quiet = Deadline()  # one lazily re-armed timer for every message's wait
        try:
            while True:
                try:
                    async with quiet.at(loop.time() + self._keepalive_interval):
                        data = await self._websocket.recv()
                    message = json.loads(data) if isinstance(data, str) else data
                except TimeoutError:
                    # "KeepAlive": Deepgram closes a stream idle for 10 s (NET-0001).
                    if not self._closing and loop.time() - self._last_sent >= self._keepalive_interval:
                        await self._send("KeepAlive", self._socket.send_keep_alive)
                        self.keepalives_sent += 1
                    continue
                except ConnectionClosed as exc:
                    if self._closing:
                        return  # the close we asked for
                    raise ProviderError(
                        NAME, "connection", f"socket dropped ({exc.rcvd or 'no close frame'})") from exc
                except ValueError as exc:  # a text message that is not JSON
                    raise ProviderError(NAME, "protocol", f"unreadable message: {exc}") from exc
                transcript = self._transcript(message)
                if transcript is not None:
                    yield transcript
        finally:
            quiet.close()
            self._reading = False
            self._reader_done.set()

    def _transcript(self, message: object) -> Transcript | None:
        if isinstance(message, bytes):
            return None  # nothing for the pipeline
        if not isinstance(message, dict):
            self._log.warning("stt_unknown_message", message_type=type(message).__name__)
            return None
        kind = message.get("type")
        if kind == "Results":
            return self._results(message)
        if kind == "Metadata":
            self._log.debug("stt_metadata", request_id=message.get("request_id"), duration=message.get("duration"))
        elif kind == "UtteranceEnd":
            self._log.debug("stt_utterance_end", last_word_end=message.get("last_word_end"))
        elif kind == "SpeechStarted":
            self._log.debug("stt_speech_started", timestamp=message.get("timestamp"))
        elif kind == "Error":
            self._log.warning("stt_vendor_error", variant=message.get("variant"),
                              description=message.get("description"))
        else:
            self._log.warning("stt_unknown_message", message_type=kind)
        return None

    def _results(self, message: dict[str, Any]) -> Transcript | None:
        try:
            alternatives = message["channel"]["alternatives"]
            if not alternatives:
                return None
            best = alternatives[0]
            start = float(message["start"])
            words = best.get("words")
            end = float(words[-1]["end"]) if words else start + float(message["duration"])
            languages = best.get("languages")
            return Transcript(text=str(best["transcript"]), is_final=bool(message.get("is_final")),
                              speech_final=bool(message.get("speech_final")),
                              confidence=float(best.get("confidence") or 0.0), start=start, end=end,
                              language=str(languages[0]) if languages else self._language)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ProviderError(NAME, "protocol", f"unreadable Results message: {exc!r}") from None

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            async with asyncio.timeout(self._close_timeout):
                with contextlib.suppress(ConnectionClosed):
                    # "CloseStream": Deepgram answers what it still has, a Metadata message, then closes.
                    await self._socket.send_close_stream()
                    if self._reading:
                        await self._reader_done.wait()
        except TimeoutError:
            self._log.info("stt_close_timeout", timeout=self._close_timeout)
        finally:
            await self._release()

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._send_deadline.close()
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._stack.aclose()
        except (TimeoutError, OSError, WebSocketException) as exc:
            self._log.info("stt_close_unclean", error=repr(exc))
