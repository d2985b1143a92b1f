"""Packet loss concealment for G.711 on 16-bit linear PCM (ITU-T G.711 Appendix I).

The decoder side of the receive path runs ``jitter buffer -> G.711 decode -> Concealer``:
decoded frames go through :meth:`Concealer.good_frame`, and for each frame the jitter
buffer reports missing :meth:`Concealer.conceal` makes one up. A run of silence frames
(between talk spurts) may also go to :meth:`Concealer.conceal`: it is silent by then and
keeps the fade-in for the audio that follows.

The algorithm is the one of G.711 Appendix I:

- history: the last 48.75 ms of output (3 longest pitch periods plus a quarter);
- at the start of an erasure the pitch period is found by normalised cross-correlation
  of the last 20 ms against the history, over lags of 40..120 samples (200..66 Hz);
- the last pitch period is repeated, its end overlap-added over a quarter period with
  the quarter period before it so the repetition joins up;
- after 10 ms the repetition widens to the last two periods, after 20 ms to three (a
  single repeated period sounds buzzy), each switch overlap-added over a quarter period;
- from 10 ms the output fades linearly by 20 % per 10 ms: silent after 60 ms;
- the first good frame after an erasure is overlap-added with the continuation of the
  synthetic signal over a quarter period plus 4 ms for each further 10 ms of erasure, at
  most 10 ms, so there is no click on recovery.

One deliberate difference: Appendix I delays the output by 3.75 ms so it can overlap-add
the real signal's last quarter period into the start of the synthetic one. This gateway
feeds speech recognisers and pays for every millisecond, so nothing is delayed; instead
the first quarter period of the synthetic signal is shifted by the difference between the
last real sample and the sample before the repeated period, a shift that tapers to zero
(the join is continuous in value; the slope changes at most by what a quarter period of
taper adds).

Linear PCM is 16-bit signed little-endian, mono (as ``gateway.codecs.g711`` produces).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["Concealer"]

_PCM = np.dtype("<i2")
_Signal = npt.NDArray[np.float64]


class Concealer:
    """G.711 Appendix I concealment for one decoded audio stream (see module doc)."""

    __slots__ = (
        "_corr_len",
        "_cycle",
        "_cycle_periods",
        "_fade_done",
        "_fade_from",
        "_fade_start",
        "_fade_step",
        "_frame",
        "_history",
        "_history_len",
        "_history_tail",
        "_lost",
        "_olap_extra",
        "_olap_max",
        "_pitch",
        "_pitch_max",
        "_pitch_min",
        "_position",
        "_rate",
        "_silent_after",
        "_switch",
    )

    def __init__(self, sample_rate: int = 8000, frame_ms: int = 20) -> None:
        if sample_rate <= 0 or sample_rate % 8000 or frame_ms <= 0:
            raise ValueError("sample_rate must be a multiple of 8000 Hz and frame_ms positive")
        scale = sample_rate // 8000
        self._rate = sample_rate
        self._frame = sample_rate * frame_ms // 1000
        self._pitch_min = 40 * scale  # 200 Hz
        self._pitch_max = 120 * scale  # 66.7 Hz
        self._corr_len = 160 * scale  # 20 ms correlation window
        self._history_len = 3 * self._pitch_max + self._pitch_max // 4
        self._switch = 80 * scale  # 10 ms: widen the repetition, start fading
        self._fade_start = self._switch
        self._fade_step = 0.2 / self._switch  # 20 % per 10 ms
        self._silent_after = 480 * scale  # 60 ms
        self._olap_extra = 32 * scale  # 4 ms per extra 10 ms of erasure
        self._olap_max = 80 * scale  # 10 ms
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new stream)."""
        self._history: _Signal = np.zeros(self._history_len)
        # Good frames outside an erasure are kept as PCM bytes and folded into ``_history`` only when an
        # erasure needs it: the common case (no loss) then costs a bytes append per frame, not a numpy copy.
        self._history_tail = bytearray()
        self._lost = 0  # samples concealed in the current erasure; 0 when none
        self._pitch = self._pitch_min
        self._cycle: _Signal = np.zeros(self._pitch_min)
        self._cycle_periods = 1
        self._position = 0
        self._fade_from: _Signal | None = None
        self._fade_done = 0

    @property
    def concealing(self) -> bool:
        """True while in an erasure (the next good frame will be merged in)."""
        return self._lost > 0

    def good_frame(self, pcm: bytes) -> bytes:
        """Record a received frame; after an erasure, return it merged with the concealment."""
        if len(pcm) % 2:
            raise ValueError("16-bit PCM must have an even number of bytes")
        if not self._lost:
            tail = self._history_tail
            tail += pcm
            excess = len(tail) - 2 * self._history_len
            if excess > 0:
                del tail[:excess]
            return pcm
        samples = np.frombuffer(pcm, dtype=_PCM).astype(np.float64)
        if not len(samples):
            return pcm
        self._sync_history()
        # Appendix I: overlap-add over a quarter period, plus 4 ms per further 10 ms lost.
        extra_frames = max(0, -(-self._lost // self._switch) - 1)
        length = min(self._pitch // 4 + self._olap_extra * extra_frames, self._olap_max, len(samples))
        synthetic = self._synthesize(length)
        fade_in = np.arange(1, length + 1) / (length + 1)
        merged = samples.copy()
        merged[:length] = synthetic * (1 - fade_in) + samples[:length] * fade_in
        self._lost = 0
        self._remember(merged)
        return _to_pcm(merged)

    def conceal(self) -> bytes:
        """Make up one frame for a missing one."""
        if not self._lost:
            self._sync_history()
            self._start_erasure()
        out = self._synthesize(self._frame)
        self._remember(out)
        return _to_pcm(out)

    # -- internals -----------------------------------------------------------------------

    def _sync_history(self) -> None:
        """Fold the good frames kept as bytes into the float history (same result as one by one)."""
        tail = self._history_tail
        if tail:
            self._remember(np.frombuffer(bytes(tail), dtype=_PCM).astype(np.float64))
            tail.clear()

    def _remember(self, samples: _Signal) -> None:
        n = len(samples)
        if n >= self._history_len:
            self._history = samples[-self._history_len :].copy()
        elif n:
            self._history = np.concatenate((self._history[n:], samples))

    def _find_pitch(self) -> int:
        """Lag in [pitch_min, pitch_max] with the best normalised cross-correlation."""
        history = self._history
        target = history[-self._corr_len :]
        region = history[-(self._corr_len + self._pitch_max) : -self._pitch_min]
        correlation = np.correlate(region, target, mode="valid")  # index i is lag pitch_max - i
        squares = np.concatenate(([0.0], np.cumsum(region * region)))
        energy = squares[self._corr_len :] - squares[: -self._corr_len]
        score = np.where(energy > 1e-9, correlation / np.sqrt(np.maximum(energy, 1e-9)), 0.0)
        # Smallest lag among equals: a period, not a multiple of it.
        return self._pitch_min + int(np.argmax(score[::-1]))

    def _build_cycle(self, periods: int) -> _Signal:
        """The last ``periods`` pitch periods, end overlap-added into what precedes them."""
        pitch = self._pitch
        length = periods * pitch
        overlap = pitch // 4
        history = self._history
        cycle = history[-length:].copy()
        before = history[-length - overlap : -length]
        ramp = np.arange(1, overlap + 1) / (overlap + 1)
        cycle[-overlap:] = cycle[-overlap:] * (1 - ramp) + before * ramp
        return cycle

    def _start_erasure(self) -> None:
        self._pitch = self._find_pitch()
        self._cycle_periods = 1
        self._cycle = self._build_cycle(1)
        self._position = 0
        # No output delay: start from the repetition shifted onto the last real sample and
        # cross-fade to the unshifted repetition over a quarter period.
        overlap = self._pitch // 4
        offset = self._history[-1] - self._history[-self._pitch - 1]
        self._start_fade(self._cycle[:overlap] + offset)

    def _start_fade(self, previous: _Signal) -> None:
        """Cross-fade the next ``len(previous)`` samples read from ``previous`` to the cycle."""
        self._fade_from = previous
        self._fade_done = 0

    def _read(self, count: int) -> _Signal:
        cycle = self._cycle
        out = cycle[(self._position + np.arange(count)) % len(cycle)]
        self._position = (self._position + count) % len(cycle)
        previous = self._fade_from
        if previous is not None:
            done = self._fade_done
            n = min(count, len(previous) - done)
            ramp = (done + 1 + np.arange(n)) / (len(previous) + 1)
            out[:n] = previous[done : done + n] * (1 - ramp) + out[:n] * ramp
            self._fade_done = done + n
            if self._fade_done >= len(previous):
                self._fade_from = None
        return out

    def _synthesize(self, count: int) -> _Signal:
        """The next ``count`` samples of the concealment, faded; advances the erasure."""
        out = np.zeros(count)
        done = 0
        while done < count and self._lost < self._silent_after:
            # Widen the repetition at 10 ms and 20 ms into the erasure.
            boundary = self._switch * self._cycle_periods
            if self._cycle_periods < 3 and self._lost >= boundary:
                self._widen()
                continue
            limit = boundary if self._cycle_periods < 3 else self._silent_after
            chunk = min(count - done, limit - self._lost)
            t = self._lost + np.arange(chunk)
            gain = np.clip(1 - (t - self._fade_start) * self._fade_step, 0.0, 1.0)
            out[done : done + chunk] = self._read(chunk) * gain
            done += chunk
            self._lost += chunk
        self._lost += count - done  # silent beyond 60 ms
        return out

    def _widen(self) -> None:
        """Repeat one more period of history (same phase, one period further back),
        cross-fading from the old repetition over a quarter period."""
        overlap = self._pitch // 4
        old = self._cycle[(self._position + np.arange(overlap)) % len(self._cycle)]
        self._cycle_periods += 1
        self._cycle = self._build_cycle(self._cycle_periods)
        self._start_fade(old)


def _to_pcm(samples: _Signal) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype(_PCM).tobytes()
