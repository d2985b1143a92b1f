"""Caller audio goes up to Deepgram uncompressed even when ``permessage-deflate`` was negotiated (the SDK's
client always offers it): RFC 7692 section 6 lets a sender leave a message uncompressed (RSV1 clear), and
deflating 20-100 ms of telephone audio per message cost more CPU than the rest of the stream. What the
server sends compressed is still inflated. What comes down is read as JSON, not through the SDK's models:
Results become transcripts, other messages are logged, an unreadable one is a protocol error."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from gateway.observability.logging import get_logger
from gateway.providers.base import ProviderError, SttOptions, Transcript
from gateway.providers.deepgram import DeepgramStream, DeepgramStt, _SendUncompressed
from tests.fakes._server import serve_app
from tests.fakes.deepgram_server import FakeDeepgram

KEY = "dg-test-key"


def _pair() -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """A client's and a server's view of one negotiated permessage-deflate (context takeover both ways)."""
    return (PerMessageDeflate(False, False, 15, 15), PerMessageDeflate(False, False, 15, 15))


def test_sent_messages_skip_the_compressor_and_the_server_reads_them() -> None:
    client, server = _pair()
    wrapped = _SendUncompressed(client)
    audio = bytes(range(256)) * 3
    for _ in range(3):
        frame = wrapped.encode(Frame(Opcode.BINARY, audio))
        assert frame.rsv1 is False and frame.data == audio
        assert server.decode(frame).data == audio


def test_compressed_messages_from_the_server_are_still_inflated() -> None:
    client, server = _pair()
    wrapped = _SendUncompressed(client)
    for text in (b'{"type": "Results"}', b'{"type": "Metadata"}'):
        compressed = server.encode(Frame(Opcode.TEXT, text))
        assert compressed.rsv1 is True
        assert wrapped.decode(compressed).data == text
    assert wrapped.name == "permessage-deflate"


def test_a_live_stream_sends_uncompressed_and_the_server_gets_the_exact_audio() -> None:
    fake = FakeDeepgram([], api_key=KEY)
    audio = bytes(range(256)) * 10

    async def scenario() -> list[Extension]:
        async with serve_app(fake.app) as base_url:
            stream = await DeepgramStt(KEY, base_url).connect(SttOptions(encoding="mulaw"))
            extensions = list(stream._socket._websocket.extensions)
            writes: list[bytes] = []
            transport = stream._socket._websocket.transport
            real_write = transport.write

            def spy(data: bytes | bytearray | memoryview) -> None:
                writes.append(bytes(data))
                real_write(data)

            transport.write = spy  # type: ignore[method-assign]
            for i in range(0, len(audio), 800):
                await stream.send(audio[i : i + 800])
            async with asyncio.timeout(5):
                while fake.connections[0].audio_bytes < len(audio):
                    await asyncio.sleep(0.01)
            await stream.close()
            # First byte of each frame: FIN | RSV1 | RSV2 | RSV3 | opcode; RSV1 marks a compressed message.
            assert writes and all(w[0] & 0x40 == 0 for w in writes[: len(audio) // 800])
            return extensions

    extensions = asyncio.run(scenario())
    assert [e.name for e in extensions] == ["permessage-deflate"]  # the fake (uvicorn) negotiated it
    assert fake.connections[0].audio_bytes == len(audio)


class _Socket:
    """What DeepgramStream needs of the SDK's socket client to read messages: its websocket."""

    def __init__(self, messages: list[str | bytes]) -> None:
        self._websocket = self
        self.messages = messages

    async def recv(self) -> str | bytes:
        if not self.messages:
            await asyncio.sleep(10)
        return self.messages.pop(0)


def _read(messages: list[str | bytes]) -> tuple[list[Transcript], ProviderError | None, list[MutableMapping[str, Any]]]:
    async def scenario() -> tuple[list[Transcript], ProviderError | None]:
        stream = DeepgramStream(_Socket(messages), contextlib.AsyncExitStack(), language="en",  # type: ignore[arg-type]
                                keepalive_interval=60, send_timeout=1, close_timeout=1, log=get_logger("stt"))
        got: list[Transcript] = []
        try:
            async with asyncio.timeout(0.5):
                async for transcript in stream.results():
                    got.append(transcript)
        except ProviderError as exc:
            return got, exc
        except TimeoutError:
            pass
        return got, None

    with structlog.testing.capture_logs() as logs:
        got, error = asyncio.run(scenario())
    return got, error, logs


RESULT = {"type": "Results", "start": 1.5, "duration": 0.75, "is_final": True, "speech_final": False,
          "channel": {"alternatives": [{"transcript": "check my balance", "confidence": 0.93,
                                        "words": [{"word": "check", "start": 1.6, "end": 1.9}],
                                        "languages": ["en-US"]}]}}


def test_results_messages_become_transcripts_and_others_are_logged() -> None:
    no_words = {**RESULT, "is_final": False, "channel": {"alternatives": [{"transcript": "check", "confidence": 0.5}]}}
    got, error, logs = _read([
        json.dumps(RESULT), b"\x00binary", json.dumps({"type": "SpeechStarted", "timestamp": 1.4}),
        json.dumps(no_words), json.dumps({"type": "Results", "start": 0, "duration": 0, "channel": {"alternatives": []}}),
        json.dumps({"type": "Error", "variant": "x", "description": "went wrong"}),
        json.dumps({"type": "SomethingNew"}), json.dumps([1, 2]),
    ])
    assert error is None
    assert got == [
        Transcript(text="check my balance", is_final=True, speech_final=False, confidence=0.93, start=1.5, end=1.9,
                   language="en-US"),
        Transcript(text="check", is_final=False, speech_final=False, confidence=0.5, start=1.5, end=2.25,
                   language="en"),
    ]
    events = [(e["event"], e.get("message_type") or e.get("description")) for e in logs if e["log_level"] != "debug"]
    assert events == [("stt_vendor_error", "went wrong"), ("stt_unknown_message", "SomethingNew"),
                      ("stt_unknown_message", "list")]


@pytest.mark.parametrize("broken", [
    {k: v for k, v in RESULT.items() if k != "channel"},
    {**RESULT, "start": "soon"},
    {**RESULT, "channel": {"alternatives": [{"confidence": 0.9}]}},
    {**RESULT, "channel": {"alternatives": [{"transcript": "x", "words": [{"word": "x"}]}]}},
], ids=["no-channel", "start-not-a-number", "no-transcript", "word-without-end"])
def test_an_unreadable_results_message_is_a_protocol_error(broken: dict[str, object]) -> None:
    got, error, _ = _read([json.dumps(RESULT), json.dumps(broken)])
    assert len(got) == 1
    assert error is not None and error.kind == "protocol" and "Results" in error.message


def test_a_text_message_that_is_not_json_is_a_protocol_error() -> None:
    _, error, _ = _read(["not json {"])
    assert error is not None and error.kind == "protocol"
