"""Local text to speech with espeak-ng: the offline default voice and the last voice of every fallback
chain, so a call can always say something (an apology when the cloud voice fails).

``espeak-ng --stdout`` writes a WAV (22050 Hz mono 16-bit) as it synthesises; the header is parsed, the
samples are resampled to 8 kHz with a streaming soxr resampler and handed on as they arrive. The text
goes to the process on stdin (never through a shell); ``voice_id`` is an espeak-ng voice name
(``en-us``), ``speed`` scales the default 175 words per minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
from collections.abc import AsyncIterator

import numpy as np
import soxr

from gateway.providers.base import ProviderError, TtsOptions

__all__ = ["EspeakTts"]

NAME = "espeak"
DEFAULT_VOICE = "en-us"
WORDS_PER_MINUTE = 175
READ_BYTES = 4096


class EspeakTts:
    """A :class:`~gateway.providers.base.TtsProvider` running espeak-ng (see module doc)."""

    name = NAME

    def __init__(self, executable: str = "espeak-ng", timeout: float = 10.0) -> None:
        self.executable = executable
        self.timeout = timeout

    async def synthesize(self, text: str, options: TtsOptions) -> AsyncIterator[bytes]:
        text = text.strip()
        if not text:
            return
        path = shutil.which(self.executable)
        if path is None:
            raise ProviderError(NAME, "unavailable", f"{self.executable} is not installed (apt-get install espeak-ng)")
        speed = options.speed or 1.0
        args = [path, "--stdout", "-v", options.voice_id or DEFAULT_VOICE,
                "-s", str(max(80, min(450, round(WORDS_PER_MINUTE * speed))))]
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(text.encode() + b"\n")
            await proc.stdin.drain()
            proc.stdin.close()
            async with asyncio.timeout(self.timeout):
                header = await proc.stdout.readexactly(44)
                rate = _wav_rate(header)
                resampler = soxr.ResampleStream(rate, 8000, 1, dtype="int16", quality="LQ")
                carry = b""
                while True:
                    data = await proc.stdout.read(READ_BYTES)
                    last = not data
                    data = carry + data
                    usable = len(data) // 2 * 2
                    carry = data[usable:]
                    samples = np.frombuffer(data[:usable], dtype="<i2")
                    out = resampler.resample_chunk(samples, last=last)
                    if len(out):
                        yield out.astype("<i2").tobytes()
                    if last:
                        break
                code = await proc.wait()
            if code != 0:
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                raise ProviderError(NAME, "server", f"espeak-ng exited with {code}: {err or 'no message'}")
        except TimeoutError:
            raise ProviderError(NAME, "timeout", f"no speech within {self.timeout} s") from None
        except asyncio.IncompleteReadError:
            err = (await proc.stderr.read()).decode(errors="replace").strip()
            raise ProviderError(NAME, "server", f"espeak-ng produced no audio: {err or 'no message'}") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    await asyncio.shield(proc.wait())


def _wav_rate(header: bytes) -> int:
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise ProviderError(NAME, "protocol", "espeak-ng did not write a WAV header")
    channels, rate, _, _, bits = struct.unpack("<HIIHH", header[22:36])
    if channels != 1 or bits != 16:
        raise ProviderError(NAME, "protocol", f"unexpected espeak-ng output: {channels} channels, {bits} bits")
    return int(rate)
