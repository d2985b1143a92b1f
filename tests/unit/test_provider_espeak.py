"""espeak-ng TTS: 8 kHz PCM streamed as it is synthesised, its errors, and no process left behind.

Stand-in executables (small Python scripts) play espeak-ng's part where a failure or a stall has to be
produced on demand.
"""

from __future__ import annotations

import asyncio
import audioop
import os
import shutil
import struct
import sys
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from gateway.providers.base import ProviderError, TtsOptions
from gateway.providers.espeak import EspeakTts, parse_wav_header

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def wav_header(rate: int = 22050, *, channels: int = 1, bits: int = 16, extra: bytes = b"") -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    # espeak-ng streams: the RIFF and data sizes are placeholders, not lengths.
    return b"RIFF\xff\xff\xff\x7fWAVEfmt " + struct.pack("<I", 16) + fmt + extra + b"data\xff\xff\xff\x7f"


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-espeak"
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def collect(tts: EspeakTts, text: str, options: TtsOptions | None = None) -> list[bytes]:
    return [c async for c in tts.synthesize(text, options or TtsOptions())]


# -- the real espeak-ng --------------------------------------------------------------------------


@needs_espeak
def test_speaks_8khz_pcm_streamed_in_several_chunks() -> None:
    chunks = asyncio.run(collect(EspeakTts(), "Our opening hours are nine to five, Monday to Friday."))
    audio = b"".join(chunks)
    assert len(chunks) > 1 and all(c and len(c) % 2 == 0 for c in chunks)
    seconds = len(audio) / 16000
    assert 2.0 < seconds < 6.0  # about 13 words at 175 words per minute, at 8000 samples per second
    assert audioop.rms(audio, 2) > 500


@needs_espeak
def test_speed_scales_the_length_of_speech() -> None:
    text = "Please hold while I transfer your call."
    slow = b"".join(asyncio.run(collect(EspeakTts(), text, TtsOptions(speed=0.6))))
    fast = b"".join(asyncio.run(collect(EspeakTts(), text, TtsOptions(speed=1.8))))
    assert len(slow) > 2 * len(fast)


@needs_espeak
def test_text_that_looks_like_options_is_spoken_not_parsed() -> None:
    audio = b"".join(asyncio.run(collect(EspeakTts(), "-v xx --help; $(rm -rf /)")))
    assert len(audio) > 8000 and audioop.rms(audio, 2) > 300


@needs_espeak
def test_an_unknown_voice_is_a_server_error_with_espeaks_message() -> None:
    with pytest.raises(ProviderError) as info:
        asyncio.run(collect(EspeakTts(), "hello", TtsOptions(voice_id="nosuchvoice")))
    assert info.value.kind == "server" and "voice" in info.value.message


def test_command_carries_voice_and_words_per_minute() -> None:
    tts = EspeakTts(executable="espeak-ng")
    assert tts.command(TtsOptions()) == ["espeak-ng", "--stdout", "--stdin", "-v", "en-us"]
    assert tts.command(TtsOptions(voice_id="en-gb", speed=1.2))[-4:] == ["-v", "en-gb", "-s", "210"]
    assert tts.command(TtsOptions(speed=100.0))[-1] == "450"  # espeak-ng's documented maximum


def test_blank_text_says_nothing_without_starting_a_process() -> None:
    assert asyncio.run(collect(EspeakTts(executable="/nonexistent/espeak-ng"), "  \n")) == []


# -- failures, via stand-in executables ------------------------------------------------------------


def test_missing_executable_is_unavailable() -> None:
    with pytest.raises(ProviderError) as info:
        asyncio.run(collect(EspeakTts(executable="no-such-espeak-ng"), "hi"))
    assert info.value.kind == "unavailable" and not info.value.retryable


def test_non_zero_exit_is_a_server_error_carrying_stderr(tmp_path: Path) -> None:
    exe = script(tmp_path, "sys.stdin.read(); sys.stderr.write('Error: boom\\n'); sys.exit(3)")
    with pytest.raises(ProviderError) as info:
        asyncio.run(collect(EspeakTts(executable=exe), "hi"))
    assert info.value.kind == "server" and "3" in info.value.message and "boom" in info.value.message


def test_not_a_wav_stream_is_a_protocol_error(tmp_path: Path) -> None:
    exe = script(tmp_path, "sys.stdin.read(); sys.stdout.buffer.write(b'hello, not audio at all')")
    with pytest.raises(ProviderError) as info:
        asyncio.run(collect(EspeakTts(executable=exe), "hi"))
    assert info.value.kind == "protocol"


def test_a_stalled_process_times_out_and_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    exe = script(tmp_path, f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)")
    with pytest.raises(ProviderError) as info:
        asyncio.run(collect(EspeakTts(executable=exe, timeout=0.5), "hi"))
    assert info.value.kind == "timeout" and info.value.retryable
    assert_reaped(int(pid_file.read_text()))


def test_audio_is_yielded_before_the_process_ends_and_cancelling_kills_it(tmp_path: Path) -> None:
    """A synthesiser that writes 0.5 s of audio, then never finishes: the first chunk must still come
    out (streaming, not read-to-end), and abandoning the stream must kill and reap the process."""
    pid_file = tmp_path / "pid"
    header = wav_header(16000, extra=b"LIST\x04\x00\x00\x00INFO")  # an extra chunk before "data"
    exe = script(
        tmp_path,
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        f"sys.stdout.buffer.write({header!r} + b'\\x10\\x27' * 8000); sys.stdout.flush()\n"
        "time.sleep(60)",
    )

    async def go() -> bytes:
        stream = EspeakTts(executable=exe, timeout=30).synthesize("hi", TtsOptions())
        assert isinstance(stream, AsyncGenerator)  # an async generator: aclose() is what cancelling does
        first: bytes = await anext(stream)
        await stream.aclose()  # what cancelling a consumer's task does to the generator
        return first

    first = asyncio.run(go())
    assert first and len(first) % 2 == 0 and len(first) <= 8000  # 16 kHz in, 8 kHz out: at most half
    assert_reaped(int(pid_file.read_text()))


def test_task_cancellation_mid_stream_kills_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    exe = script(
        tmp_path,
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        f"sys.stdout.buffer.write({wav_header()!r}); sys.stdout.flush(); time.sleep(60)",
    )

    async def go() -> None:
        task = asyncio.create_task(collect(EspeakTts(executable=exe, timeout=30), "hi"))
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert_reaped(int(pid_file.read_text()))


def assert_reaped(pid: int) -> None:
    """The process is gone and was waited for: no such pid (a zombie would still answer kill(pid, 0))."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- the WAV header parser ------------------------------------------------------------------------


def test_header_parser_needs_more_bytes_then_finds_the_data() -> None:
    header = wav_header(22050)
    for cut in (0, 11, 20, len(header) - 1):
        assert parse_wav_header(header[:cut]) is None
    parsed = parse_wav_header(header + b"\x00\x00")
    assert parsed is not None
    fmt, offset = parsed
    assert (fmt.sample_rate, fmt.channels, fmt.bits_per_sample, offset) == (22050, 1, 16, len(header))


@pytest.mark.parametrize(
    "data",
    [
        b"RIFX\x00\x00\x00\x00WAVE",
        wav_header(channels=2),
        wav_header(bits=8),
        b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00",  # data before fmt
    ],
)
def test_header_parser_rejects_what_it_cannot_play(data: bytes) -> None:
    with pytest.raises(ProviderError) as info:
        parse_wav_header(data)
    assert info.value.kind == "protocol"
