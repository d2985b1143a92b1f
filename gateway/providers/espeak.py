"""Offline text to speech with the ``espeak-ng`` command-line synthesizer.

``espeak-ng --stdout`` writes a RIFF/WAVE stream (22050 Hz, mono, 16-bit PCM for the stock voices)
whose header announces an unknown length (``0x7ffff000``-ish sizes), so the header is parsed once and the
samples after it are streamed: each block read from the pipe is resampled to 8 kHz (libsoxr, streaming)
and yielded at once, without waiting for the whole utterance.

The text goes to the process on stdin (``--stdin``: read until end of stream), never through a shell,
so nothing in it is interpreted as an option or a shell word.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

from gateway.codecs.resample import StreamResampler
from gateway.providers.base import SAMPLE_RATE, ProviderError, TtsOptions

__all__ = ["EspeakTts", "WavFormat", "parse_wav_header"]

_NAME = "espeak"
_DEFAULT_VOICE = "en-us"
_BASE_WPM = 175  # espeak-ng's default rate: speed 1.0
_MIN_WPM, _MAX_WPM = 80, 450  # the range espeak-ng documents for -s
_READ_SIZE = 4096
_MAX_HEADER = 4096  # a header that never reaches its data chunk within this is not a WAV stream


class WavFormat:
    """The fields of a WAVE ``fmt `` chunk that matter here."""

    __slots__ = ("bits_per_sample", "channels", "sample_rate")

    def __init__(self, *, sample_rate: int, channels: int, bits_per_sample: int) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.bits_per_sample = bits_per_sample


def parse_wav_header(data: bytes) -> tuple[WavFormat, int] | None:
    """Parse a RIFF/WAVE header at the start of ``data``.

    Returns the format and the offset of the first sample, ``None`` if more bytes are needed, or raises
    :class:`ProviderError` (``kind="protocol"``) if this is not a 16-bit PCM mono WAVE stream.
    """
    if len(data) < 12:
        return None
    if data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ProviderError(_NAME, "protocol", "espeak-ng output is not a RIFF/WAVE stream")
    offset = 12
    fmt: WavFormat | None = None
    while True:
        if len(data) < offset + 8:
            return None
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"data":
            if fmt is None:
                raise ProviderError(_NAME, "protocol", "WAVE data chunk before its fmt chunk")
            return fmt, body
        if len(data) < body + size:
            return None
        if chunk_id == b"fmt ":
            if size < 16:
                raise ProviderError(_NAME, "protocol", "WAVE fmt chunk too short")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag != 1 or channels != 1 or bits != 16 or rate <= 0:
                raise ProviderError(
                    _NAME, "protocol", f"unsupported WAVE format tag={tag} channels={channels} bits={bits}"
                )
            fmt = WavFormat(sample_rate=rate, channels=channels, bits_per_sample=bits)
        offset = body + size + (size & 1)  # RIFF chunks are padded to an even size


class EspeakTts:
    """:class:`~gateway.providers.base.TtsProvider` backed by a local ``espeak-ng`` process per utterance.

    ``options.voice_id`` is an espeak-ng voice name (``en-us``, ``en-gb``, ``fr``...; default ``en-us``),
    ``options.speed`` scales the default 175 words per minute. ``timeout`` bounds each wait on the
    process (the start, every read, the exit), not the consumer's pace.
    """

    name = _NAME

    def __init__(self, executable: str = "espeak-ng", timeout: float = 10.0) -> None:
        self.executable = executable
        self.timeout = timeout

    def command(self, options: TtsOptions) -> list[str]:
        """The argv the process is started with (the text is not in it: it goes to stdin)."""
        voice = options.voice_id or options.language or _DEFAULT_VOICE
        argv = [self.executable, "--stdout", "--stdin", "-v", voice]
        if options.speed is not None:
            wpm = min(_MAX_WPM, max(_MIN_WPM, round(_BASE_WPM * options.speed)))
            argv += ["-s", str(wpm)]
        return argv

    async def synthesize(self, text: str, options: TtsOptions) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        proc = await self._start(options)
        try:
            async for chunk in self._stream(proc, text):
                yield chunk
        finally:
            # Cancelled or abandoned mid-stream: the process must not outlive the request, and it is
            # reaped (awaited) so no zombie is left behind.
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def _start(self, options: TtsOptions) -> asyncio.subprocess.Process:
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.create_subprocess_exec(
                    *self.command(options),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
        except TimeoutError:
            raise ProviderError(_NAME, "timeout", "espeak-ng did not start in time") from None
        except (FileNotFoundError, PermissionError) as exc:
            raise ProviderError(_NAME, "unavailable", f"cannot run {self.executable!r}: {exc}") from None

    async def _stream(self, proc: asyncio.subprocess.Process, text: str) -> AsyncIterator[bytes]:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        # write() only buffers: the transport feeds the pipe while we read stdout, so a long text cannot
        # deadlock against a full stdout pipe.
        proc.stdin.write(text.encode("utf-8"))
        proc.stdin.close()
        header = b""
        resampler: StreamResampler | None = None
        carry = b""
        while True:
            block = await self._read(proc.stdout)
            if not block:
                break
            if resampler is None:
                header += block
                parsed = parse_wav_header(header)
                if parsed is None:
                    if len(header) > _MAX_HEADER:
                        raise ProviderError(_NAME, "protocol", "no WAVE data chunk in espeak-ng output")
                    continue
                fmt, start = parsed
                resampler = StreamResampler(fmt.sample_rate, SAMPLE_RATE)
                block = header[start:]
            pcm = carry + block
            cut = len(pcm) & ~1
            carry = pcm[cut:]
            out = resampler.process(pcm[:cut])
            if out:
                yield out
        await self._finish(proc)
        if resampler is not None:
            tail = resampler.flush()
            if tail:
                yield tail

    async def _read(self, stdout: asyncio.StreamReader) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                return await stdout.read(_READ_SIZE)
        except TimeoutError:
            raise ProviderError(_NAME, "timeout", "espeak-ng produced no audio in time") from None

    async def _finish(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        try:
            async with asyncio.timeout(self.timeout):
                err = await proc.stderr.read()
                code = await proc.wait()
        except TimeoutError:
            raise ProviderError(_NAME, "timeout", "espeak-ng did not exit in time") from None
        message = err.decode("utf-8", "replace").strip()
        if code != 0:
            raise ProviderError(_NAME, "server", f"espeak-ng exited with {code}: {message or 'no message'}")
