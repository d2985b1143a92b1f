"""G.711 Appendix I style packet loss concealment (gateway/codecs/plc.py).

Everything is judged on the output audio: pitch and level of what is made up, how fast it
fades, and whether the joins click (a click is a sample-to-sample step well beyond what
the signal itself ever does).
"""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import pytest

from gateway.codecs.plc import Concealer

RATE = 8000
FRAME = 160
AMPLITUDE = 8000.0
Signal = npt.NDArray[np.float64]


def tone(freq: float, start: int, count: int, *, phase: float = 0.0, rate: int = RATE) -> Signal:
    t = np.arange(start, start + count) / rate
    return AMPLITUDE * np.sin(2 * np.pi * freq * t + phase)


def pcm(samples: Signal) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def samples_of(data: bytes) -> Signal:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def rms(x: Signal) -> float:
    return float(np.sqrt(np.mean(x * x)))


def dominant_frequency(x: Signal, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), 1 << 15))
    return float(np.argmax(spectrum)) * rate / (1 << 15)


def natural_step(freq: float, rate: int = RATE) -> float:
    """Largest sample-to-sample step of the tone itself."""
    return AMPLITUDE * 2 * np.pi * freq / rate


def primed(freq: float, frames: int = 10, *, rate: int = RATE) -> tuple[Concealer, Signal]:
    frame = rate // 50
    concealer = Concealer(sample_rate=rate)
    sent = tone(freq, 0, frames * frame, rate=rate)
    for k in range(frames):
        out = concealer.good_frame(pcm(sent[k * frame : (k + 1) * frame]))
        assert out == pcm(sent[k * frame : (k + 1) * frame])
    return concealer, samples_of(pcm(sent))


def test_good_frames_pass_through_untouched() -> None:
    rng = random.Random(1)
    concealer = Concealer()
    for _ in range(20):
        frame = bytes(rng.randrange(256) for _ in range(2 * FRAME))
        assert concealer.good_frame(frame) == frame


def test_concealment_before_any_audio_is_silence() -> None:
    assert Concealer().conceal() == bytes(2 * FRAME)


@pytest.mark.parametrize("freq", [110.0, 150.0, 220.0, 440.0, 1000.0])
def test_a_concealed_tone_keeps_its_pitch_and_level(freq: float) -> None:
    concealer, _ = primed(freq)
    made_up = samples_of(concealer.conceal())
    truth = tone(freq, 10 * FRAME, FRAME)
    assert dominant_frequency(made_up) == pytest.approx(freq, rel=0.02)
    # Full level for 10 ms, then the 20 %/10 ms fade begins: about 0.95 of the tone's RMS.
    assert 0.85 * rms(truth) <= rms(made_up) <= 1.02 * rms(truth)
    # A periodic signal is continued in phase: the first 10 ms follow the real tone.
    assert np.corrcoef(made_up[:80], truth[:80])[0, 1] > 0.95


def test_a_harmonic_signal_repeats_at_its_fundamental_period() -> None:
    period = 64  # 125 Hz with harmonics, like a voiced vowel
    n = np.arange(20 * FRAME)
    voiced = np.zeros(len(n))
    for h in range(6):
        voiced += AMPLITUDE / (h + 1) * np.sin(2 * np.pi * (h + 1) * n / period + h)
    concealer = Concealer()
    for k in range(10):
        concealer.good_frame(pcm(voiced[k * FRAME : (k + 1) * FRAME]))
    made_up = samples_of(concealer.conceal())
    lags = range(40, 121)
    scores = [np.dot(made_up[:-lag], made_up[lag:]) / (len(made_up) - lag) for lag in lags]
    assert list(lags)[int(np.argmax(scores))] == pytest.approx(period, abs=1)


def test_the_fade_reaches_silence_by_60ms() -> None:
    concealer, _ = primed(300.0)
    frames = [samples_of(concealer.conceal()) for _ in range(5)]
    levels = [rms(f) for f in frames]
    assert levels[0] > levels[1] > levels[2] > 0
    whole = np.concatenate(frames)
    # 20 % per 10 ms from 10 ms on: the envelope at 40 ms is about 0.4.
    assert np.max(np.abs(whole[300:340])) == pytest.approx(0.4 * AMPLITUDE, rel=0.15)
    assert np.max(np.abs(whole[470:480])) <= 0.02 * AMPLITUDE
    assert not np.any(whole[480:])


