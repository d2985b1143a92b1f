"""Voice activity detection for the caller's audio: WebRTC's VAD plus onset/hangover hysteresis.

The per-frame verdict comes from the WebRTC VAD (``webrtcvad-wheels``: the GMM voice detector of the
WebRTC native code, ``common_audio/vad``), not from an energy threshold. WebRTC's detector takes 10, 20
or 30 ms frames of 16-bit mono PCM; telephone audio here is 8 kHz in 20 ms frames, so a frame is
exactly 160 samples = 320 bytes and anything else is refused with ``ValueError``.

Hysteresis on top of the per-frame verdicts (times are the frames' arrival times, ``now``):

- speech starts after ``start_frames`` consecutive voiced frames (default 2 = 40 ms):
  :class:`SpeechStarted` ``at`` is the arrival time of the first of them (the onset);
- speech ends after ``stop_seconds`` of consecutive unvoiced frames (default 0.3 s, counted in whole
  frames of audio, so a burst of late frames arriving together counts as the audio it carries):
  :class:`SpeechEnded` ``at`` is the arrival time of the last voiced frame.

What the WebRTC detector says about non-speech (observed with ``webrtcvad-wheels`` 2.0.14, and kept
as tests): digital silence is never voiced. Its noise model adapts over about 80 ms, so the first
four or so frames of any new steady sound (the start of a stream, or noise after digital silence)
are voiced even at -70 dBFS; with ``start_frames=2`` that is one short speech run, too short for a
voice barge-in (``voiceSeconds`` 0.2 s). White noise at -30 dBFS is voiced on a fraction of frames in
aggressiveness 2 (all of them in 0 and 1); a steady 1 kHz tone at -12 dBFS is voiced throughout in
every mode. Both therefore count as speech: filter them upstream if a line carries them.

The detector is pure: no clock, no I/O; it costs one C call and a few comparisons per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import webrtcvad

__all__ = [
    "FRAME_BYTES",
    "FRAME_SECONDS",
    "SAMPLE_RATE",
    "SpeechEnded",
    "SpeechStarted",
    "Vad",
    "VadEvent",
    "VadOptions",
]

SAMPLE_RATE = 8000
FRAME_SECONDS = 0.02
FRAME_BYTES = 320  # 160 samples of 16-bit little-endian PCM


@dataclass(frozen=True, slots=True, kw_only=True)
class VadOptions:
    """``aggressiveness``: WebRTC's mode, 0 (least, calls more frames speech) to 3 (most).
    ``start_frames``: consecutive voiced frames before speech starts. ``stop_seconds``: unvoiced audio
    after which speech ends (rounded to whole 20 ms frames, at least one)."""

    aggressiveness: int = 2
    start_frames: int = 2
    stop_seconds: float = 0.3

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0..3, not {self.aggressiveness!r}")
        if self.start_frames < 1:
            raise ValueError(f"start_frames must be at least 1, not {self.start_frames!r}")
        if not self.stop_seconds >= 0:
            raise ValueError(f"stop_seconds must be >= 0, not {self.stop_seconds!r}")

    @property
    def stop_frames(self) -> int:
        return max(1, round(self.stop_seconds / FRAME_SECONDS))


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechStarted:
    """The caller started speaking; ``at`` is the arrival time of the first voiced frame of the run."""

    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechEnded:
    """The caller stopped speaking; ``at`` is the arrival time of the last voiced frame of the run."""

    at: float


VadEvent = SpeechStarted | SpeechEnded


class Vad:
    """One caller's voice activity detector: feed every 20 ms frame to :meth:`process` in order."""

    __slots__ = (
        "_frame_voiced",
        "_is_speech",
        "_last_voiced_at",
        "_onset_at",
        "_run",
        "_speaking",
        "_start_frames",
        "_stop_frames",
        "_unvoiced",
        "_voiced_frames",
        "options",
    )

    def __init__(
        self, options: VadOptions | None = None, *, classifier: Callable[[bytes, int], bool] | None = None
    ) -> None:
        """``classifier(pcm, sample_rate)`` replaces WebRTC's per-frame verdict (tests script it)."""
        self.options = options if options is not None else VadOptions()
        self._is_speech = classifier or webrtcvad.Vad(self.options.aggressiveness).is_speech
        self._start_frames = self.options.start_frames
        self._stop_frames = self.options.stop_frames
        self._speaking = False
        self._frame_voiced = False
        self._run = 0  # consecutive voiced frames while not speaking
        self._unvoiced = 0  # consecutive unvoiced frames while speaking
        self._voiced_frames = 0  # voiced frames in the current speech run
        self._onset_at = 0.0
        self._last_voiced_at: float | None = None

    @property
    def speaking(self) -> bool:
        """Whether a speech run is in progress (between SpeechStarted and SpeechEnded)."""
        return self._speaking

    @property
    def frame_voiced(self) -> bool:
        """WebRTC's raw verdict on the last frame processed."""
        return self._frame_voiced

    @property
    def voiced_seconds(self) -> float:
        """Voiced audio in the current speech run, onset frames included (unvoiced gaps shorter than
        ``stop_seconds`` are not counted); 0.0 when not speaking."""
        return self._voiced_frames * FRAME_SECONDS if self._speaking else 0.0

    @property
    def onset_at(self) -> float | None:
        """Arrival time of the current speech run's first voiced frame (None when not speaking)."""
        return self._onset_at if self._speaking else None

    @property
    def last_voiced_at(self) -> float | None:
        """Arrival time of the most recent voiced frame (None before any)."""
        return self._last_voiced_at

    def process(self, pcm: bytes, now: float) -> VadEvent | None:
        """Classify one 20 ms frame (320 bytes of 8 kHz 16-bit PCM) that arrived at ``now``."""
        if len(pcm) != FRAME_BYTES:
            raise ValueError(f"a VAD frame is {FRAME_BYTES} bytes (20 ms of 8 kHz 16-bit PCM), not {len(pcm)}")
        voiced = bool(self._is_speech(pcm, SAMPLE_RATE))
        self._frame_voiced = voiced
        if voiced:
            self._last_voiced_at = now
            if self._speaking:
                self._unvoiced = 0
                self._voiced_frames += 1
                return None
            self._run += 1
            if self._run == 1:
                self._onset_at = now
            if self._run < self._start_frames:
                return None
            self._speaking = True
            self._voiced_frames = self._run
            self._unvoiced = 0
            self._run = 0
            return SpeechStarted(at=self._onset_at)
        if not self._speaking:
            self._run = 0
            return None
        self._unvoiced += 1
        if self._unvoiced < self._stop_frames:
            return None
        self._speaking = False
        self._voiced_frames = 0
        self._unvoiced = 0
        assert self._last_voiced_at is not None  # a speech run has voiced frames
        return SpeechEnded(at=self._last_voiced_at)
