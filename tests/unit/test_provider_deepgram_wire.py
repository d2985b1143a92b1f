"""Caller audio goes up to Deepgram uncompressed even when ``permessage-deflate`` was negotiated (the SDK's
client always offers it): RFC 7692 section 6 lets a sender leave a message uncompressed (RSV1 clear), and
deflating 20-100 ms of telephone audio per message cost more CPU than the rest of the stream. What the
server sends compressed is still inflated."""

from __future__ import annotations

import asyncio

from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from gateway.providers.base import SttOptions
from gateway.providers.deepgram import DeepgramStt, _SendUncompressed
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
