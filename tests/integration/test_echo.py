"""The echo line end to end: SIPp calls `echo` and plays speech with rtp_stream; what comes back is the
same speech (normalised cross-correlation after alignment), clean and through an impairment relay; the
loss and jitter the gateway reports in its media_stats log line match what the relay injected."""

from __future__ import annotations

import itertools
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gateway.codecs.g711 import alaw_decode, ulaw_decode
from tests.helpers.impairment import Impairment, MediaRelay, SdpRelay
from tests.integration.harness import SIPP_DIR, GatewayProcess, free_port, run_sipp

SPEECH = (
    "The quick brown fox jumps over the lazy dog. This is the echo line of the voice gateway, "
    "one two three four five six seven eight nine ten."
)
CODECS = {"PCMU": (0, "u-law", ulaw_decode), "PCMA": (8, "a-law", alaw_decode)}


def make_wav(directory: Path, encoding: str) -> Path:
    """An 8 kHz mono G.711 WAV of synthetic speech (espeak-ng, then sox)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: `make install` installs it")
    raw = directory / "speech.wav"
    if not raw.exists():
        subprocess.run(["espeak-ng", "-w", str(raw), SPEECH], check=True, capture_output=True)
    out = directory / f"speech_{encoding}.wav"
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-e", encoding, str(out)], check=True,
                   capture_output=True)
    return out


def wav_samples(path: Path, decode: object) -> np.ndarray:
    """Linear samples of a G.711 WAV (the stdlib wave module reads PCM only)."""
    data = path.read_bytes()
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = struct.unpack_from("<4sI", data, offset)
        if chunk == b"data":
            payload = data[offset + 8 : offset + 8 + size]
            assert callable(decode)
            return np.frombuffer(decode(payload), dtype="<i2").astype(float)
        offset += 8 + size + (size & 1)
    raise AssertionError(f"no data chunk in {path}")


def echoed_signal(relay: MediaRelay, decode: object) -> np.ndarray:
    """The gateway's RTP, placed by RTP timestamp (gaps are silence)."""
    assert callable(decode)
    packets = []
    for _, data in relay.from_gateway:
        if len(data) < 12 or 192 <= data[1] <= 223:
            continue  # RTCP
        _, _, _seq, ts, _ = struct.unpack_from("!BBHII", data)
        packets.append((ts, data[12:]))
    assert packets, "the gateway sent no RTP back"
    ts0 = packets[0][0]
    offsets = [((ts - ts0 + 0x80000000) & 0xFFFFFFFF) - 0x80000000 for ts, _ in packets]
    base = min(offsets)
    out = np.zeros(max(offsets) - base + 160)
    for off, payload in zip(offsets, packets, strict=True):
        samples = np.frombuffer(decode(payload[1]), dtype="<i2")
        out[off - base : off - base + len(samples)] = samples
    return out


def aligned_correlation(
    sent: np.ndarray, got: np.ndarray, *, window: int = 8000, max_lag: int = 8000
) -> tuple[float, list[float]]:
    """Normalised cross-correlation of ``got`` against ``sent`` after alignment.

    A global lag first (FFT cross-correlation); then each 1 s window of speech is re-aligned within
    ±60 ms, since the jitter buffer may add or drop a frame between windows (a constant shift inside a
    window, not a distortion). Returns the energy-weighted NCC over the windows and the per-window NCCs.
    """
    # The echo comes back later than it was sent, by less than max_lag (the sent audio may be a loop
    # of one file, so only non-negative lags below one loop are meaningful).
    n = len(sent) + len(got)
    spectrum = np.fft.rfft(got, n) * np.conj(np.fft.rfft(sent, n))
    corr = np.fft.irfft(spectrum, n)
    lag = int(np.argmax(corr[:max_lag]))
    values: list[float] = []
    weights: list[float] = []
    for start in range(0, len(sent) - window + 1, window):
        ref = sent[start : start + window]
        energy = float(np.dot(ref, ref))
        if energy < window * 300.0**2:
            continue  # a pause: nothing to correlate
        # every integer lag within ±60 ms (a speech correlation peak is a few samples wide)
        lo = max(0, start + lag - 480)
        hi = min(len(got), start + lag + 480 + window)
        if hi - lo < window:
            values.append(0.0)
            weights.append(energy)
            continue
        segment = got[lo:hi]
        dots = np.correlate(segment, ref, mode="valid")
        squares = np.concatenate(([0.0], np.cumsum(segment * segment)))
        norms = np.sqrt(np.maximum(squares[window:] - squares[:-window], 1e-9) * energy)
        best = float(np.max(dots / norms))
        values.append(best)
        weights.append(energy)
    assert values, "no speech windows to compare"
    return float(np.average(values, weights=weights)), values


