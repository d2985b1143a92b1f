"""ElevenLabs streaming TTS (gateway/providers/elevenlabs.py) through the official SDK against a local server
that speaks ElevenLabs' text-to-speech HTTP API (tests/fakes/elevenlabs_server.py)."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import numpy as np
import pytest

from gateway.providers.base import ProviderError, TtsOptions
from gateway.providers.elevenlabs import DEFAULT_MODEL, DEFAULT_VOICE_ID, ElevenLabsTts
from tests.fakes._server import serve_app
from tests.fakes.elevenlabs_server import FakeElevenLabs, tone_pcm, tone_seconds
from tests.helpers.raw_http import read_request

KEY = "xi-test-key"
TEXT = "Your appointment is on Tuesday at ten."
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def wrapped() -> T:
        async with asyncio.timeout(30):
            return await scenario()
    return asyncio.run(wrapped())


async def eventually(check: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def synthesize_all(fake: FakeElevenLabs, text: str = TEXT, options: TtsOptions | None = None,
                         **provider: object) -> list[bytes]:
    async with serve_app(fake.app) as base_url:
        tts = ElevenLabsTts(KEY, base_url, **provider)  # type: ignore[arg-type]
        try:
            return [chunk async for chunk in tts.synthesize(text, options or TtsOptions())]
        finally:
            await tts.aclose()


@pytest.mark.parametrize(("server_chunk", "client_chunk"), [(1024, None), (333, None), (1000, 333), (101, 7)])
def test_pcm_is_the_whole_tone_in_even_chunks(server_chunk: int, client_chunk: int | None) -> None:
    fake = FakeElevenLabs(api_key=KEY, chunk_bytes=server_chunk)
    chunks = run(lambda: synthesize_all(fake, chunk_size=client_chunk))
    assert all(len(c) % 2 == 0 and c for c in chunks)
    pcm = b"".join(chunks)
    assert len(pcm) == round(tone_seconds(TEXT) * 8000) * 2  # 60 ms per character, 8 kHz 16-bit
    assert pcm == tone_pcm(TEXT)  # nothing lost, duplicated or shifted by a byte
    samples = np.frombuffer(pcm, dtype="<i2")
    assert 8000 < np.abs(samples).max() < 12000  # the fake's -10 dBFS tone, as little-endian samples


def test_request_carries_voice_model_format_and_settings() -> None:
    fake = FakeElevenLabs(api_key=KEY)

    async def scenario() -> None:
        await synthesize_all(fake, "Hi.")
        await synthesize_all(fake, "Hola.", TtsOptions(
            voice_id="voice-123", model="eleven_turbo_v2_5", language="es", speed=1.2,
            extra={"stability": 0.3, "similarityBoost": 0.8, "optimizeStreamingLatency": 3}))

    run(scenario)
    default, custom = fake.requests
    assert (default.voice_id, default.model_id, default.output_format) == (DEFAULT_VOICE_ID, DEFAULT_MODEL, "pcm_8000")
    assert default.streaming and default.voice_settings is None and default.optimize_streaming_latency is None
    assert (custom.voice_id, custom.model_id, custom.language_code) == ("voice-123", "eleven_turbo_v2_5", "es")
    assert custom.voice_settings == {"stability": 0.3, "similarity_boost": 0.8, "speed": 1.2}
    assert custom.optimize_streaming_latency == "3"
    assert custom.text == "Hola."


@pytest.mark.parametrize(("status", "kind"), [(401, "auth"), (429, "rate_limit"), (500, "server"),
                                              (503, "server"), (404, "bad_request")])
def test_vendor_errors_are_mapped(status: int, kind: str) -> None:
    fake = FakeElevenLabs(api_key=KEY, fail_status=status)

    async def scenario() -> ProviderError:
        with pytest.raises(ProviderError) as caught:
            await synthesize_all(fake)
        return caught.value

    error = run(scenario)
    assert (error.provider, error.kind, error.status) == ("11labs", kind, status)
    assert error.message == f"fake failure {status}"  # the body's detail message
    assert error.retryable == (kind in ("rate_limit", "server"))
    assert len(fake.requests) == 1  # the SDK did not retry behind the pipeline's back


def test_wrong_key_and_bad_requests_carry_the_vendor_message() -> None:
    async def scenario() -> tuple[ProviderError, ProviderError]:
        with pytest.raises(ProviderError) as wrong_key:
            await synthesize_all(FakeElevenLabs(api_key="another-key"))
        with pytest.raises(ProviderError) as empty:
            await synthesize_all(FakeElevenLabs(api_key=KEY), "   ")
        return wrong_key.value, empty.value

    wrong_key, empty = run(scenario)
    assert (wrong_key.kind, wrong_key.message) == ("auth", "Invalid API key")
    assert (empty.kind, empty.status, empty.message) == ("bad_request", 400, "Text must not be empty")


def test_no_answer_within_the_deadline_is_a_timeout() -> None:
    fake = FakeElevenLabs(api_key=KEY, first_byte_delay=3.0)

    async def scenario() -> ProviderError:
        with pytest.raises(ProviderError) as caught:
            await synthesize_all(fake, timeout=0.2)
        return caught.value

    error = run(scenario)
    assert error.kind == "timeout" and error.retryable


def test_a_stream_cut_mid_way_is_a_connection_error_after_the_audio_so_far() -> None:
    fake = FakeElevenLabs(api_key=KEY, chunk_bytes=1000, abort_after_bytes=3000)
    got: list[bytes] = []

    async def scenario() -> ProviderError:
        async with serve_app(fake.app) as base_url:
            tts = ElevenLabsTts(KEY, base_url)
            with pytest.raises(ProviderError) as caught:
                async for chunk in tts.synthesize(TEXT, TtsOptions()):
                    got.append(chunk)
            await tts.aclose()
        return caught.value

    error = run(scenario)
    assert error.kind == "connection"
    assert fake.requests[0].aborted
    assert b"".join(got) == tone_pcm(TEXT)[:len(b"".join(got))] and len(b"".join(got)) <= 3000


@pytest.mark.parametrize("how", ["cancel", "break"])
def test_cancelling_mid_stream_closes_the_request(how: str) -> None:
    fake = FakeElevenLabs(api_key=KEY, chunk_bytes=320, chunk_interval=0.01)
    text = TEXT * 5  # about 11 s of audio, paced out over a few seconds

    async def scenario() -> None:
        async with serve_app(fake.app) as base_url:
            tts = ElevenLabsTts(KEY, base_url)
            first = asyncio.Event()

            async def play() -> None:
                async for _chunk in tts.synthesize(text, TtsOptions()):
                    first.set()
                    if how == "break":
                        break

            task = asyncio.ensure_future(play())
            await first.wait()
            if how == "cancel":
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                await task
            await eventually(lambda: fake.requests[0].disconnected, "the server saw the client go")
            await tts.aclose()

    run(scenario)
    request = fake.requests[0]
    assert not request.completed
    assert request.bytes_sent < len(tone_pcm(text))


def test_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    async def scenario() -> ProviderError:
        tts = ElevenLabsTts(KEY, f"http://127.0.0.1:{port}")
        with pytest.raises(ProviderError) as caught:
            [chunk async for chunk in tts.synthesize(TEXT, TtsOptions())]
        await tts.aclose()
        return caught.value

    assert run(scenario).kind == "connection"


@pytest.mark.parametrize(("output_format", "bytes_per_second"), [("pcm_8000", 16000), ("pcm_16000", 32000),
                                                                  ("ulaw_8000", 8000), ("alaw_8000", 8000)])
def test_fake_honours_output_format(output_format: str, bytes_per_second: int) -> None:
    fake = FakeElevenLabs(api_key=KEY)

    async def scenario() -> httpx.Response:
        async with serve_app(fake.app) as base_url, httpx.AsyncClient() as client:
            return await client.post(f"{base_url}/v1/text-to-speech/v1/stream",
                                     params={"output_format": output_format}, headers={"xi-api-key": KEY},
                                     json={"text": "hello", "model_id": "m"})

    response = run(scenario)
    assert response.status_code == 200
    assert len(response.content) == round(tone_seconds("hello") * bytes_per_second)
    assert fake.requests[0].output_format == output_format


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (apt) is needed")
def test_fake_espeak_mode_speaks() -> None:
    chunks = run(lambda: synthesize_all(FakeElevenLabs(api_key=KEY, mode="espeak"), "Hello, how can I help?"))
    samples = np.frombuffer(b"".join(chunks), dtype="<i2")
    assert 0.8 < len(samples) / 8000 < 4  # a short sentence, at 8 kHz
    assert np.sqrt(np.mean(samples.astype(float) ** 2)) > 500  # speech, not silence


class _HeldStreams:
    """An HTTP/1.1 server that answers every request with 20 ms of audio at once and the end of the stream
    only when ``release`` is set; it counts the TCP connections it accepted."""

    def __init__(self) -> None:
        self.connections = 0
        self.started = 0
        self.release = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                await read_request(reader)
                self.started += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: audio/pcm\r\ntransfer-encoding: chunked\r\n\r\n"
                             b"140\r\n" + bytes(320) + b"\r\n")
                await self.release.wait()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def test_many_concurrent_streams_neither_queue_nor_reconnect() -> None:
    """One provider serves every call: 150 replies at once all start without waiting for a free connection
    (httpx's default cap is 100), and the next 150 replies reuse those connections (its default keeps 20)."""
    server = _HeldStreams()
    calls = 150

    async def scenario() -> None:
        listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        tts = ElevenLabsTts(KEY, f"http://127.0.0.1:{port}")
        try:
            for round_ in (1, 2):
                server.release.clear()
                first = asyncio.Semaphore(0)

                async def reply(first: asyncio.Semaphore = first) -> int:
                    size = 0
                    async for chunk in tts.synthesize(TEXT, TtsOptions()):
                        if not size:
                            first.release()
                        size += len(chunk)
                    return size

                tasks = [asyncio.ensure_future(reply()) for _ in range(calls)]
                for _ in range(calls):  # every reply's first audio while all of them are still open
                    async with asyncio.timeout(10):
                        await first.acquire()
                assert server.started == round_ * calls
                server.release.set()
                assert await asyncio.gather(*tasks) == [320] * calls
            assert server.connections == calls
        finally:
            await tts.aclose()
            listener.close()

    run(scenario)
