"""Streaming resampler on soxr: frequency preserved, exact length ratios across chunks."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.codecs.resample import StreamResampler

PAIRS = [(8000, 16000), (8000, 24000), (8000, 48000), (16000, 8000), (24000, 8000), (48000, 8000)]


def sine(rate: int, seconds: float, freq: float, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2")


def stream(resampler: StreamResampler, signal: np.ndarray, chunk: int) -> tuple[list[int], np.ndarray]:
    outs = [resampler.process(signal[i : i + chunk].tobytes()) for i in range(0, len(signal), chunk)]
    outs.append(resampler.flush())
    return [len(o) // 2 for o in outs], np.frombuffer(b"".join(outs), dtype="<i2")


def peak_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal.astype(float) * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_sine_keeps_its_frequency(in_rate: int, out_rate: int) -> None:
    _, out = stream(StreamResampler(in_rate, out_rate), sine(in_rate, 1.0, 1000.0), in_rate // 50)
    assert peak_hz(out, out_rate) == pytest.approx(1000.0, abs=2.0)
    # the level survives too (no gain error beyond a fraction of a dB)
    steady = out[len(out) // 4 : 3 * len(out) // 4].astype(float)
    assert np.sqrt(np.mean(steady**2)) == pytest.approx(10000 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
@pytest.mark.parametrize("chunk_ms", [10, 20, 30])
def test_length_ratio_is_exact_across_chunk_boundaries(in_rate: int, out_rate: int, chunk_ms: int) -> None:
    signal = sine(in_rate, 1.0, 440.0)
    lengths, out = stream(StreamResampler(in_rate, out_rate), signal, in_rate * chunk_ms // 1000)
    assert len(out) == len(signal) * out_rate // in_rate
    # never ahead of the input: the cumulative output trails by the filter delay only
    produced = np.cumsum(lengths[:-1])
    consumed = np.minimum(np.arange(1, len(produced) + 1) * (in_rate * chunk_ms // 1000), len(signal))
    assert np.all(produced <= consumed * out_rate / in_rate + 1)


def test_chunking_does_not_change_the_audio() -> None:
    signal = sine(8000, 0.5, 700.0)
    _, whole = stream(StreamResampler(8000, 48000), signal, len(signal))
    _, chunked = stream(StreamResampler(8000, 48000), signal, 160)
    assert len(whole) == len(chunked)
    assert np.max(np.abs(whole.astype(int) - chunked.astype(int))) <= 4  # rounding only


def test_downsampling_filters_out_what_8k_cannot_carry() -> None:
    # a 6 kHz tone at 24 kHz is above the 4 kHz Nyquist limit of 8 kHz: it must not alias
    # into the band as a 2 kHz tone
    _, out = stream(StreamResampler(24000, 8000), sine(24000, 1.0, 6000.0), 480)
    assert np.sqrt(np.mean(out.astype(float) ** 2)) < 0.05 * 10000


def test_same_rate_passes_through() -> None:
    data = sine(8000, 0.02, 1000.0).tobytes()
    resampler = StreamResampler(8000, 8000)
    assert resampler.process(data) == data
    assert resampler.flush() == b""


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError):
        StreamResampler(0, 8000)
    resampler = StreamResampler(8000, 16000)
    with pytest.raises(ValueError):
        resampler.process(b"\x00")
    resampler.flush()
    with pytest.raises(ValueError):
        resampler.process(b"\x00\x00")


def test_delay_is_reported_and_bounded() -> None:
    resampler = StreamResampler(8000, 16000)
    assert resampler.delay_seconds == 0.0
    for _ in range(10):
        resampler.process(bytes(320))
        # the LQ filter holds well under 100 ms of audio at any time
        assert 0.0 <= resampler.delay_seconds < 0.1
    assert StreamResampler(8000, 8000).delay_seconds == 0.0
