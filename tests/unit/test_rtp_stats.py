"""ReceiverStats: RFC 3550 A.1 sequence validation, A.3 loss, A.8 jitter, and the extra counters."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.rtp.packet import RtpPacket
from gateway.rtp.stats import MAX_DROPOUT, ReceiverStats

SSRC = 0x1234
PCAP = Path("/usr/share/sip-tester/g711a.pcap")


def pkt(seq: int, ts: int | None = None, ssrc: int = SSRC) -> RtpPacket:
    seq &= 0xFFFF
    return RtpPacket(
        payload_type=0,
        sequence_number=seq,
        timestamp=(seq * 160 if ts is None else ts) & 0xFFFFFFFF,
        ssrc=ssrc,
    )


def feed(stats: ReceiverStats, seqs: list[int], *, start: float = 0.0) -> list[bool]:
    # arrival exactly on the 20 ms grid of the timestamp: zero jitter
    return [stats.update(pkt(s), start + (s * 160) / 8000) for s in seqs]


def test_probation_needs_two_sequential_packets() -> None:
    stats = ReceiverStats(8000)
    assert stats.update(pkt(100), 0.0) is False
    assert not stats.valid
    assert stats.update(pkt(101), 0.02) is True
    assert stats.valid
    snap = stats.snapshot()
    # A.1: the probation packet is not counted; the base is the packet that ended probation
    assert snap.packets_received == 1
    assert snap.packets_expected == 1
    assert snap.cumulative_lost == 0


def test_probation_restarts_on_a_gap() -> None:
    stats = ReceiverStats(8000)
    assert feed(stats, [10, 12, 13]) == [False, False, True]
    assert stats.snapshot().extended_highest_sequence == 13


def test_clean_stream_has_no_loss_and_no_jitter() -> None:
    stats = ReceiverStats(8000)
    feed(stats, list(range(1000, 1500)))
    snap = stats.snapshot()
    assert snap.packets_received == 499
    assert snap.packets_expected == 499
    assert snap.cumulative_lost == 0
    assert snap.loss_ratio == 0.0
    assert snap.jitter == pytest.approx(0.0, abs=1e-6)
    assert (snap.duplicates, snap.reordered, snap.late) == (0, 0, 0)


def test_wrap_around_counts_a_cycle() -> None:
    stats = ReceiverStats(8000)
    feed(stats, [(65530 + i) & 0xFFFF for i in range(20)])
    snap = stats.snapshot()
    assert snap.extended_highest_sequence == 65536 + 13
    assert snap.packets_expected == 19
    assert snap.cumulative_lost == 0


def test_loss_counted_cumulative_and_fractional() -> None:
    stats = ReceiverStats(8000)
    seqs = [s for s in range(0, 101) if s % 10 != 5]  # drop 10 of 101 (all after the base)
    feed(stats, seqs)
    snap = stats.snapshot()
    assert snap.packets_expected == 100
    assert snap.cumulative_lost == 10
    assert snap.loss_ratio == pytest.approx(0.10)
    fraction, lost, highest, _jitter = stats.report_block_values()
    assert fraction == (10 << 8) // 100
    assert lost == 10
    assert highest == 100
    # a new interval with no loss reports fraction 0, cumulative unchanged
    feed(stats, list(range(101, 151)))
    fraction, lost, highest, _ = stats.report_block_values()
    assert (fraction, lost, highest) == (0, 10, 150)


def test_duplicates_are_counted_and_do_not_reduce_loss_below_zero_in_ratio() -> None:
    stats = ReceiverStats(8000)
    feed(stats, [0, 1, 2, 3])
    assert stats.update(pkt(3), 0.07) is False  # duplicate of the highest
    assert stats.update(pkt(2), 0.07) is False  # duplicate of an older one
    snap = stats.snapshot()
    assert snap.duplicates == 2
    assert snap.reordered == 0
    # A.3: duplicates count as received, so the cumulative loss may go negative...
    assert snap.cumulative_lost == -2
    # ...but the loss ratio and the report's fraction never do
    assert snap.loss_ratio == 0.0
    assert stats.report_block_values()[0] == 0


def test_reordered_packet_fills_its_gap() -> None:
    stats = ReceiverStats(8000)
    feed(stats, [0, 1, 2, 4, 5])
    assert stats.snapshot().cumulative_lost == 1
    assert stats.update(pkt(3), 0.1) is True
    snap = stats.snapshot()
    assert snap.reordered == 1
    assert snap.duplicates == 0
    assert snap.cumulative_lost == 0
    assert stats.update(pkt(3), 0.1) is False
    assert stats.snapshot().duplicates == 1


def test_duplicate_detection_across_the_wrap() -> None:
    stats = ReceiverStats(8000)
    feed(stats, [65533, 65534, 65535, 0, 1])
    assert stats.update(pkt(65535), 0.0) is False
    assert stats.snapshot().duplicates == 1


def test_large_jump_needs_confirmation_then_resyncs() -> None:
    stats = ReceiverStats(8000)
    feed(stats, list(range(0, 50)))
    jump = 50 + MAX_DROPOUT + 5000
    assert stats.update(pkt(jump), 1.0) is False
    assert stats.snapshot().bad_sequence == 1
    assert stats.snapshot().extended_highest_sequence == 49
    # A.1: "Two sequential packets -- assume that the other side restarted"
    assert stats.update(pkt(jump + 1), 1.02) is True
    snap = stats.snapshot()
    assert snap.extended_highest_sequence == jump + 1
    assert snap.packets_expected == 1
    assert snap.cumulative_lost == 0


def test_gap_below_max_dropout_is_loss_not_resync() -> None:
    stats = ReceiverStats(8000)
    feed(stats, [0, 1, 2])
    assert stats.update(pkt(2 + MAX_DROPOUT - 1), 1.0) is True
    assert stats.snapshot().cumulative_lost == MAX_DROPOUT - 2


def test_ssrc_change_restarts_probation_and_counts() -> None:
    stats = ReceiverStats(8000)
    feed(stats, list(range(10)))
    assert stats.update(pkt(5000, ssrc=0x9999), 1.0) is False
    assert stats.update(pkt(5001, ssrc=0x9999), 1.02) is True
    snap = stats.snapshot()
    assert snap.ssrc == 0x9999
    assert snap.ssrc_changes == 1
    assert snap.packets_received == 1


def test_late_is_reported_by_the_jitter_buffer() -> None:
    stats = ReceiverStats(8000)
    feed(stats, [0, 1])
    stats.record_late()
    stats.record_late(2)
    assert stats.snapshot().late == 3


def test_jitter_converges_to_mean_absolute_transit_difference() -> None:
    # alternate arrival offsets of 0 and +10 ms: |D| = 80 timestamp units every packet;
    # A.8's estimator converges to it.
    stats = ReceiverStats(8000)
    for seq in range(2000):
        offset = 0.010 if seq % 2 else 0.0
        stats.update(pkt(seq), seq * 0.02 + offset)
    snap = stats.snapshot()
    assert snap.jitter == pytest.approx(80.0, rel=1e-3)
    assert snap.jitter_seconds == pytest.approx(0.010, rel=1e-3)
    assert stats.report_block_values()[3] in (79, 80)


def test_jitter_mean_describes_the_whole_call_not_its_last_second() -> None:
    # 10 s with 10 ms of alternating transit, then 2 s of a steady path: A.8's smoothed estimate has
    # forgotten the jitter by the end, the call's mean has not (5/6 of the samples saw ~80 units).
    stats = ReceiverStats(8000)
    for seq in range(600):
        offset = 0.010 if seq % 2 and seq < 500 else 0.0
        stats.update(pkt(seq), seq * 0.02 + offset)
    snap = stats.snapshot()
    assert snap.jitter_seconds < 0.0005
    assert snap.jitter_mean_seconds == pytest.approx(0.010 * 5 / 6, rel=0.05)


def test_jitter_mean_is_zero_before_two_samples() -> None:
    stats = ReceiverStats(8000)
    assert stats.snapshot().jitter_mean_seconds == 0.0
    feed(stats, [0, 1])
    assert stats.snapshot().jitter_mean_seconds == 0.0  # one transit, no difference yet


def test_jitter_is_independent_of_clock_origin_and_timestamp_wrap() -> None:
    rng = random.Random(7)
    arrivals = [i * 0.02 + rng.uniform(0, 0.03) for i in range(500)]
    a, b = ReceiverStats(8000), ReceiverStats(8000)
    for i, arrival in enumerate(arrivals):
        a.update(pkt(i, ts=i * 160), arrival)
        b.update(pkt(i, ts=0xFFFFFFFF - 5000 + i * 160), 12345.0 + arrival)
    assert a.jitter > 0
    assert b.jitter == pytest.approx(a.jitter, rel=1e-6)


def test_packets_sharing_a_timestamp_do_not_inflate_jitter() -> None:
    # RFC 4733 event updates repeat the event's start timestamp every 50 ms
    stats = ReceiverStats(8000)
    for seq in range(10):
        stats.update(pkt(seq, ts=1000), seq * 0.05)
    assert stats.jitter == 0.0


def test_stream_from_a_real_capture() -> None:
    if not PCAP.exists():
        pytest.skip("sip-tester's g711a.pcap is not installed")
    from tests.helpers.pcap import read_udp

    datagrams = read_udp(PCAP)
    stats = ReceiverStats(8000)
    for datagram in datagrams:
        stats.update(RtpPacket.parse(datagram.payload), datagram.time)
    snap = stats.snapshot()
    assert snap.valid
    assert snap.packets_received == len(datagrams) - 1  # the first is spent on probation
    assert snap.cumulative_lost == 0
    assert snap.duplicates == 0
    # a locally generated capture: well under a millisecond of jitter
    assert snap.jitter_seconds < 0.001
