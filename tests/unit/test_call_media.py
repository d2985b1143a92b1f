"""A call's media (gateway/call_media.py + gateway/transport/rtp_endpoint.py) on a fake clock, with fake
transports: what the caller sends is what the echo line plays back, through the negotiated codec."""

from __future__ import annotations

import itertools
import math
import random
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from gateway.call_media import CallMedia, DtmfEvent
from gateway.codecs.g711 import alaw_decode, alaw_encode, ulaw_encode
from gateway.observability.metrics import Metrics
from gateway.rtp.packet import RtpPacket
from gateway.rtp.rtcp import (
    ReportBlock,
    RtcpReceiverReport,
    RtcpSenderReport,
    ntp_middle,
    parse_compound,
    serialize_compound,
)
from gateway.sdp import Direction, NegotiatedAudio
from gateway.transport.playout import PlayoutScheduler
from tests.unit.test_playout import FakeLoop

PEER = ("192.0.2.10", 40000)
PEER_RTCP = ("192.0.2.10", 40001)
NAT = ("198.51.100.7", 61000)


@dataclass
class FakeTransport:
    loop: FakeLoop
    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    closed: bool = False

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append((data, addr))
        self.times.append(self.loop.time())

    def close(self) -> None:
        self.closed = True


def params(codec: str = "PCMA", pt: int = 8, direction: Direction = Direction.SENDRECV,
           peer: tuple[str, int] = PEER) -> NegotiatedAudio:
    return NegotiatedAudio(
        payload_type=pt, codec=codec, clock_rate=8000, ptime=20, dtmf_payload_type=101,
        remote_host=peer[0], remote_port=peer[1], remote_rtcp_port=peer[1] + 1, direction=direction,
    )


class Rig:
    def __init__(self, negotiated: NegotiatedAudio | None = None, *, echo: bool = True) -> None:
        self.loop = FakeLoop()
        self.metrics = Metrics()
        self.scheduler = PlayoutScheduler(self.loop, metrics=self.metrics)
        self.media = CallMedia("127.0.0.1", 20000, echo=echo, metrics=self.metrics, playout=self.scheduler,
                               rng=random.Random(1), wall_clock=lambda: 1_700_000_000.0, clock=self.loop.time)
        self.rtp, self.rtcp = FakeTransport(self.loop), FakeTransport(self.loop)
        self.media.endpoint.attach(self.rtp, self.rtcp)  # type: ignore[arg-type]
        self.media.apply(negotiated or params())
        self.seq, self.ts = 1000, 50_000

    def packet(self, payload: bytes, *, pt: int = 8, marker: bool = False, advance: bool = True) -> bytes:
        data = RtpPacket(payload_type=pt, sequence_number=self.seq & 0xFFFF, timestamp=self.ts, ssrc=0xCAFE,
                         payload=payload, marker=marker).serialize()
        self.seq += 1
        if advance:
            self.ts += 160
        return data

    def deliver(self, data: bytes, source: tuple[str, int] = PEER) -> None:
        self.media.endpoint.receive_datagram(data, source, self.loop.time())

    def step(self, seconds: float = 0.02) -> None:
        self.loop.run_until(self.loop.now + seconds)

    def sent_rtp(self) -> list[RtpPacket]:
        return [RtpPacket.parse(data) for data, _ in self.rtp.sent if not 192 <= data[1] <= 223]


