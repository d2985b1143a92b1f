"""RTCP packets (RFC 3550 §6.4-6.6), RTT from LSR/DLSR, and the sans-IO RtcpSession."""

from __future__ import annotations

import itertools
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.rtp import rtcp
from gateway.rtp.packet import RtpPacket, is_rtcp
from gateway.rtp.rtcp import (
    ReportBlock,
    RtcpBye,
    RtcpParseError,
    RtcpReceiverReport,
    RtcpSenderReport,
    RtcpSourceDescription,
    RtcpUnknown,
    SdesChunk,
    ntp_middle,
    ntp_timestamp,
    parse_compound,
    round_trip_time,
    serialize_compound,
)
from gateway.rtp.session import RtcpSession, rtcp_interval
from gateway.rtp.stats import ReceiverStats

# An RR + SDES compound as sent by a softphone: RR with one report block, CNAME "a@b"
RR_SDES = bytes.fromhex(
    "81c90007 11111111"
    " 22222222 0a000005 0001000f 00000020 12345678 00010000"
    " 81ca0003 11111111 0103614062 000000"
)


def test_parse_real_shaped_rr_and_sdes() -> None:
    rr, sdes = parse_compound(RR_SDES)
    assert rr == RtcpReceiverReport(
        ssrc=0x11111111,
        reports=(
            ReportBlock(
                ssrc=0x22222222,
                fraction_lost=10,
                cumulative_lost=5,
                highest_sequence=0x1000F,
                jitter=32,
                lsr=0x12345678,
                dlsr=0x10000,
            ),
        ),
    )
    assert isinstance(sdes, RtcpSourceDescription)
    assert sdes.chunks[0].cname == "a@b"
    assert serialize_compound([rr, sdes]) == RR_SDES
    assert is_rtcp(RR_SDES)


def test_negative_cumulative_lost_is_sign_extended() -> None:
    block = ReportBlock(ssrc=1, fraction_lost=0, cumulative_lost=-3, highest_sequence=0, jitter=0)
    wire = serialize_compound([RtcpReceiverReport(ssrc=9, reports=(block,))])
    assert wire[12:16] == b"\x00\xff\xff\xfd"
    assert parse_compound(wire)[0] == RtcpReceiverReport(ssrc=9, reports=(block,))


def test_bye_with_reason_is_padded_to_a_word() -> None:
    wire = serialize_compound([RtcpBye(sources=(7,), reason="bye")])
    assert wire == bytes.fromhex("81cb0002 00000007 03627965")
    wire = serialize_compound([RtcpBye(sources=(7, 8), reason="done")])
    assert len(wire) % 4 == 0
    assert parse_compound(wire) == [RtcpBye(sources=(7, 8), reason="done")]


def test_unknown_packet_types_are_kept_opaque() -> None:
    app = struct.pack("!BBHI4s", 0x81, 204, 2, 5, b"name")
    sr = RtcpSenderReport(ssrc=5, ntp_timestamp=1, rtp_timestamp=2, packet_count=3, octet_count=4)
    packets = parse_compound(serialize_compound([sr]) + app)
    assert packets[1] == RtcpUnknown(packet_type=204, count=1, payload=struct.pack("!I4s", 5, b"name"))