def call_echo(
    gateway: GatewayProcess,
    tmp_path: Path,
    *,
    codec: str = "PCMU",
    loops: int = 1,
    upstream: Impairment | None = None,
    seed: int = 1,
) -> tuple[MediaRelay, dict[str, object], np.ndarray, np.ndarray]:
    pt, encoding, decode = CODECS[codec]
    wav = make_wav(tmp_path, encoding)
    sent = np.tile(wav_samples(wav, decode), loops)
    seconds = len(sent) / 8000
    template = (SIPP_DIR / "echo_rtp_stream.xml").read_text()
    scenario = tmp_path / "echo_call.xml"
    scenario.write_text(
        template.replace("{WAV}", str(wav)).replace("{LOOPS}", str(loops)).replace("{PT}", str(pt))
        .replace("{CODEC}", codec).replace("{PAUSE_MS}", str(int(seconds * 1000) + 1500))
    )
    rtp_base = free_port(also_tcp=False) & ~1
    with MediaRelay(upstream=upstream, seed=seed) as media, SdpRelay(gateway.sip_addr, media) as sip:
        result = run_sipp(
            ["-sf", str(scenario), f"127.0.0.1:{sip.port}", "-s", "echo", "-i", "127.0.0.1",
             "-p", str(free_port()), "-m", "1", "-mp", str(rtp_base), "-trace_err"],
            cwd=tmp_path,
            timeout=seconds + 30,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        stats = gateway.wait_for_log("media_stats", timeout=10)
    return media, stats, sent, echoed_signal(media, decode)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_echo_returns_the_callers_speech(gateway: GatewayProcess, tmp_path: Path, codec: str) -> None:
    media, stats, sent, got = call_echo(gateway, tmp_path, codec=codec)
    assert stats["codec"] == codec
    score, windows = aligned_correlation(sent, got)
    assert score >= 0.9, windows
    assert stats["rx_cumulative_lost"] == 0
    # every packet SIPp sent was received (RFC 3550 A.1 probation leaves the first one out of the count)
    assert media.up.log.sent - 1 <= int(stats["rx_packets_received"]) <= media.up.log.sent  # type: ignore[call-overload]
    # the echo is a stream of its own: continuous numbering, one talk spurt
    rtp = [d for _, d in media.from_gateway if not 192 <= d[1] <= 223]
    seqs = [struct.unpack_from("!H", d, 2)[0] for d in rtp]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert sum(d[1] >> 7 for d in rtp) == 1
    assert {d[1] & 0x7F for d in rtp} == {CODECS[codec][0]}


# tests/integration/test_impairment.py covers loss, jitter and reordering cell by cell in the default suite.
@pytest.mark.slow
def test_echo_through_loss_jitter_and_reordering(gateway: GatewayProcess, tmp_path: Path) -> None:
    impairment = Impairment(loss=0.02, jitter=0.030, reorder=0.02)
    media, stats, sent, got = call_echo(gateway, tmp_path, loops=2, upstream=impairment, seed=7)
    injected = media.up.log
    assert injected.dropped >= 5 and injected.reordered >= 3, injected
    score, windows = aligned_correlation(sent, got)
    assert score >= 0.9, (windows, stats)
    # what the gateway measured matches what the relay did, within 10 %
    loss = float(stats["rx_loss_ratio"])  # type: ignore[arg-type]
    assert loss == pytest.approx(injected.loss_ratio, rel=0.10), (stats, injected)
    # the RFC 3550 A.8 estimate averaged over the call (the last value only reflects the final ~0.3 s, which
    # a busy machine's scheduling shifts by tens of percent)
    jitter = float(stats["rx_jitter_mean_seconds"])  # type: ignore[arg-type]
    assert jitter == pytest.approx(injected.jitter_mean_seconds(), rel=0.15), (stats, injected)
    assert int(stats["jb_frames_concealed"]) >= injected.dropped // 2  # type: ignore[call-overload]