def speech_like(seconds: float, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    signal: np.ndarray = (6000 * np.sin(2 * math.pi * 230 * t) + 3000 * np.sin(2 * math.pi * 710 * t + 1))
    return signal.astype("<i2")


def best_correlation(sent: np.ndarray, got: np.ndarray) -> float:
    a = sent.astype(float)
    b = got.astype(float)
    best = 0.0
    for lag in range(0, len(b) - len(a) // 2, 20):
        seg = b[lag : lag + len(a)]
        ref = a[: len(seg)]
        denom = math.sqrt(float(np.dot(ref, ref) * np.dot(seg, seg))) or 1.0
        best = max(best, float(np.dot(ref, seg)) / denom)
    return best


def test_echo_plays_back_pcma_as_pcma_with_continuous_numbering() -> None:
    rig = Rig(params("PCMA", 8))
    pcm = speech_like(1.0)
    frames = [pcm[i : i + 160].tobytes() for i in range(0, len(pcm), 160)]
    for i, frame in enumerate(frames):
        rig.deliver(rig.packet(alaw_encode(frame), marker=i == 0))
        rig.step()
    rig.step(0.2)
    out = rig.sent_rtp()
    assert len(out) >= len(frames) - 1
    assert {p.payload_type for p in out} == {8}
    assert all(addr == PEER for _, addr in rig.rtp.sent)
    assert out[0].marker and not any(p.marker for p in out[1:])
    assert all((b.sequence_number - a.sequence_number) & 0xFFFF == 1 for a, b in itertools.pairwise(out))
    assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(out))
    assert out[0].ssrc == rig.media.ssrc != 0xCAFE
    echoed = np.frombuffer(b"".join(alaw_decode(p.payload) for p in out), dtype="<i2")
    assert best_correlation(pcm, echoed) > 0.99


def test_echo_returns_the_received_bytes_exactly_and_re_encodes_only_after_a_loss() -> None:
    # Every PCMU code word, including 0x7F (-0), which decodes to the same sample as 0xFF (+0): the echo sends
    # the received frame back as is instead of a decode/encode round trip.
    rig = Rig(params("PCMU", 0))
    frames = [bytes((i * 160 + k) % 256 for k in range(160)) for i in range(30)]
    for i, frame in enumerate(frames):
        if i != 20:  # one packet lost: the frame after it is merged with the concealment
            rig.deliver(rig.packet(frame, pt=0, marker=i == 0))
        else:
            rig.seq, rig.ts = rig.seq + 1, rig.ts + 160
        rig.step()
    rig.step(0.2)
    out = [p.payload for p in rig.sent_rtp()]
    first = out.index(frames[0])
    echoed = out[first : first + 30]
    assert echoed[:20] == frames[:20]
    assert echoed[21] != frames[21]  # after the loss: the concealment fades into the received audio
    assert echoed[22:] == frames[22:]


def test_lost_packets_are_concealed_not_silenced() -> None:
    rig = Rig(params("PCMA", 8))
    pcm = speech_like(1.0)
    for i in range(50):
        data = rig.packet(alaw_encode(pcm[i * 160 : (i + 1) * 160].tobytes()), marker=i == 0)
        if i not in (20, 33):
            rig.deliver(data)
        rig.step()
    rig.step(0.2)
    stats = rig.media.media_stats()
    assert stats.receiver is not None and stats.receiver.cumulative_lost == 2
    assert stats.jitter_buffer is not None and stats.jitter_buffer.frames_concealed >= 2
    out = rig.sent_rtp()
    # the stream goes on through the losses: no talk-spurt restart, no gap in the timestamps
    assert sum(p.marker for p in out) == 1
    energies = [float(np.abs(np.frombuffer(alaw_decode(p.payload), "<i2")).mean()) for p in out]
    assert min(energies[1:-1]) > 500  # concealment, not silence, where packets were lost


def test_malformed_unknown_and_comfort_noise_are_counted_and_do_not_break_the_call() -> None:
    rig = Rig(params("PCMU", 0))
    silence = ulaw_encode(b"\x00\x00" * 160)
    rig.deliver(rig.packet(silence, pt=0, marker=True))
    rig.step()
    rig.deliver(b"\x80\x00\x01")  # truncated
    rig.deliver(b"\x40" + bytes(20))  # version 1
    rig.deliver(bytes([0xA0, 0]) + bytes(10) + b"\x00")  # padding bit with count 0
    rig.deliver(rig.packet(b"\x40", pt=13, advance=False))  # comfort noise, RFC 3389
    rig.deliver(rig.packet(b"\x00" * 20, pt=96))  # a payload type nobody negotiated
    rig.deliver(b"\x81\xc8\x00\x01\x00\x00")  # RTCP (mux demux) that does not parse
    for _ in range(5):
        rig.deliver(rig.packet(silence, pt=0))
        rig.step()
    stats = rig.media.media_stats()
    assert stats.dropped == {"too_short": 1, "bad_version": 1, "bad_padding": 1, "rtcp_bad_length": 1}
    assert stats.ignored == {"comfort_noise": 1, "unknown_payload_type": 1}
    sample = rig.metrics.registry.get_sample_value
    assert sample("voicegw_rtp_packets_dropped_total", {"reason": "bad_version"}) == 1
    assert sample("voicegw_rtp_packets_ignored_total", {"reason": "unknown_payload_type"}) == 1
    assert len(rig.sent_rtp()) >= 4  # audio kept flowing


def test_latches_on_the_signalled_source_and_drops_any_other() -> None:
    rig = Rig(params("PCMU", 0))
    rig.deliver(rig.packet(b"\xff" * 160, pt=0, marker=True))
    assert rig.media.endpoint.latched == PEER
    injected = RtpPacket(payload_type=0, sequence_number=rig.seq, timestamp=rig.ts, ssrc=0xBAD,
                         payload=b"\x00" * 160).serialize()
    rig.deliver(injected, source=("203.0.113.66", 5004))
    rig.step(0.1)
    assert rig.media.media_stats().dropped == {"wrong_source": 1}
    assert rig.media.stats.snapshot().ssrc_changes == 0
    assert all(addr == PEER for _, addr in rig.rtp.sent)


def test_peer_behind_nat_is_learnt_after_two_packets_in_sequence() -> None:
    rig = Rig(params("PCMU", 0))
    spoof = RtpPacket(payload_type=0, sequence_number=7, timestamp=0, ssrc=0xBAD, payload=b"\x00" * 160)
    rig.deliver(spoof.serialize(), source=("203.0.113.66", 5004))  # one stray packet latches nothing
    assert rig.media.endpoint.latched is None
    rig.deliver(rig.packet(b"\xff" * 160, pt=0, marker=True), source=NAT)
    assert rig.media.endpoint.latched is None
    rig.deliver(rig.packet(b"\xff" * 160, pt=0), source=NAT)
    assert rig.media.endpoint.latched == NAT
    assert rig.media.endpoint.counters["received"] == 2  # the held first packet was delivered too
    for _ in range(5):
        rig.deliver(rig.packet(b"\x00" * 160, pt=0), source=NAT)
        rig.step()
    assert rig.rtp.sent and all(addr == NAT for _, addr in rig.rtp.sent)  # symmetric RTP


def test_rfc4733_and_sip_info_digits_reach_the_call() -> None:
    rig = Rig(params("PCMU", 0))
    got: list[DtmfEvent] = []
    rig.media.on_dtmf = got.append
    rig.deliver(rig.packet(b"\xff" * 160, pt=0, marker=True))
    rig.step()
    for digit_event in (5, 11):
        start_ts = rig.ts
        for n, (end, duration) in enumerate([(False, 160), (False, 320), (True, 800), (True, 800), (True, 800)]):
            payload = struct.pack("!BBH", digit_event, (0x80 if end else 0) | 10, duration)
            rig.deliver(RtpPacket(payload_type=101, sequence_number=rig.seq & 0xFFFF, timestamp=start_ts,
                                  ssrc=0xCAFE, payload=payload, marker=n == 0).serialize())
            rig.seq += 1
            rig.step()
        rig.ts += 800
    rig.media.on_info("application/dtmf-relay", b"Signal=7\r\nDuration=160\r\n")
    rig.media.on_info("application/dtmf-relay", b"Signal=\r\n")  # invalid: ignored
    assert [(e.digit, e.method) for e in got] == [("5", "rfc4733"), ("#", "rfc4733"), ("7", "sip-info")]
    assert rig.media.digits == ["5", "#", "7"]
    assert got[0].duration_ms == 100
    sample = rig.metrics.registry.get_sample_value
    assert sample("voicegw_dtmf_digits_total", {"method": "rfc4733"}) == 2
    assert sample("voicegw_dtmf_digits_total", {"method": "sip-info"}) == 1


def test_on_hold_nothing_is_received_or_echoed() -> None:
    rig = Rig(params("PCMU", 0, direction=Direction.SENDONLY))  # we send only: the peer put us on hold
    for i in range(10):
        rig.deliver(rig.packet(b"\x00" * 160, pt=0, marker=i == 0))
        rig.step()
    assert rig.sent_rtp() == []
    assert rig.media.media_stats().ignored == {"not_receiving": 10}
    rig.media.apply(params("PCMU", 0))  # resumed
    for _ in range(10):
        rig.deliver(rig.packet(b"\x00" * 160, pt=0))
        rig.step()
    assert len(rig.sent_rtp()) >= 7


def test_rtcp_reports_are_sent_and_peer_reports_give_rtt() -> None:
    rig = Rig(params("PCMU", 0))
    for i in range(400):  # 8 s of audio
        rig.deliver(rig.packet(b"\x00" * 160, pt=0, marker=i == 0))
        rig.step()
    reports = list(zip(rig.rtcp.sent, rig.rtcp.times, strict=True))
    assert len(reports) >= 2 and all(addr == PEER_RTCP for (_, addr), _ in reports)
    # RFC 3550 §6.2: about every 5 s (the first at half that), randomised 0.5..1.5
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(reports)]
    assert all(5 * 0.5 / (math.e - 1.5) <= gap <= 5 * 1.5 / (math.e - 1.5) for gap in gaps)
    (data, _), sent_at = reports[-1]
    sr = parse_compound(data)[0]
    assert isinstance(sr, RtcpSenderReport), "we send audio, so we send sender reports"
    assert sr.reports and sr.reports[0].ssrc == 0xCAFE
    # the peer answers with a receiver report about our stream, 100 ms after our SR, holding it 60 ms
    block = ReportBlock(ssrc=rig.media.ssrc, fraction_lost=0, cumulative_lost=0, highest_sequence=100,
                        jitter=80, lsr=ntp_middle(sr.ntp_timestamp), dlsr=int(0.06 * 65536))
    rig.loop.now = sent_at + 0.1
    rig.media.endpoint.receive_rtcp_datagram(
        serialize_compound([RtcpReceiverReport(ssrc=0xCAFE, reports=(block,))]), PEER_RTCP, rig.loop.now
    )
    stats = rig.media.media_stats()
    assert stats.rtt == pytest.approx(0.04, abs=0.001)
    assert stats.peer_jitter == pytest.approx(0.01)
    assert stats.mos is not None and stats.mos > 4.0
    rig.media.close()
    assert parse_compound(rig.rtcp.sent[-1][0])[-1].__class__.__name__ == "RtcpBye"
    assert rig.rtp.closed and rig.rtcp.closed


def test_media_stats_reports_loss_and_jitter_of_the_received_stream() -> None:
    rig = Rig(params("PCMU", 0))
    rng = random.Random(5)
    sent = 0
    lost = 0
    for i in range(500):
        data = rig.packet(b"\x00" * 160, pt=0, marker=i == 0)
        sent += 1
        if i > 5 and rng.random() < 0.05:
            lost += 1
            rig.step()
            continue
        rig.deliver(data)
        rig.step()
    stats = rig.media.media_stats()
    assert stats.receiver is not None
    assert stats.receiver.cumulative_lost == lost
    assert stats.receiver.loss_ratio == pytest.approx(lost / stats.receiver.packets_expected)