def test_padding_on_the_last_packet_is_ignored() -> None:
    body = struct.pack("!I", 42) + b"\x00\x00\x00\x04"
    wire = struct.pack("!BBH", 0xA0, 201, 2) + body
    assert parse_compound(wire) == [RtcpReceiverReport(ssrc=42)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\xc9\x00", "too_short"),
        (bytes.fromhex("40c90001") + b"\x00" * 4, "bad_version"),
        (bytes.fromhex("80c90005") + b"\x00" * 4, "bad_length"),
        (bytes.fromhex("80c90001") + b"\x00" * 4 + b"\x80\xc9", "bad_length"),
        (bytes.fromhex("81c90001") + b"\x00" * 4, "bad_report_count"),
        (bytes.fromhex("81c80001") + b"\x00" * 4, "bad_report_count"),
        (bytes.fromhex("a0c90001") + b"\x00" * 4, "bad_padding"),
        (bytes.fromhex("a0c90001") + b"\x00\x00\x00\x09", "bad_padding"),
        (bytes.fromhex("81ca0002") + b"\x00" * 4 + b"\x01\x09ab", "bad_sdes"),
        (bytes.fromhex("81ca0002") + b"\x00" * 4 + b"\x01\x02ab", "bad_sdes"),  # no null item
        (bytes.fromhex("82cb0001") + b"\x00" * 4, "bad_bye"),
        (bytes.fromhex("81cb0002") + b"\x00" * 4 + b"\x09abc", "bad_bye"),
    ],
)
def test_invalid_rtcp_raises_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RtcpParseError) as info:
        parse_compound(data)
    assert info.value.reason == reason


blocks = st.builds(
    ReportBlock,
    ssrc=st.integers(0, 0xFFFFFFFF),
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_sequence=st.integers(0, 0xFFFFFFFF),
    jitter=st.integers(0, 0xFFFFFFFF),
    lsr=st.integers(0, 0xFFFFFFFF),
    dlsr=st.integers(0, 0xFFFFFFFF),
)
words = st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4])
u32 = st.integers(0, 0xFFFFFFFF)
rtcp_packets = st.one_of(
    st.builds(
        RtcpSenderReport,
        ssrc=u32,
        ntp_timestamp=st.integers(0, 2**64 - 1),
        rtp_timestamp=u32,
        packet_count=u32,
        octet_count=u32,
        reports=st.lists(blocks, max_size=3).map(tuple),
        extension=words,
    ),
    st.builds(RtcpReceiverReport, ssrc=u32, reports=st.lists(blocks, max_size=3).map(tuple), extension=words),
    st.builds(
        RtcpSourceDescription,
        chunks=st.lists(
            st.builds(
                SdesChunk,
                ssrc=u32,
                items=st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=20)), max_size=3).map(tuple),
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(RtcpBye, sources=st.lists(u32, max_size=3).map(tuple), reason=st.text(max_size=20)),
    st.builds(
        RtcpUnknown,
        packet_type=st.sampled_from([204, 205, 206, 207]),
        count=st.integers(0, 31),
        payload=words,
    ),
)


@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_parse_inverts_serialize(packets: list[rtcp.RtcpPacket]) -> None:
    assert parse_compound(serialize_compound(packets)) == packets


@given(st.binary(max_size=120))
def test_parser_returns_packets_or_raises_rtcp_parse_error(data: bytes) -> None:
    try:
        parse_compound(data)
    except RtcpParseError as error:
        assert error.reason


def test_ntp_timestamp_and_middle_bits() -> None:
    ntp = ntp_timestamp(1.5)  # 1970-01-01T00:00:01.5
    assert ntp >> 32 == rtcp.NTP_EPOCH_OFFSET + 1
    assert ntp & 0xFFFFFFFF == 0x80000000
    assert ntp_middle(ntp) == (((rtcp.NTP_EPOCH_OFFSET + 1) & 0xFFFF) << 16) | 0x8000


def test_round_trip_time_rfc3550_example() -> None:
    # RFC 3550 §6.4.1 example: A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000
    # (46853.125 s), DLSR = 0x0005:4000 (5.250 s) -> RTT = 6.125 s
    arrival = 0xB7108000 << 16
    assert round_trip_time(arrival, 0xB7052000, 0x00054000) == pytest.approx(6.125)
    assert round_trip_time(arrival, 0, 0x00054000) is None
    # DLSR larger than the elapsed time: report 0, never a huge wrapped value
    assert round_trip_time(arrival, 0xB7108000, 0x00010000) == 0.0


# -- RtcpSession ------------------------------------------------------------------


