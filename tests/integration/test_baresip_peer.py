"""A real SIP phone (baresip, tests/helpers/baresip.py) against the gateway's echo line and a SIPp UAS.

The echo line sends the caller's audio back, so what the phone records must be the speech it played, at
the times it played it plus a small latency: this proves the phone dials, talks, listens and hangs up. A
SIPp UAS that hangs up by itself shows that the phone notices a remote BYE, a 404 that it notices a
refusal.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gateway.call_media import QUIET_LEVEL
from gateway.codecs.g711 import ulaw_encode
from tests.helpers.baresip import RATE, call, place_rtp, read_wav, speech_wav, voiced_segments, write_wav
from tests.integration.harness import GatewayProcess, free_port, sipp_binary

pytestmark = pytest.mark.integration

LEAD_IN = 0.5  # silence before the first phrase
PAUSE = 1.0  # silence between the phrases: well above voiced_segments' 300 ms merge gap
MAX_LATENCY = 0.5  # "a small latency": the echo's jitter buffer and one 20 ms tick, far below half a second
FRAME = RATE // 50  # samples in the phone's 20 ms packets
EDGE = 0.08  # how far a segment edge may move (a frame or two of jitter buffer drift, a decayed syllable)


def two_phrases(directory: Path) -> Path:
    """0.5 s of silence, a phrase, 1 s of silence, another phrase, 0.3 s of silence: about 3 s at 8 kHz."""
    first = read_wav(speech_wav("one two three", directory / "first.wav"))
    second = read_wav(speech_wav("four five six", directory / "second.wav"))
    samples = np.concatenate([np.zeros(int(LEAD_IN * RATE)), first, np.zeros(int(PAUSE * RATE)), second,
                              np.zeros(int(0.3 * RATE))])
    path = directory / "two_phrases.wav"
    write_wav(path, samples)
    return path


def best_correlation(sent: np.ndarray, got: np.ndarray, lag: int, search: int = 160) -> float:
    """Normalised cross-correlation of ``got`` against ``sent`` at the best lag within ±``search`` samples of
    ``lag`` (default ±20 ms)."""
    best = -1.0
    for shift in range(max(0, lag - search), lag + search + 1):
        part = got[shift : shift + len(sent)]
        if len(part) < len(sent):
            break
        norm = float(np.sqrt(np.dot(part, part) * np.dot(sent, sent)))
        if norm > 0:
            best = max(best, float(np.dot(part, sent)) / norm)
    return best


def loud_runs(samples: np.ndarray, start: int, end: int) -> list[tuple[int, int]]:
    """The runs of 20 ms frames in ``samples[start:end]`` (frames counted from sample 0, as the phone sent
    them) holding a sample above QUIET_LEVEL: the stretches the jitter buffer may not cut."""
    runs: list[tuple[int, int]] = []
    for frame in range(start // FRAME, -(-end // FRAME)):
        a, b = frame * FRAME, (frame + 1) * FRAME
        if np.abs(samples[a:b]).max(initial=0) <= QUIET_LEVEL:
            continue
        if runs and runs[-1][1] == a:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return runs


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_phone_hears_its_own_speech_on_the_echo_line(gateway: GatewayProcess, tmp_path: Path, codec: str) -> None:
    play = two_phrases(tmp_path)
    sent = voiced_segments(play)
    assert len(sent) == 2, sent  # the test's own premise: two phrases apart

    result = call(f"sip:echo@127.0.0.1:{gateway.sip_port}", play=play, tmp_path=tmp_path,
                  duration=len(read_wav(play)) / RATE + 1.5, codec=codec)

    assert result.established, result.log
    assert not result.closed_by_remote, result.log  # the echo line never hangs up: the phone did
    stats = gateway.wait_for_log("media_stats", timeout=10)
    assert stats["codec"] == codec  # the phone offered only the codec asked for

    got = voiced_segments(result.recording)
    assert len(got) == len(sent), (sent, got)
    latency = got[0][0] - sent[0][0]
    assert 0.0 <= latency <= MAX_LATENCY, (sent, got)
    for (sent_start, sent_end), (got_start, got_end) in zip(sent, got, strict=True):
        assert got_start == pytest.approx(sent_start + latency, abs=EDGE), (sent, got)
        assert got_end == pytest.approx(sent_end + latency, abs=EDGE), (sent, got)
    # ... and it is the same speech, not merely sound at the right times. Word by word: the adaptive jitter
    # buffer sheds surplus delay by dropping a quiet frame (every sample at or below QUIET_LEVEL), and a pause
    # between two words is such a frame, so one lag for a whole phrase would not hold (under CPU load the
    # buffer starts deeper and drops a frame mid-phrase); inside a word nothing may be dropped or inserted.
    sent_samples = read_wav(play)
    got_samples = read_wav(result.recording)
    words = [word for a, b in sent for word in loud_runs(sent_samples, int(a * RATE), int(b * RATE))]
    assert len(words) >= len(sent), words
    scores = [
        best_correlation(sent_samples[start:end], got_samples, start + round(latency * RATE), search=int(EDGE * RATE))
        for start, end in words
    ]
    assert min(scores) >= 0.9, ([(start / RATE, end / RATE, round(score, 3))
                                 for (start, end), score in zip(words, scores, strict=True)], latency)
    # the RTP reached baresip itself: its own decoder produced the speech too
    assert result.decoded is not None, result.log
    heard = sum(b - a for a, b in voiced_segments(result.decoded))
    spoken = sum(b - a for a, b in sent)
    assert heard == pytest.approx(spoken, rel=0.2), (heard, spoken)


def test_refused_call_is_reported_as_closed_by_the_far_end(gateway: GatewayProcess, tmp_path: Path) -> None:
    play = speech_wav("hello", tmp_path / "hello.wav")
    result = call(f"sip:nobody@127.0.0.1:{gateway.sip_port}", play=play, tmp_path=tmp_path, duration=5.0)
    assert not result.established, result.log
    assert result.closed_by_remote, result.log
    assert result.close_reason.startswith("404"), result.close_reason
    assert voiced_segments(result.recording) == []


HANG_UP_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="answer, echo the media (-rtp_echo), hang up after {PAUSE_MS} ms">
  <recv request="INVITE" crlf="true" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="caller"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:uas@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv request="ACK"/>
  <pause milliseconds="{PAUSE_MS}"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:uas@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: [$caller]
      [last_Call-ID:]
      CSeq: 2 BYE
      Contact: <sip:uas@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


def test_phone_notices_the_far_end_hanging_up(tmp_path: Path) -> None:
    """SIPp answers, echoes the RTP for 2 s and sends BYE: the phone, set to stay 30 s, reports the BYE."""
    play = two_phrases(tmp_path)
    scenario = tmp_path / "hang_up_uas.xml"
    scenario.write_text(HANG_UP_UAS.replace("{PAUSE_MS}", "2000"))
    port = free_port()
    uas = subprocess.Popen(
        [sipp_binary(), "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-mp",
         str(free_port(also_tcp=False) & ~1), "-rtp_echo", "-m", "1", "-nostdin", "-trace_err",
         "-timeout", "60s"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        result = call(f"sip:uas@127.0.0.1:{port}", play=play, tmp_path=tmp_path, duration=30.0, timeout=45.0)
        _, err = uas.communicate(timeout=30)
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait(5)
    assert uas.returncode == 0, err.decode(errors="replace")[-2000:]
    assert result.established, result.log
    assert result.closed_by_remote, result.log
    assert result.close_reason, result.log
    # SIPp echoed the first phrase (it starts at 0.5 s, within the 2 s before the BYE)
    got = voiced_segments(result.recording)
    first = voiced_segments(play)[0]
    assert got and got[0][0] == pytest.approx(first[0], abs=MAX_LATENCY), (got, first)


def tone(seconds: float, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * 440 * t)


def test_voiced_segments_merge_gaps_shorter_than_300_ms(tmp_path: Path) -> None:
    samples = np.concatenate([np.zeros(4000), tone(0.4), np.zeros(1600), tone(0.4), np.zeros(4000), tone(0.2),
                              np.zeros(800)])
    write_wav(tmp_path / "tones.wav", samples)
    # 0.5 s silence, 0.4 s tone, a 0.2 s gap (merged), 0.4 s tone, a 0.5 s gap (kept), 0.2 s tone
    assert voiced_segments(tmp_path / "tones.wav") == [(0.5, 1.5), (2.0, 2.2)]


def test_recording_keeps_the_silences_the_far_end_did_not_send() -> None:
    """Two 0.4 s talk spurts 1 s apart by RTP timestamp, arriving late and unevenly: the recording puts them
    where their timestamps say, with silence between (nothing was sent then)."""
    t0 = 100.0
    packets = []
    for spurt_start in (0.2, 1.6):
        for frame in range(20):
            timestamp = 1000 + round(spurt_start * RATE) + 160 * frame
            payload = ulaw_encode(np.full(160, 8000, dtype="<i2").tobytes())
            header = struct.pack("!BBHII", 0x80, 0, frame, timestamp, 0x1234)
            arrival = t0 + spurt_start + 0.02 * frame + 0.065 + (0.015 if frame % 3 == 1 else 0.0)
            packets.append((arrival, header + payload))
    recording = place_rtp(packets, t0, t0 + 3.0)
    assert len(recording) == 3 * RATE
    sound = np.flatnonzero(recording)
    # the first packet's arrival (65 ms late) anchors the timeline; every other packet, early or late,
    # goes where its timestamp puts it: two blocks of exactly 0.4 s, 1.4 s apart, silence elsewhere
    first = round(0.265 * RATE)
    second = first + round(1.4 * RATE)
    expected = np.concatenate([np.arange(first, first + 3200), np.arange(second, second + 3200)])
    assert np.array_equal(sound, expected)
