"""Deepgram live STT (gateway/providers/deepgram.py) through the official SDK against a local server that
speaks Deepgram's /v1/listen websocket protocol (tests/fakes/deepgram_server.py), fed espeak-ng speech."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import soxr

from gateway.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from gateway.providers.base import AudioEncoding, ProviderError, SttOptions, Transcript
from gateway.providers.deepgram import DeepgramStream, DeepgramStt
from tests.fakes._server import serve_app
from tests.fakes.deepgram_server import FakeDeepgram

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (apt) is needed for speech")

KEY = "dg-test-key"
SCRIPT = ["Hello there.", "I would like to check my balance."]
SILENCE_1S = b"\x00\x00" * 8000
T = TypeVar("T")


def _speech(tmp: Path, text: str) -> bytes:
    """espeak-ng's voice for ``text`` as 8 kHz 16-bit PCM."""
    path = tmp / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return bytes(soxr.resample(samples, rate, 8000).astype("<i2").tobytes())


def _without_trailing_silence(pcm: bytes) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples) >= 1000)
    return bytes(samples[:loud[-1] + 1].tobytes())


@pytest.fixture(scope="module")
def two_utterances(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("speech")
    return (SILENCE_1S[:3200] + _speech(tmp, "hello there") + SILENCE_1S
            + _speech(tmp, "I would like to check my balance") + SILENCE_1S)


ENCODERS: dict[str, Callable[[bytes], bytes]] = {"mulaw": ulaw_encode, "alaw": alaw_encode, "linear16": bytes}
DECODERS: dict[str, Callable[[bytes], bytes]] = {"mulaw": ulaw_decode, "alaw": alaw_decode, "linear16": bytes}


def encode(pcm: bytes, encoding: AudioEncoding) -> bytes:
    return ENCODERS[encoding](pcm)


def decode(audio: bytes, encoding: AudioEncoding) -> bytes:
    return DECODERS[encoding](audio)


def frames(audio: bytes, encoding: AudioEncoding) -> list[bytes]:
    size = 320 if encoding == "linear16" else 160
    return [audio[i:i + size] for i in range(0, len(audio), size)]


async def collect(stream: DeepgramStream, into: list[Transcript]) -> None:
    async for transcript in stream.results():
        into.append(transcript)


async def eventually(check: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def wrapped() -> T:
        async with asyncio.timeout(30):
            return await scenario()
    return asyncio.run(wrapped())


@pytest.mark.parametrize("encoding", ["mulaw", "alaw", "linear16"])
def test_two_utterances_give_interims_then_finals_with_the_script_text(
        two_utterances: bytes, encoding: AudioEncoding) -> None:
    fake = FakeDeepgram(SCRIPT, api_key=KEY)
    audio = encode(two_utterances, encoding)
    got: list[Transcript] = []

    async def scenario() -> None:
        async with serve_app(fake.app) as base_url:
            stt = DeepgramStt(KEY, base_url)
            assert stt.accepts(encoding)
            stream = await stt.connect(SttOptions(encoding=encoding))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(collect(stream, got))
                for frame in frames(audio, encoding):
                    await stream.send(frame)
                await eventually(lambda: sum(t.is_final for t in got) == 2, "two finals")
                await stream.close()

    run(scenario)
    finals = [t for t in got if t.is_final]
    assert [t.text for t in finals] == SCRIPT
    assert all(t.speech_final for t in finals)
    # Interims came before each final, and they are prefixes of what the final said.
    first_final = got.index(finals[0])
    interims_1 = [t for t in got[:first_final] if not t.is_final]
    interims_2 = [t for t in got[first_final + 1:] if not t.is_final]
    assert interims_1 and interims_2
    assert all(SCRIPT[0].startswith(t.text) for t in interims_1)
    assert all(SCRIPT[1].startswith(t.text) for t in interims_2)
    # Times are seconds of audio: the second utterance starts after the first ends.
    assert 0 <= finals[0].start < finals[0].end < finals[1].start < finals[1].end <= len(two_utterances) / 16000

    conn = fake.connections[0]
    assert conn.query["encoding"] == encoding
    assert conn.query["sample_rate"] == "8000"
    assert conn.query["channels"] == "1"
    assert conn.query["interim_results"] == "true"
    assert conn.query["model"] == "nova-3"
    assert conn.audio_bytes == len(audio)
    assert bytes(conn.audio) == decode(audio, encoding)  # G.711 went up as it was, not transcoded
    assert conn.control[-1] == {"type": "CloseStream"}
    assert conn.closed == "close_stream"


def test_query_carries_the_transcriber_settings() -> None:
    fake = FakeDeepgram(api_key=KEY)

    async def scenario() -> None:
        async with serve_app(fake.app) as base_url:
            stt = DeepgramStt(KEY, base_url, endpointing_ms=300, utterance_end_ms=1000)
            await (await stt.connect(SttOptions(encoding="mulaw", language="multi", keywords=("Acme", "refund"),
                                                extra={"numerals": True, "not_a_param": 1}))).close()
            nova2 = await stt.connect(SttOptions(encoding="alaw", model="nova-2-phonecall", keywords=("Acme",),
                                                 extra={"endpointing": False}))
            await nova2.close()

    run(scenario)
    nova3, nova2 = fake.connections
    assert nova3.query["language"] == "multi"
    assert nova3.query["endpointing"] == "300"
    assert nova3.query["utterance_end_ms"] == "1000"
    assert nova3.query["numerals"] == "true"
    assert nova3.query["punctuate"] == nova3.query["smart_format"] == "true"
    assert "not_a_param" not in nova3.query
    assert ("keyterm", "Acme") in nova3.query_list and ("keyterm", "refund") in nova3.query_list
    assert nova3.headers["authorization"] == f"Token {KEY}"
    assert nova2.query["model"] == "nova-2-phonecall"
    assert nova2.query["endpointing"] == "false"
    assert nova2.keyterms() == ["Acme"] and "keyterm" not in nova2.query  # keywords boosting for Nova-2


def test_each_connect_sends_the_same_headers_without_reading_package_metadata(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    fake = FakeDeepgram(api_key=KEY)
    lookups: list[str] = []
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: lookups.append(name) or real_version(name))

    async def scenario() -> None:
        async with serve_app(fake.app) as base_url:
            stt = DeepgramStt(KEY, base_url)
            lookups.clear()  # building the client reads it once
            for _ in range(2):
                await (await stt.connect(SttOptions(encoding="mulaw"))).close()

    run(scenario)
    assert lookups == []
    first, second = fake.connections
    for conn in (first, second):
        assert conn.headers["authorization"] == f"Token {KEY}"
        assert conn.headers["user-agent"].startswith("deepgram-sdk/")
    assert first.headers["x-deepgram-session-id"] == second.headers["x-deepgram-session-id"]


def test_wrong_key_is_an_auth_error() -> None:
    fake = FakeDeepgram(api_key=KEY)

    async def scenario() -> ProviderError:
        async with serve_app(fake.app) as base_url:
            with pytest.raises(ProviderError) as caught:
                await DeepgramStt("not-the-key", base_url).connect(SttOptions(encoding="mulaw"))
            return caught.value

    error = run(scenario)
    assert (error.provider, error.kind, error.status) == ("deepgram", "auth", 401)
    assert not error.retryable
    assert fake.connections == []


def test_revoked_key_is_an_auth_error() -> None:
    fake = FakeDeepgram(api_key=KEY, reject_key=True)

    async def scenario() -> ProviderError:
        async with serve_app(fake.app) as base_url:
            with pytest.raises(ProviderError) as caught:
                await DeepgramStt(KEY, base_url).connect(SttOptions())
            return caught.value

    assert run(scenario).kind == "auth"


def test_a_socket_dropped_mid_stream_raises_connection_from_results(two_utterances: bytes) -> None:
    fake = FakeDeepgram(SCRIPT, api_key=KEY, drop_after_utterances=1)
    audio = encode(two_utterances, "mulaw")
    got: list[Transcript] = []

    async def scenario() -> tuple[ProviderError, ProviderError]:
        async with serve_app(fake.app) as base_url:
            stream = await DeepgramStt(KEY, base_url).connect(SttOptions(encoding="mulaw"))
            with pytest.raises(ProviderError) as from_results:
                async with asyncio.timeout(10):
                    for frame in frames(audio, "mulaw"):
                        await stream.send(frame)
                    await collect(stream, got)
            with pytest.raises(ProviderError) as from_send:
                await stream.send(audio[:160])
            await stream.close()
            return from_results.value, from_send.value

    from_results, from_send = run(scenario)
    assert (from_results.kind, from_send.kind) == ("connection", "connection")
    assert from_results.retryable
    assert [t.text for t in got if t.is_final] == SCRIPT[:1]  # what came before the drop was delivered
    assert fake.connections[0].closed == "dropped"


def test_finalize_gives_the_final_without_waiting_for_silence(tmp_path: Path) -> None:
    fake = FakeDeepgram(["Yes please."], api_key=KEY)
    # No trailing silence: only Finalize can end this utterance.
    audio = encode(_without_trailing_silence(_speech(tmp_path, "yes please")), "mulaw")
    got: list[Transcript] = []

    async def scenario() -> None:
        async with serve_app(fake.app) as base_url:
            stream = await DeepgramStt(KEY, base_url).connect(SttOptions(encoding="mulaw"))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(collect(stream, got))
                for frame in frames(audio, "mulaw"):
                    await stream.send(frame)
                await eventually(lambda: fake.connections[0].audio_bytes == len(audio), "audio received")
                assert not any(t.is_final for t in got)
                await stream.finalize()
                await eventually(lambda: any(t.is_final for t in got), "a final")
                await stream.close()
                await stream.close()  # idempotent

    run(scenario)
    assert [t.text for t in got if t.is_final] == ["Yes please."]
    conn = fake.connections[0]
    assert conn.control == [{"type": "Finalize"}, {"type": "CloseStream"}]
    assert conn.sent[-2]["from_finalize"] is True


def test_keepalive_is_sent_while_no_audio_goes_up() -> None:
    fake = FakeDeepgram(api_key=KEY, idle_timeout=2.0)

    async def scenario() -> None:
        async with serve_app(fake.app) as base_url:
            stream = await DeepgramStt(KEY, base_url, keepalive_interval=0.05).connect(SttOptions())
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(collect(stream, []))
                await eventually(lambda: len(fake.connections[0].control) >= 3, "keepalives")
                await stream.close()
            assert reader.done() and reader.exception() is None

    run(scenario)
    conn = fake.connections[0]
    assert conn.control[:3] == [{"type": "KeepAlive"}] * 3
    assert conn.closed == "close_stream"


def test_idle_stream_without_keepalive_is_closed_by_the_server_as_a_connection_error() -> None:
    # With results() unread nothing sends KeepAlive: the server gives up (NET-0001) and the reader learns it.
    fake = FakeDeepgram(api_key=KEY, idle_timeout=0.2)

    async def scenario() -> ProviderError:
        async with serve_app(fake.app) as base_url:
            stream = await DeepgramStt(KEY, base_url, keepalive_interval=60).connect(SttOptions())
            await eventually(lambda: fake.connections[0].closed == "idle", "server timeout")
            with pytest.raises(ProviderError) as caught:
                await collect(stream, [])
            await stream.close()
            return caught.value

    assert run(scenario).kind == "connection"


def test_connect_timeout_and_refused_connection() -> None:
    async def scenario() -> tuple[ProviderError, ProviderError]:
        # A listener that accepts TCP but never answers the websocket upgrade.
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        with pytest.raises(ProviderError) as timed_out:
            await DeepgramStt(KEY, f"http://127.0.0.1:{port}", connect_timeout=0.2).connect(SttOptions())
        silent.close()
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            free_port = closed.getsockname()[1]
        with pytest.raises(ProviderError) as refused:
            await DeepgramStt(KEY, f"http://127.0.0.1:{free_port}").connect(SttOptions())
        return timed_out.value, refused.value

    timed_out, refused = run(scenario)
    assert timed_out.kind == "timeout"
    assert refused.kind == "connection"


def test_accepts_telephone_encodings() -> None:
    stt = DeepgramStt(KEY)
    assert all(stt.accepts(e) for e in ("mulaw", "alaw", "linear16"))
