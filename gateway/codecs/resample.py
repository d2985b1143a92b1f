"""Streaming sample-rate conversion of 16-bit mono PCM (8 kHz telephony <-> 16/24/48 kHz).

Backed by libsoxr's streaming API (``soxr.ResampleStream``) at "LQ" quality, which keeps
the filter delay low for conversational audio while still low-pass filtering (unlike
``audioop.ratecv``, which aliases). One :class:`StreamResampler` per audio stream: the
filter state carries across chunks, so chunk boundaries leave no clicks.

Measured with libsoxr 0.5 / python-soxr 1.1 at "LQ": output comes in blocks, not per
chunk (8k->16k: ~940 samples every third 20 ms chunk; 24k->8k: 300 samples every other
chunk), so a consumer must tolerate 40-60 ms bursts. "QQ" is smooth but aliases when
downsampling (a 6 kHz tone at 24 kHz comes out of an 8 kHz stream at full level).
"""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["StreamResampler"]

_INT16_LE = np.dtype("<i2")


class StreamResampler:
    """Resample a stream of 16-bit LE mono PCM chunks from ``in_rate`` to ``out_rate``."""

    __slots__ = ("_done", "_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int, *, quality: str = "LQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._done = False
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    @property
    def delay_seconds(self) -> float:
        """Audio currently held inside the filter (soxr's reported delay), in seconds."""
        if self._stream is None:
            return 0.0
        return float(self._stream.delay()) / self.out_rate

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk; the output may lag the input by the filter delay."""
        return self._run(pcm, last=False)

    def flush(self) -> bytes:
        """End of stream: return the samples still held in the filter."""
        return self._run(b"", last=True)

    def _run(self, pcm: bytes, *, last: bool) -> bytes:
        if len(pcm) % 2:
            raise ValueError("16-bit PCM must have an even number of bytes")
        if self._stream is None:
            return pcm
        if self._done:
            raise ValueError("the stream was flushed")
        self._done = last
        samples = np.frombuffer(pcm, dtype=_INT16_LE).astype(np.int16, copy=False)
        out = self._stream.resample_chunk(samples, last=last)
        return np.asarray(out, dtype=_INT16_LE).tobytes()
