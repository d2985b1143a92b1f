"""SRTP at the media edge (RFC 3711 via libsrtp): round trips both ways, tampered packets dropped and counted."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from gateway.observability.metrics import Metrics
from gateway.rtp.packet import RtpPacket
from gateway.sdp.crypto import SUITE_32, SUITE_80, SrtpKeying
from gateway.transport.rtp_endpoint import RtpEndpoint
from gateway.transport.srtp import SrtpContext

A_KEY = bytes(range(30))
B_KEY = bytes(range(50, 80))
PEER = ("192.0.2.10", 40000)
RTCP_SR = bytes.fromhex("80c8000600000001") + bytes(20)  # a minimal sender report, SSRC 1


def rtp(seq: int, payload: bytes = b"\xd5" * 160) -> bytes:
    return RtpPacket(payload_type=8, sequence_number=seq, timestamp=seq * 160, ssrc=0x1234, payload=payload).serialize()


def pair(suite: str = SUITE_80) -> tuple[SrtpContext, SrtpContext]:
    a = SrtpContext(SrtpKeying(suite=suite, local_key=A_KEY, remote_key=B_KEY))
    b = SrtpContext(SrtpKeying(suite=suite, local_key=B_KEY, remote_key=A_KEY))
    return a, b


def test_round_trip_both_ways_and_both_suites() -> None:
    for suite, tag_length in ((SUITE_80, 10), (SUITE_32, 4)):
        a, b = pair(suite)
        plain = rtp(1)
        protected = a.protect(plain)
        assert protected is not None and len(protected) == len(plain) + tag_length
        assert protected[12:] != plain[12:]  # the payload is encrypted, the header is not
        assert b.unprotect(protected) == plain
        back = b.protect(rtp(7))
        assert back is not None and a.unprotect(back) == rtp(7)
        rtcp = a.protect_rtcp(RTCP_SR)
        assert rtcp is not None and b.unprotect_rtcp(rtcp) == RTCP_SR


def test_tampered_packet_is_dropped_and_counted_in_the_metric() -> None:
    metrics = Metrics(CollectorRegistry())
    a, _ = pair()
    b = SrtpContext(SrtpKeying(suite=SUITE_80, local_key=B_KEY, remote_key=A_KEY), metrics=metrics)
    protected = bytearray(a.protect(rtp(1)) or b"")
    protected[20] ^= 0x01
    assert b.unprotect(bytes(protected)) is None
    assert b.unprotect(b"\x80\x08garbage") is None
    assert b.unprotect_rtcp(RTCP_SR) is None  # plain RTCP on an SRTP stream: no auth tag
    assert metrics.srtp_errors.labels("in", "rtp")._value.get() == 2
    assert metrics.srtp_errors.labels("in", "rtcp")._value.get() == 1


def test_wrong_key_fails_authentication() -> None:
    a, _ = pair()
    stranger = SrtpContext(SrtpKeying(suite=SUITE_80, local_key=B_KEY, remote_key=bytes(30)))
    assert stranger.unprotect(a.protect(rtp(1)) or b"") is None


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


def test_endpoint_protects_what_it_sends_and_unprotects_what_it_receives() -> None:
    received: list[RtpPacket] = []
    rtcp_in: list[bytes] = []
    endpoint = RtpEndpoint("127.0.0.1", 30000, on_rtp=lambda p, now: received.append(p),
                           on_rtcp=lambda d, now: rtcp_in.append(d), clock=lambda: 0.0)
    transport = FakeTransport()
    endpoint.attach(transport)  # type: ignore[arg-type]
    endpoint.set_remote(PEER, (PEER[0], PEER[1] + 1))
    endpoint.set_srtp(SrtpKeying(suite=SUITE_80, local_key=A_KEY, remote_key=B_KEY))
    context = endpoint.srtp
    endpoint.set_srtp(SrtpKeying(suite=SUITE_80, local_key=A_KEY, remote_key=B_KEY))
    assert endpoint.srtp is context  # the same keys keep the session and its replay window
    peer = SrtpContext(SrtpKeying(suite=SUITE_80, local_key=B_KEY, remote_key=A_KEY))

    assert endpoint.send(rtp(5))
    assert transport.sent[0] != rtp(5) and peer.unprotect(transport.sent[0]) == rtp(5)

    endpoint.receive_datagram(peer.protect(rtp(1)) or b"", PEER, 0.0)
    endpoint.receive_datagram(rtp(2), PEER, 0.02)  # plain RTP on an SRTP stream
    tampered = bytearray(peer.protect(rtp(3)) or b"")
    tampered[-1] ^= 0xFF
    endpoint.receive_datagram(bytes(tampered), PEER, 0.04)
    endpoint.receive_rtcp_datagram(peer.protect_rtcp(RTCP_SR) or b"", (PEER[0], PEER[1] + 1), 0.05)
    assert [p.sequence_number for p in received] == [1]
    assert received[0].payload == b"\xd5" * 160
    assert rtcp_in == [RTCP_SR]
    assert endpoint.counters["srtp_unprotect"] == 2

    endpoint.set_srtp(None)
    endpoint.receive_datagram(rtp(4), PEER, 0.06)
    assert [p.sequence_number for p in received] == [1, 4]
