"""A local stand-in for ElevenLabs' text-to-speech HTTP API (``POST /v1/text-to-speech/{voice_id}[/stream]``).

As the real service: the key goes in the ``xi-api-key`` header, ``output_format`` and
``optimize_streaming_latency`` are query parameters, the JSON body carries ``text``, ``model_id``,
``voice_settings``...; the answer is raw audio in the requested format, sent chunked; errors are JSON
``{"detail": {"status": ..., "message": ...}}`` (422 for a body that does not validate).

Audio: ``mode="tone"`` (default) is a 440 Hz sine at -10 dBFS lasting 60 ms per character of text
(200 ms at least), deterministic so a test can tell exactly how much was played; ``mode="espeak"`` is
espeak-ng's voice for the text, resampled to the requested rate, for something a recognizer can hear.

Run alone: ``python -m tests.fakes.elevenlabs_server --port 8082 --key KEY --mode espeak``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soxr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.codecs.g711 import alaw_encode, ulaw_encode

__all__ = ["FakeElevenLabs", "FakeTtsRequest", "tone_pcm"]

TONE_HZ = 440.0
TONE_AMPLITUDE = 0.316 * 32767  # -10 dBFS
SECONDS_PER_CHARACTER = 0.06
MIN_SECONDS = 0.2
# output_format -> (sample rate, codec)
FORMATS: dict[str, tuple[int, Literal["pcm", "ulaw", "alaw"]]] = {
    "pcm_8000": (8000, "pcm"), "pcm_16000": (16000, "pcm"), "pcm_22050": (22050, "pcm"),
    "pcm_24000": (24000, "pcm"), "pcm_44100": (44100, "pcm"), "ulaw_8000": (8000, "ulaw"), "alaw_8000": (8000, "alaw"),
}


def tone_seconds(text: str) -> float:
    return max(MIN_SECONDS, SECONDS_PER_CHARACTER * len(text))


def tone_pcm(text: str, rate: int = 8000) -> bytes:
    """The fake's ``tone`` audio for ``text``: 16-bit little-endian PCM at ``rate``."""
    n = round(tone_seconds(text) * rate)
    t = np.arange(n) / rate
    return bytes(np.round(TONE_AMPLITUDE * np.sin(2 * math.pi * TONE_HZ * t)).astype("<i2").tobytes())


def espeak_pcm(text: str, rate: int = 8000, speed: float = 1.0) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tts.wav"
        subprocess.run(["espeak-ng", "-s", str(round(175 * speed)), "-w", str(path), text],
                       check=True, capture_output=True)
        with wave.open(str(path)) as w:
            source_rate = w.getframerate()
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return bytes(soxr.resample(samples, source_rate, rate).astype("<i2").tobytes())


@dataclass
class FakeTtsRequest:
    """One request as the fake saw it, and how its answer went."""

    voice_id: str
    streaming: bool
    text: str
    model_id: str | None
    output_format: str | None
    optimize_streaming_latency: str | None
    voice_settings: dict[str, Any] | None
    language_code: str | None
    body: dict[str, Any]
    status: int = 200
    bytes_sent: int = 0
    completed: bool = False
    disconnected: bool = False  # the client went away before the end
    aborted: bool = False  # the fake cut the stream on purpose
    chunk_sizes: list[int] = field(default_factory=list)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"status": code, "message": message}}, status_code=status)


class _AudioStream(Response):
    """Chunked audio: ``chunk_bytes`` per body message, ``chunk_interval`` seconds apart."""

    def __init__(self, audio: bytes, record: FakeTtsRequest, *, chunk_bytes: int, chunk_interval: float,
                 abort_after_bytes: int | None, media_type: str) -> None:
        super().__init__(media_type=media_type)
        self.raw_headers = [(b"content-type", media_type.encode())]  # no length: chunked, as the real stream
        self.audio = audio
        self.record = record
        self.chunk_bytes = chunk_bytes
        self.chunk_interval = chunk_interval
        self.abort_after_bytes = abort_after_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with asyncio.TaskGroup() as tg:
            streamer = tg.create_task(self._stream(send))
            watcher = tg.create_task(self._watch(receive))
            await asyncio.wait([streamer, watcher], return_when=asyncio.FIRST_COMPLETED)
            if watcher.done() and not streamer.done():
                streamer.cancel()
            watcher.cancel()

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            for offset in range(0, len(self.audio), self.chunk_bytes):
                if self.abort_after_bytes is not None and self.record.bytes_sent >= self.abort_after_bytes:
                    self.record.aborted = True
                    raise RuntimeError("fake ElevenLabs: stream aborted on purpose")
                chunk = self.audio[offset:offset + self.chunk_bytes]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.record.bytes_sent += len(chunk)
                self.record.chunk_sizes.append(len(chunk))
                await asyncio.sleep(self.chunk_interval)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.record.completed = True
        finally:
            if not self.record.completed and not self.record.aborted:
                self.record.disconnected = True