def test_interval_randomisation_bounds() -> None:
    rng = random.Random(1)
    values = [
        rtcp_interval(
            members=2, senders=2, rtcp_bw=500, we_sent=True, avg_rtcp_size=100, initial=False, rng=rng
        )
        for _ in range(2000)
    ]
    # RFC 3550 §6.3.1: [0.5, 1.5] x 5 s, divided by e - 3/2
    assert min(values) >= 0.5 * 5 / 1.21828 - 1e-9
    assert max(values) <= 1.5 * 5 / 1.21828 + 1e-9
    assert sum(values) / len(values) == pytest.approx(5 / 1.21828, rel=0.03)
    initial = rtcp_interval(
        members=2, senders=0, rtcp_bw=500, we_sent=False, avg_rtcp_size=100, initial=True, rng=rng
    )
    assert initial <= 1.5 * 2.5 / 1.21828


def test_interval_grows_with_low_bandwidth() -> None:
    rng = random.Random(1)
    t = rtcp_interval(
        members=2, senders=1, rtcp_bw=10, we_sent=False, avg_rtcp_size=100, initial=False, rng=rng
    )
    # senders (1) > members / 4: no sender/receiver split, Td = 100 * 2 / 10 = 20 s > 5 s
    assert 0.5 * 20 / 1.21828 <= t <= 1.5 * 20 / 1.21828


class Pair:
    """Two RTCP sessions wired back to back with a fake clock and a 40 ms one-way delay."""

    def __init__(self) -> None:
        self.now = 100.0
        self.stats_a = ReceiverStats(8000)
        self.stats_b = ReceiverStats(8000)
        self.a = RtcpSession(
            ssrc=0xA,
            cname="a@gw",
            clock_rate=8000,
            rng=random.Random(1),
            now=self.now,
            wall_clock=1_700_000_000.0,
            receiver_stats=self.stats_a,
        )
        self.b = RtcpSession(
            ssrc=0xB,
            cname="b@peer",
            clock_rate=8000,
            rng=random.Random(2),
            now=self.now,
            wall_clock=1_600_000_000.0,
            receiver_stats=self.stats_b,
        )
        self.seq = 0
        self.in_flight: list[tuple[float, RtcpSession, bytes]] = []

    def run_until(self, end: float, *, a_sends_audio: bool = True, drop_every: int = 0) -> None:
        while self.now < end:
            self.now = round(self.now + 0.02, 6)
            if a_sends_audio:
                packet = RtpPacket(
                    payload_type=0,
                    sequence_number=self.seq & 0xFFFF,
                    timestamp=self.seq * 160,
                    ssrc=0xA,
                    payload=b"\xff" * 160,
                )
                self.a.on_rtp_sent(packet, self.now)
                if not (drop_every and self.seq % drop_every == 0):
                    self.stats_b.update(packet, self.now + 0.04)
                self.seq += 1
            for session, peer in ((self.a, self.b), (self.b, self.a)):
                timer = session.get_timer()
                if timer is not None and timer <= self.now:
                    session.handle_timer(self.now)
                for datagram in session.datagrams_to_send():
                    self.in_flight.append((self.now + 0.04, peer, datagram))
            for item in [i for i in self.in_flight if i[0] <= self.now]:
                self.in_flight.remove(item)
                item[1].on_rtcp(item[2], item[0])


def test_sessions_exchange_reports_and_measure_rtt() -> None:
    pair = Pair()
    pair.run_until(130.0, drop_every=10)
    # A sends audio: its reports are SRs; B only receives: RRs
    assert pair.b.peer_sender_report is not None
    assert pair.b.peer_sender_report.ssrc == 0xA
    assert pair.a.peer_sender_report is None
    # B's view of A's stream, as A learns it: ~10 % loss
    assert pair.a.peer_report is not None
    assert pair.a.peer_report.fraction_lost_ratio == pytest.approx(0.10, abs=0.02)
    assert pair.a.peer_report.cumulative_lost > 100
    # RTT = 2 x 40 ms, within the 20 ms tick of the fake network
    assert pair.a.rtt == pytest.approx(0.08, abs=0.021)
    # about one report every 5 s / 1.218 from each side over 30 s
    assert 4 <= pair.a.reports_sent <= 12
    assert 4 <= pair.b.reports_sent <= 12


