"""A local stand-in for Deepgram's live transcription websocket (``wss://api.deepgram.com/v1/listen``).

It speaks the real wire protocol closely enough for the official SDK to parse it: the client connects
with ``Authorization: Token <key>`` and the stream settings as query parameters, sends binary audio and
JSON control messages (``KeepAlive``, ``Finalize``, ``CloseStream``), and receives ``Results`` messages
(interim while speech goes on, then ``is_final``/``speech_final``), optionally ``SpeechStarted``
(``vad_events=true``) and ``UtteranceEnd`` (``utterance_end_ms``), and a ``Metadata`` message before the
server closes after ``CloseStream``.

It does not recognise speech: an energy gate on 20 ms frames finds utterances, and utterance ``i`` of a
connection is transcribed as ``script[i]`` (then ``default_transcript`` once the script runs out).

Run alone: ``python -m tests.fakes.deepgram_server --port 8081 --key KEY --script "hello" "goodbye"``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import struct
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.codecs.g711 import alaw_decode, ulaw_decode

__all__ = ["FakeDeepgram", "FakeDeepgramConnection"]

FRAME_SECONDS = 0.02
MODEL_UUID = "1ed36bac-f71c-4f3f-a31f-02fd6525c489"


@dataclass
class FakeDeepgramConnection:
    """What one websocket client did: its query, its audio, its control messages, what it was sent."""

    query: dict[str, str]
    query_list: list[tuple[str, str]]
    headers: dict[str, str]
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    audio_bytes: int = 0
    audio: bytearray = field(default_factory=bytearray)  # decoded 16-bit PCM
    control: list[dict[str, Any]] = field(default_factory=list)  # JSON messages from the client
    sent: list[dict[str, Any]] = field(default_factory=list)  # JSON messages to the client
    finals: int = 0
    closed: str | None = None  # "close_stream", "client", "dropped", "idle"

    def keyterms(self) -> list[str]:
        return [v for k, v in self.query_list if k in ("keyterm", "keywords")]


class _Utterances:
    """The energy gate: per 20 ms frame of PCM, says when speech starts, goes on and ends."""

    def __init__(self, *, sample_rate: int, threshold: float, silence_seconds: float) -> None:
        self.frame_bytes = int(sample_rate * FRAME_SECONDS) * 2
        self.sample_rate = sample_rate
        self.threshold = threshold
        self.silence_frames_to_end = max(1, round(silence_seconds / FRAME_SECONDS))
        self.pending = b""
        self.frames = 0  # frames seen since the stream opened
        self.in_speech = False
        self.start_frame = 0
        self.last_voiced_frame = 0
        self.silent_run = 0

    @property
    def now(self) -> float:
        return self.frames * FRAME_SECONDS

    def feed(self, pcm: bytes) -> list[str]:
        """Events, one per frame where something happens: ``start``, ``speech``, ``end``."""
        events: list[str] = []
        data = self.pending + pcm
        whole = len(data) - len(data) % self.frame_bytes
        self.pending = data[whole:]
        for offset in range(0, whole, self.frame_bytes):
            frame = data[offset:offset + self.frame_bytes]
            samples = struct.unpack(f"<{len(frame) // 2}h", frame)
            rms = math.sqrt(sum(s * s for s in samples) / len(samples))
            self.frames += 1
            voiced = rms >= self.threshold
            if voiced:
                self.silent_run = 0
                self.last_voiced_frame = self.frames
                if not self.in_speech:
                    self.in_speech = True
                    self.start_frame = self.frames - 1
                    events.append("start")
                else:
                    events.append("speech")
            elif self.in_speech:
                self.silent_run += 1
                if self.silent_run >= self.silence_frames_to_end:
                    self.in_speech = False
                    events.append("end")
        return events


class FakeDeepgram:
    """The fake service. ``app`` is the ASGI app; ``connections`` records every websocket client.

    Knobs: ``api_key`` (the one key accepted), ``reject_key`` (refuse every key with 401),
    ``drop_after_utterances`` (close the socket with 1011 after that many finals, as Deepgram does on an
    internal error), ``idle_timeout`` (close with 1011 ``NET-0001`` when neither audio nor KeepAlive came
    for that long, as the real service does after 10 s), ``interim_seconds`` (speech between interims),
    ``silence_seconds`` (silence that ends an utterance), ``energy_threshold`` (frame RMS of speech).
    ``fail_next("drop_mid_utterance")``: the next utterance heard (on any connection) gets one interim
    result, then the socket is closed with 1011 before its final, as when Deepgram fails mid-stream.
    """

    def __init__(self, script: Sequence[str] = (), *, api_key: str = "test-key", default_transcript: str = "",
                 reject_key: bool = False, drop_after_utterances: int | None = None,
                 idle_timeout: float = 10.0, interim_seconds: float = 0.25, silence_seconds: float = 0.3,
                 energy_threshold: float = 300.0) -> None:
        self.script = list(script)
        self.api_key = api_key
        self.default_transcript = default_transcript
        self.reject_key = reject_key
        self.drop_after_utterances = drop_after_utterances
        self.idle_timeout = idle_timeout
        self.interim_seconds = interim_seconds
        self.silence_seconds = silence_seconds
        self.energy_threshold = energy_threshold
        self.connections: list[FakeDeepgramConnection] = []
        self.pending_faults: list[str] = []
        self.app = Starlette(routes=[WebSocketRoute("/v1/listen", self._listen)])

    def fail_next(self, kind: str = "drop_mid_utterance") -> None:
        if kind != "drop_mid_utterance":
            raise ValueError(f"unknown fault {kind!r}")
        self.pending_faults.append(kind)

    def transcript_for(self, index: int) -> str:
        return self.script[index] if index < len(self.script) else self.default_transcript

    async def _listen(self, websocket: WebSocket) -> None:
        auth = websocket.headers.get("authorization", "")
        if self.reject_key or auth != f"Token {self.api_key}":
            # Deepgram answers the upgrade request itself with 401 when the key is wrong.
            await websocket.send_denial_response(JSONResponse(
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": str(uuid.uuid4())},
                status_code=401))
            return
        query_list = list(websocket.query_params.multi_items())
        conn = FakeDeepgramConnection(query=dict(query_list), query_list=query_list,
                                      headers=dict(websocket.headers))
        self.connections.append(conn)
        await websocket.accept()
        await _Session(self, websocket, conn).run()


class _Session:
    def __init__(self, fake: FakeDeepgram, websocket: WebSocket, conn: FakeDeepgramConnection) -> None:
        self.fake = fake
        self.ws = websocket
        self.conn = conn
        self.encoding = conn.query.get("encoding", "linear16")
        self.sample_rate = int(conn.query.get("sample_rate", "8000"))
        self.gate = _Utterances(sample_rate=self.sample_rate, threshold=fake.energy_threshold,
                                silence_seconds=fake.silence_seconds)
        self.utterance = 0
        self.speaking = False  # an utterance has audio not yet given a final
        self.last_interim = 0.0
        self.final_end = 0.0  # where the last final result ended, seconds of audio

    async def run(self) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(self.fake.idle_timeout):
                        message = await self.ws.receive()
                except TimeoutError:
                    self.conn.closed = "idle"
                    await self.ws.close(code=1011, reason="NET-0001")
                    return
                if message["type"] == "websocket.disconnect":
                    self.conn.closed = "client"
                    return
                if message.get("bytes") is not None:
                    if await self._audio(message["bytes"]):
                        return
                elif message.get("text") is not None and await self._control(message["text"]):
                    return
        except WebSocketDisconnect:
            self.conn.closed = "client"

    def _decode(self, data: bytes) -> bytes:
        if self.encoding == "mulaw":
            return ulaw_decode(data)
        if self.encoding == "alaw":
            return alaw_decode(data)
        return data

    async def _audio(self, data: bytes) -> bool:
        """Returns True when the session is over."""
        self.conn.audio_bytes += len(data)
        pcm = self._decode(data)
        self.conn.audio += pcm
        for event in self.gate.feed(pcm):
            if event == "start":
                self.speaking = True
                self.last_interim = self.gate.now
                if self.conn.query.get("vad_events") == "true":
                    await self._send({"type": "SpeechStarted", "channel": [0], "timestamp": self.gate.now - 0.02})
            elif event == "speech" and self.gate.now - self.last_interim >= self.fake.interim_seconds:
                self.last_interim = self.gate.now
                await self._result(final=False)
                if "drop_mid_utterance" in self.fake.pending_faults:
                    self.fake.pending_faults.remove("drop_mid_utterance")
                    self.conn.closed = "dropped"
                    await self.ws.close(code=1011, reason="fake: dropped mid-utterance")
                    return True
            elif event == "end" and self.speaking and await self._final(from_finalize=False):
                return True
        return False

    async def _control(self, text: str) -> bool:
        try:
            message = json.loads(text)
        except ValueError:
            await self._send({"type": "Error", "variant": "SchemaError", "description": "not JSON", "message": text})
            return False
        self.conn.control.append(message)
        kind = message.get("type")
        if kind == "Finalize":
            return self.speaking and await self._final(from_finalize=True)
        if kind == "CloseStream":
            if self.speaking and await self._final(from_finalize=True):
                return True
            await self._send({
                "type": "Metadata", "transaction_key": "deprecated", "request_id": self.conn.request_id,
                "sha256": "0" * 64, "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "duration": self.gate.now, "channels": 1, "models": [MODEL_UUID],
                "model_info": {MODEL_UUID: {"name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3"}},
            })
            self.conn.closed = "close_stream"
            await self.ws.close(code=1000)
            return True
        return False  # KeepAlive and anything else: nothing to answer

    async def _final(self, *, from_finalize: bool) -> bool:
        """Send the utterance's final result; True if the socket was dropped after it."""
        await self._result(final=True, from_finalize=from_finalize)
        self.speaking = False
        self.gate.in_speech = False  # speech after this starts the next utterance
        self.utterance += 1
        self.conn.finals += 1
        if self.conn.query.get("utterance_end_ms"):
            await self._send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.final_end})
        drop = self.fake.drop_after_utterances
        if drop is not None and self.conn.finals >= drop:
            self.conn.closed = "dropped"
            await self.ws.close(code=1011, reason="fake: dropped after utterances")
            return True
        return False

    async def _result(self, *, final: bool, from_finalize: bool = False) -> None:
        text = self.fake.transcript_for(self.utterance)
        start = self.gate.start_frame * FRAME_SECONDS
        voiced_end = self.gate.last_voiced_frame * FRAME_SECONDS
        if final:
            words = text.split()
        else:
            # Interims reveal the scripted words in proportion to the speech heard so far.
            shown = 1 + int((voiced_end - start) / 0.3)
            words = text.split()[:shown]
        end = voiced_end if final else self.gate.now
        transcript = " ".join(words)
        step = (voiced_end - start) / max(1, len(words))
        word_items = [
            {"word": w.strip(".,?!").lower(), "start": round(start + i * step, 3),
             "end": round(start + (i + 1) * step, 3), "confidence": 0.98, "punctuated_word": w}
            for i, w in enumerate(words)
        ]
        await self._send({
            "type": "Results", "channel_index": [0, 1], "duration": round(end - start, 3), "start": round(start, 3),
            "is_final": final, "speech_final": final, "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": transcript, "confidence": 0.98 if transcript else 0.0,
                                          "words": word_items}]},
            "metadata": {"request_id": self.conn.request_id,
                         "model_info": {"name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3"},
                         "model_uuid": MODEL_UUID},
        })
        if final:
            self.final_end = end

    async def _send(self, message: dict[str, Any]) -> None:
        self.conn.sent.append(message)
        await self.ws.send_text(json.dumps(message))


def _build(args: argparse.Namespace) -> Starlette:
    fake = FakeDeepgram(args.script, api_key=args.key, default_transcript=args.default_transcript,
                        drop_after_utterances=args.drop_after_utterances)
    return fake.app


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", default="test-key", help="the API key accepted")
    parser.add_argument("--script", nargs="*", default=[], help="transcript of utterance 1, 2, ...")
    parser.add_argument("--default-transcript", default="", help="transcript once the script is exhausted")
    parser.add_argument("--drop-after-utterances", type=int, default=None)


if __name__ == "__main__":
    from tests.fakes._server import main

    main(_build, sys.argv[1:], add_arguments=_add_arguments, description="fake Deepgram live transcription")