class FakeElevenLabs:
    """The fake service. ``app`` is the ASGI app; ``requests`` records every synthesis request.

    Fault knobs: ``fail_status`` (answer every request with 401/429/500/...), ``first_byte_delay``
    (seconds before the response starts), ``abort_after_bytes`` (cut the connection mid-stream),
    ``chunk_bytes``/``chunk_interval`` (how the body is sliced and paced; odd sizes are allowed).
    ``fail_next(...)`` injects a fault into the next requests only (the service recovers after them).
    """

    def __init__(self, *, api_key: str = "test-key", mode: Literal["tone", "espeak"] = "tone",
                 fail_status: int | None = None, first_byte_delay: float = 0.0,
                 abort_after_bytes: int | None = None, chunk_bytes: int = 1024, chunk_interval: float = 0.0) -> None:
        self.api_key = api_key
        self.mode = mode
        self.fail_status = fail_status
        self.first_byte_delay = first_byte_delay
        self.abort_after_bytes = abort_after_bytes
        self.chunk_bytes = chunk_bytes
        self.chunk_interval = chunk_interval
        self.requests: list[FakeTtsRequest] = []
        self._next_faults: list[tuple[int | None, int | None]] = []  # (status, abort_after_bytes) per request
        self.app = Starlette(routes=[
            Route("/v1/text-to-speech/{voice_id}/stream", self._stream, methods=["POST"]),
            Route("/v1/text-to-speech/{voice_id}", self._convert, methods=["POST"]),
        ])

    def fail_next(self, status: int | None = 500, *, abort_after_bytes: int | None = None, times: int = 1) -> None:
        """The next ``times`` requests answer ``status`` (an HTTP error), or, with ``status=None``, start the
        audio and cut the connection after ``abort_after_bytes`` (0: before any audio)."""
        self._next_faults += [(status, abort_after_bytes)] * times

    async def _stream(self, request: Request) -> Response:
        return await self._synthesize(request, streaming=True)

    async def _convert(self, request: Request) -> Response:
        return await self._synthesize(request, streaming=False)

    def audio_for(self, text: str, output_format: str, speed: float = 1.0) -> bytes:
        rate, codec = FORMATS[output_format]
        pcm = espeak_pcm(text, rate, speed) if self.mode == "espeak" else tone_pcm(text, rate)
        if codec == "ulaw":
            return ulaw_encode(pcm)
        if codec == "alaw":
            return alaw_encode(pcm)
        return pcm

    async def _synthesize(self, request: Request, *, streaming: bool) -> Response:
        if request.headers.get("xi-api-key") != self.api_key:
            return _error(401, "invalid_api_key", "Invalid API key")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "invalid_json", "Body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return JSONResponse({"detail": [{"loc": ["body", "text"], "msg": "Field required",
                                             "type": "missing"}]}, status_code=422)
        settings = body.get("voice_settings")
        record = FakeTtsRequest(
            voice_id=request.path_params["voice_id"], streaming=streaming, text=body["text"],
            model_id=body.get("model_id"), output_format=request.query_params.get("output_format"),
            optimize_streaming_latency=request.query_params.get("optimize_streaming_latency"),
            voice_settings=settings if isinstance(settings, dict) else None,
            language_code=body.get("language_code"), body=body)
        self.requests.append(record)
        if self.first_byte_delay:
            await asyncio.sleep(self.first_byte_delay)
        fail_status, abort_after_bytes = self.fail_status, self.abort_after_bytes
        if self._next_faults:
            fail_status, abort_after_bytes = self._next_faults.pop(0)
        if fail_status is not None:
            record.status = fail_status
            code = {401: "invalid_api_key", 429: "too_many_concurrent_requests"}.get(fail_status, "error")
            return _error(fail_status, code, f"fake failure {fail_status}")
        output_format = record.output_format or "mp3_44100_128"
        if output_format not in FORMATS:
            record.status = 400
            return _error(400, "invalid_output_format", f"The fake does not produce {output_format}")
        if not record.text.strip():
            record.status = 400
            return _error(400, "empty_text", "Text must not be empty")
        speed = float((record.voice_settings or {}).get("speed") or 1.0)
        audio = self.audio_for(record.text, output_format, speed)
        media_type = "audio/basic" if output_format.startswith(("ulaw", "alaw")) else "audio/pcm"
        if not streaming:
            record.bytes_sent = len(audio)
            record.completed = True
            return Response(audio, media_type=media_type)
        return _AudioStream(audio, record, chunk_bytes=self.chunk_bytes, chunk_interval=self.chunk_interval,
                            abort_after_bytes=abort_after_bytes, media_type=media_type)


def _build(args: argparse.Namespace) -> Starlette:
    return FakeElevenLabs(api_key=args.key, mode=args.mode, first_byte_delay=args.first_byte_delay,
                          chunk_interval=args.chunk_interval).app


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", default="test-key", help="the xi-api-key accepted")
    parser.add_argument("--mode", choices=["tone", "espeak"], default="tone")
    parser.add_argument("--first-byte-delay", type=float, default=0.0)
    parser.add_argument("--chunk-interval", type=float, default=0.0)


if __name__ == "__main__":
    from tests.fakes._server import main

    main(_build, sys.argv[1:], add_arguments=_add_arguments, description="fake ElevenLabs text to speech")