def test_reports_are_randomised_around_the_interval() -> None:
    session = RtcpSession(ssrc=1, cname="x", clock_rate=8000, rng=random.Random(3), now=0.0, wall_clock=0.0)
    times = []
    now = 0.0
    for _ in range(200):
        timer = session.get_timer()
        assert timer is not None
        now = timer
        session.handle_timer(now)
        assert len(session.datagrams_to_send()) == 1
        times.append(now)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.5 * 5 / 1.21828 - 1e-9
    assert max(gaps) <= 1.5 * 5 / 1.21828 + 1e-9
    assert len({round(g, 6) for g in gaps}) > 100  # not a fixed period
    # first report after half the minimum interval (RFC 3550 §6.2 "initial")
    assert times[0] <= 1.5 * 2.5 / 1.21828


def test_sr_only_after_sending_rtp_and_sdes_always() -> None:
    session = RtcpSession(
        ssrc=1, cname="me@host", clock_rate=8000, rng=random.Random(3), now=0.0, wall_clock=0.0
    )
    first = session.get_timer()
    assert first is not None
    session.handle_timer(first)
    rr, sdes = parse_compound(session.datagrams_to_send()[0])
    assert isinstance(rr, RtcpReceiverReport)
    assert isinstance(sdes, RtcpSourceDescription) and sdes.chunks[0].cname == "me@host"
    session.on_rtp_sent(
        RtpPacket(payload_type=0, sequence_number=1, timestamp=8000, ssrc=1, payload=b"x" * 160), 6.0
    )
    second = session.get_timer()
    assert second is not None
    session.handle_timer(second)
    sr, _ = parse_compound(session.datagrams_to_send()[0])
    assert isinstance(sr, RtcpSenderReport)
    assert (sr.packet_count, sr.octet_count) == (1, 160)
    # the RTP timestamp is extrapolated to the report time
    assert sr.rtp_timestamp == 8000 + round((second - 6.0) * 8000)
    assert sr.ntp_timestamp == ntp_timestamp(second)


def test_close_sends_bye_and_stops_the_timer() -> None:
    pair = Pair()
    pair.run_until(102.0)
    pair.a.close(pair.now, reason="hangup")
    assert pair.a.get_timer() is None
    (datagram,) = pair.a.datagrams_to_send()
    packets = parse_compound(datagram)
    assert packets[-1] == RtcpBye(sources=(0xA,), reason="hangup")
    assert isinstance(packets[0], RtcpSenderReport | RtcpReceiverReport)
    pair.b.on_rtcp(datagram, pair.now)
    assert pair.b.peer_bye
    pair.a.close(pair.now)
    assert pair.a.datagrams_to_send() == []


def test_closing_on_a_clock_reading_older_than_the_last_sr_reports_no_delay() -> None:
    """A call closes on its last media tick's time, which can precede the arrival of the peer's last SR: the
    report's DLSR is 0, not a negative value that cannot be packed (it ended the call's close in an error)."""
    pair = Pair()
    pair.run_until(112.0)  # A sends audio: B has A's SRs, and B's RTP-less session still reports on A's stream
    assert pair.b._last_sr_arrival is not None
    pair.b.close(pair.b._last_sr_arrival - 0.5, reason="hangup")
    packets = parse_compound(pair.b.datagrams_to_send()[-1])
    (report,) = [p for p in packets if isinstance(p, RtcpSenderReport | RtcpReceiverReport)]
    assert report.reports and report.reports[0].ssrc == 0xA and report.reports[0].dlsr == 0
    assert packets[-1] == RtcpBye(sources=(0xB,), reason="hangup")


def test_garbage_rtcp_raises_parse_error_for_the_caller_to_count() -> None:
    session = RtcpSession(ssrc=1, cname="x", clock_rate=8000, rng=random.Random(3), now=0.0, wall_clock=0.0)
    with pytest.raises(RtcpParseError):
        session.on_rtcp(b"\x00\x01", 1.0)
