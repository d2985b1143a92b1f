"""Recordings end to end: SIPp calls the offline assistant and plays speech; after the hangup the stereo WAV
holds the caller on the left (correlating with what SIPp played) and the assistant's first message on the
right, the end-of-call report carries the recording URL, the API serves the same bytes, and the PCAP holds the
INVITE, the BYE and RTP both ways. With recordingEnabled false: no file and no URL."""

from __future__ import annotations

import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.fakes.webhook_server import WebhookReceiver
from tests.helpers.http_thread import serve_in_thread
from tests.helpers.pcap import read_udp
from tests.integration.harness import (
    BASE_CONFIG,
    SIPP_DIR,
    GatewayProcess,
    free_port,
    run_sipp,
    start_gateway,
)
from tests.integration.test_echo import CODECS, aligned_correlation, make_wav, wav_samples

pytestmark = pytest.mark.integration


def _recording_starts_late_by(sent: np.ndarray, got: np.ndarray, max_lag: int = 8000) -> int:
    """Samples of the caller's audio sent before the recording began (the caller may stream from the moment it
    sends its ACK, the recording starts when the gateway sees the call connected), from the cross-correlation
    peak at a negative lag; 0 when the recording starts first."""
    n = len(sent) + len(got)
    corr = np.fft.irfft(np.fft.rfft(got, n) * np.conj(np.fft.rfft(sent, n)), n)
    early, late = corr[:max_lag], corr[n - max_lag :]
    return 0 if early.max() >= late.max() else max_lag - int(np.argmax(late))


def _config(tmp_path: Path, enabled: bool, hook: str) -> str:
    assistant = (
        f'demo: {{artifactPlan: {{recordingEnabled: {str(enabled).lower()}}}, firstMessage: "Hello there", '
        f'server: {{url: "{hook}"}}, serverMessages: [end-of-call-report]'
    )
    config = BASE_CONFIG.replace('demo: {firstMessage: "Hello"', assistant)
    assert config != BASE_CONFIG
    return (
        config
        + f"recordings: {{path: {tmp_path / 'rec'}, pcap: true}}\nstorage: {{path: {tmp_path / 'db.sqlite3'}}}\n"
    )


def _call(gateway: GatewayProcess, tmp_path: Path) -> np.ndarray:
    pt, encoding, decode = CODECS["PCMU"]
    wav = make_wav(tmp_path, encoding)
    sent = wav_samples(wav, decode)
    scenario = tmp_path / "call.xml"
    scenario.write_text(
        (SIPP_DIR / "echo_rtp_stream.xml")
        .read_text()
        .replace("{WAV}", str(wav))
        .replace("{LOOPS}", "1")
        .replace("{PT}", str(pt))
        .replace("{CODEC}", "PCMU")
        .replace("{PAUSE_MS}", str(int(len(sent) / 8) + 1500))
    )
    result = run_sipp(
        [
            "-sf",
            str(scenario),
            f"127.0.0.1:{gateway.sip_port}",
            "-s",
            "service",
            "-i",
            "127.0.0.1",
            "-m",
            "1",
            "-mp",
            str(free_port(also_tcp=False) & ~1),
            "-trace_err",
        ],
        cwd=tmp_path,
        timeout=len(sent) / 8000 + 30,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return sent


def test_a_recorded_call_has_caller_left_assistant_right_and_a_pcap(tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    with serve_in_thread(receiver.app) as hook:
        gateway = start_gateway(tmp_path, _config(tmp_path, True, hook))
        try:
            _check_recorded_call(gateway, tmp_path, receiver)
        finally:
            gateway.stop()


def _check_recorded_call(gateway: GatewayProcess, tmp_path: Path, receiver: WebhookReceiver) -> None:
    sent = _call(gateway, tmp_path)
    receiver.wait_for(lambda r: r.of_type("end-of-call-report"), timeout=20)
    report = receiver.of_type("end-of-call-report")[0].message
    wavs = list((tmp_path / "rec").glob("*/*.wav"))
    assert len(wavs) == 1
    call_id = wavs[0].stem
    api = f"http://127.0.0.1:{gateway.http_port}"
    for _ in range(100):
        r = httpx.get(f"{api}/call/{call_id}/stereo-recording")
        if r.status_code == 200:
            break
        gateway.wait_for_log("call_ended", timeout=1)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert report["recordingUrl"] == f"{api}/call/{call_id}/stereo-recording"
    assert report["artifact"]["recordingUrl"] == report["recordingUrl"]
    assert r.content == wavs[0].read_bytes()
    record = httpx.get(f"{api}/call/{call_id}").json()
    assert record["artifact"]["recordingUrl"].endswith(f"/call/{call_id}/stereo-recording")
    with wave.open(str(wavs[0]), "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        stereo = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2).astype(float)
    duration = len(stereo) / 8000
    assert duration == pytest.approx(len(sent) / 8000 + 1.5, rel=0.25)
    # 250 ms windows: one frame the jitter buffer adds or drops costs one window, not a second of audio; the
    # first second may still be settling (the caller streams from its ACK, the recording starts at connect)
    score, windows = aligned_correlation(
        sent[_recording_starts_late_by(sent, stereo[:, 0]) :], stereo[:, 0], window=2000
    )
    assert score >= 0.75 and float(np.median(windows)) >= 0.9, windows
    right = stereo[:, 1]
    assert np.sqrt(np.mean(right[: 8000 * 3] ** 2)) > 300  # "Hello there" near the start
    packets = read_udp(Path(str(wavs[0]).removesuffix(".wav") + ".pcap"))
    payloads = [d.payload for d in packets]
    assert any(p.startswith(b"INVITE ") for p in payloads)
    assert any(p.startswith(b"BYE ") for p in payloads)
    rtp_ports = {d.dst[1] for d in packets if d.payload[:1] == b"\x80"} | {
        d.src[1] for d in packets if d.payload[:1] == b"\x80"
    }
    assert len([d for d in packets if d.payload[:1] == b"\x80"]) > 100 and len(rtp_ports) >= 2


def test_recording_disabled_writes_no_file_and_no_url(tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    with serve_in_thread(receiver.app) as hook:
        gateway = start_gateway(tmp_path, _config(tmp_path, False, hook))
        try:
            _call(gateway, tmp_path)
            receiver.wait_for(lambda r: r.of_type("end-of-call-report"), timeout=20)
            report = receiver.of_type("end-of-call-report")[0].message
            assert "recordingUrl" not in report and "recordingUrl" not in report["artifact"]
            # recordings.pcap is the operator's capture switch, independent of the assistant's recordingEnabled
            assert not list((tmp_path / "rec").glob("*/*.wav"))
            calls = httpx.get(f"http://127.0.0.1:{gateway.http_port}/call").json()
            assert calls and all("recordingUrl" not in (c.get("artifact") or {}) for c in calls)
        finally:
            gateway.stop()