SIGNALS = {
    "tone_110": lambda n: AMPLITUDE * np.sin(2 * np.pi * 110 * n / RATE),
    "tone_440": lambda n: AMPLITUDE * np.sin(2 * np.pi * 440 * n / RATE),
    "tone_1000": lambda n: AMPLITUDE * np.sin(2 * np.pi * 1000 * n / RATE),
    # Periods that are no whole number of samples, or no period in the 40..120 range at all:
    # repeating the history does not line up with the last sample by itself.
    "tone_97": lambda n: AMPLITUDE * np.sin(2 * np.pi * 97 * n / RATE),
    "two_tones": lambda n: AMPLITUDE / 2 * (np.sin(2 * np.pi * 200 * n / RATE) + np.sin(2 * np.pi * 310 * n / RATE)),
}


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_no_click_where_concealment_starts(name: str) -> None:
    signal = samples_of(pcm(SIGNALS[name](np.arange(10 * FRAME))))
    concealer = Concealer()
    for k in range(10):
        concealer.good_frame(pcm(signal[k * FRAME : (k + 1) * FRAME]))
    made_up = samples_of(concealer.conceal())
    joined = np.concatenate((signal[-40:], made_up[:80]))
    own_steps = np.max(np.abs(np.diff(signal)))
    assert np.max(np.abs(np.diff(joined))) <= 1.1 * own_steps


@pytest.mark.parametrize("lost", [1, 2, 3, 4])
@pytest.mark.parametrize("shift", [0.0, 1.0, 2.5])
@pytest.mark.parametrize("freq", [150.0, 440.0])
def test_no_click_when_audio_returns(lost: int, shift: float, freq: float) -> None:
    concealer, _ = primed(freq)
    tail = np.concatenate([samples_of(concealer.conceal()) for _ in range(lost)])
    # The returning audio need not be in phase with what was made up (shift in radians).
    back = tone(freq, (10 + lost) * FRAME, FRAME, phase=shift)
    merged = samples_of(concealer.good_frame(pcm(back)))
    joined = np.concatenate((tail[-20:], merged))
    assert np.max(np.abs(np.diff(joined))) <= 1.25 * natural_step(freq)
    # Past the merge the frame is the received audio itself.
    assert np.array_equal(merged[80:], samples_of(pcm(back))[80:])
    assert not concealer.concealing


def test_a_naive_splice_of_the_same_case_would_click() -> None:
    """The case the merge must handle is a real click without it (so the test above can fail)."""
    concealer, _ = primed(150.0)
    tail = samples_of(concealer.conceal())
    back = tone(150.0, 11 * FRAME, FRAME, phase=2.5)
    assert abs(back[0] - tail[-1]) > 3 * natural_step(150.0)


def test_audio_returning_after_a_long_loss_fades_in() -> None:
    concealer, _ = primed(440.0)
    concealed = [samples_of(concealer.conceal()) for _ in range(5)]
    assert not np.any(concealed[3]) and not np.any(concealed[4])
    back = tone(440.0, 15 * FRAME, FRAME, phase=np.pi / 2)  # starts at its peak
    merged = samples_of(concealer.good_frame(pcm(back)))
    assert abs(merged[0]) < 0.05 * AMPLITUDE
    assert np.max(np.abs(np.diff(np.concatenate(([0.0], merged))))) <= 1.25 * natural_step(440.0)
    assert np.array_equal(merged[80:], samples_of(pcm(back))[80:])


def test_a_second_loss_soon_after_recovery_is_concealed_from_fresh_history() -> None:
    concealer, _ = primed(220.0)
    concealer.conceal()
    concealer.good_frame(pcm(tone(220.0, 11 * FRAME, FRAME)))
    made_up = samples_of(concealer.conceal())
    assert dominant_frequency(made_up) == pytest.approx(220.0, rel=0.02)
    assert rms(made_up) > 0.8 * rms(tone(220.0, 0, FRAME))


def test_wideband_concealment_keeps_pitch() -> None:
    concealer, _ = primed(300.0, rate=16000)
    made_up = samples_of(concealer.conceal())
    assert len(made_up) == 320
    assert dominant_frequency(made_up, rate=16000) == pytest.approx(300.0, rel=0.02)


def test_odd_byte_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        Concealer().good_frame(b"\x00\x01\x02")
