"""The server's playout grid (gateway/transport/playout.py) on a fake loop clock."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest

from gateway.observability.metrics import Metrics
from gateway.rtp.packet import RtpPacket
from gateway.transport.playout import OutboundRtp, PlayoutScheduler


class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """call_at/time on a virtual clock; ``lag(when)`` says how late a callback due at ``when`` runs."""

    def __init__(self, start: float = 1000.0, lag: Callable[[float], float] | None = None) -> None:
        self.now = start
        self._lag = lag or (lambda when: 0.0)
        self._queue: list[tuple[float, int, Callable[..., object], tuple[Any, ...], FakeHandle]] = []
        self._order = itertools.count()
        self.timers_armed = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> FakeHandle:
        handle = FakeHandle()
        self.timers_armed += 1
        heapq.heappush(self._queue, (when + self._lag(when), next(self._order), callback, args, handle))
        return handle

    def run_until(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            when, _, callback, args, handle = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            if not handle.cancelled:
                callback(*args)
        self.now = max(self.now, until)

    @property
    def pending(self) -> int:
        return sum(1 for entry in self._queue if not entry[4].cancelled)


class Recorder:
    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop
        self.prepared: list[tuple[int, float, float]] = []  # (tick, now given, clock at call)
        self.sent: list[tuple[int, float]] = []

    def prepare(self, tick: int, now: float) -> None:
        self.prepared.append((tick, now, self.loop.time()))

    def send(self, tick: int) -> None:
        self.sent.append((tick, self.loop.time()))


def test_ticks_sit_on_an_absolute_20ms_grid_whatever_the_callback_lateness() -> None:
    rng = random.Random(7)
    loop = FakeLoop(lag=lambda when: rng.uniform(0, 0.004))
    scheduler = PlayoutScheduler(loop, lead=0.005)
    stream = Recorder(loop)
    scheduler.add(stream)
    loop.run_until(loop.now + 10.0)
    ticks = [tick for tick, _ in stream.sent]
    assert ticks == list(range(len(ticks))) and len(ticks) >= 498
    # Deadlines never drift: tick k is due at origin + k * 20 ms, lateness does not accumulate.
    origin = scheduler.tick_time(0)
    for tick, sent_at in stream.sent:
        assert origin + tick * 0.02 <= sent_at <= origin + tick * 0.02 + 0.004 + 1e-9
    # Streams prepare on the grid, the lead before their send deadline.
    for tick, now, _clock in stream.prepared:
        assert now == pytest.approx(scheduler.tick_time(tick) - 0.005)


def test_one_pair_of_timers_serves_every_stream() -> None:
    loop = FakeLoop()
    scheduler = PlayoutScheduler(loop)
    streams = [Recorder(loop) for _ in range(200)]
    for stream in streams:
        scheduler.add(stream)
    armed_before = loop.timers_armed
    loop.run_until(loop.now + 1.0)
    ticks = len(streams[0].sent)
    assert ticks >= 49
    # two timers per tick (prepare, send) in all, not per stream
    assert loop.timers_armed - armed_before <= 2 * ticks + 2
    assert loop.pending == 1
    assert all(len(stream.sent) == ticks for stream in streams)


def test_send_follows_prepare_of_the_same_tick_for_every_stream() -> None:
    loop = FakeLoop()
    scheduler = PlayoutScheduler(loop)
    a, b = Recorder(loop), Recorder(loop)
    scheduler.add(a)
    scheduler.add(b)
    loop.run_until(loop.now + 0.2)
    for stream in (a, b):
        assert [t for t, _, _ in stream.prepared] == [t for t, _ in stream.sent]
        for (tick, _, prepared_at), (_, sent_at) in zip(stream.prepared, stream.sent, strict=True):
            assert prepared_at < sent_at
            assert sent_at == pytest.approx(scheduler.tick_time(tick))


def test_a_stall_beyond_catch_up_skips_ticks_and_counts_them() -> None:
    stall_at: list[float] = []

    def lag(when: float) -> float:
        # one timer runs 200 ms late (the loop was blocked)
        if not stall_at and when > 1000.5:
            stall_at.append(when)
            return 0.2
        return 0.0

    loop = FakeLoop(lag=lag)
    metrics = Metrics()
    scheduler = PlayoutScheduler(loop, max_catch_up=3, metrics=metrics)
    stream = Recorder(loop)
    scheduler.add(stream)
    loop.run_until(loop.now + 2.0)
    ticks = [tick for tick, _ in stream.sent]
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) >= 9  # ~10 ticks skipped at once
    assert scheduler.skipped == max(gaps) - 1
    assert metrics.registry.get_sample_value("voicegw_playout_ticks_skipped_total") == scheduler.skipped
    # after the stall the grid is the same grid (no re-anchoring drift)
    tick, sent_at = stream.sent[-1]
    assert sent_at == pytest.approx(scheduler.tick_time(tick))


def test_small_lateness_is_caught_up_without_skipping() -> None:
    late_once: list[bool] = []

    def lag(when: float) -> float:
        if not late_once and when > 1000.3:
            late_once.append(True)
            return 0.05  # 2.5 ticks late
        return 0.0

    loop = FakeLoop(lag=lag)
    scheduler = PlayoutScheduler(loop, max_catch_up=3)
    stream = Recorder(loop)
    scheduler.add(stream)
    loop.run_until(loop.now + 1.0)
    ticks = [tick for tick, _ in stream.sent]
    assert ticks == list(range(len(ticks)))
    assert scheduler.skipped == 0


def test_scheduler_stops_when_idle_and_restarts_on_a_new_stream() -> None:
    loop = FakeLoop()
    scheduler = PlayoutScheduler(loop)
    stream = Recorder(loop)
    scheduler.add(stream)
    loop.run_until(loop.now + 0.1)
    scheduler.remove(stream)
    loop.run_until(loop.now + 0.1)
    assert loop.pending == 0
    count = len(stream.sent)
    loop.run_until(loop.now + 1.0)
    assert len(stream.sent) == count
    other = Recorder(loop)
    scheduler.add(other)
    loop.run_until(loop.now + 0.1)
    assert len(other.sent) >= 4


def test_send_timing_reports_lateness_percentiles() -> None:
    lags = itertools.cycle([0.0] * 98 + [0.003, 0.010])
    loop = FakeLoop(lag=lambda when: next(lags))
    scheduler = PlayoutScheduler(loop, lead=0.005)
    scheduler.add(Recorder(loop))
    loop.run_until(loop.now + 20.0)
    timing = scheduler.send_timing()
    assert timing.ticks > 900
    assert timing.p50 == pytest.approx(0.0, abs=1e-9)
    assert timing.max == pytest.approx(0.010, abs=1e-9)
    assert 0.0 <= timing.p99 <= 0.010


def test_outbound_rtp_numbering_across_talk_spurts() -> None:
    out = OutboundRtp(ssrc=0x1234, payload_type=8, clock_rate=8000, interval=0.02, rng=random.Random(3))
    packets: list[RtpPacket] = []
    # talk for ticks 10..14, silence 15..19 (nothing sent), talk 20..22; tick 23 skipped by the grid; 24
    for tick in range(10, 25):
        if 15 <= tick < 20:
            out.silence(tick)
            continue
        if tick == 23:
            continue  # a tick the grid skipped: nothing at all happens for it
        packets.append(out.packet(tick, b"\xd5" * 160))
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), "sequence numbers continuous"
    ts = [p.timestamp for p in packets]
    ticks = [*range(10, 15), 20, 21, 22, 24]
    assert [(t - ts[0]) & 0xFFFFFFFF for t in ts] == [160 * (k - 10) for k in ticks], "timestamps on the grid"
    assert [p.marker for p in packets] == [True, False, False, False, False, True, False, False, False]
    assert {p.payload_type for p in packets} == {8}
    assert out.talk_spurts == 2


def test_outbound_rtp_wraps_sequence_and_timestamp() -> None:
    out = OutboundRtp(ssrc=1, payload_type=0, clock_rate=8000, interval=0.02, rng=random.Random(0))
    out._seq = 0xFFFE  # start near the wrap to exercise it
    first = out.packet(0, b"\xff" * 160)
    out._ts_base = 0xFFFFFF00
    packets = [out.packet(tick, b"\xff" * 160) for tick in range(1, 4)]
    assert [p.sequence_number for p in [first, *packets]] == [0xFFFE, 0xFFFF, 0, 1]
    assert all(0 <= p.timestamp <= 0xFFFFFFFF for p in packets)
    assert (packets[-1].timestamp - packets[0].timestamp) & 0xFFFFFFFF == 320


def test_outbound_datagram_is_the_serialized_packet_of_the_same_tick() -> None:
    # Two streams from the same random state: one built through packet() + serialize(), one through the per-tick
    # datagram() fast path, over talk spurts, a silence, a skipped tick and the sequence/timestamp wrap.
    def stream() -> OutboundRtp:
        out = OutboundRtp(ssrc=0xCAFEF00D, payload_type=8, clock_rate=8000, interval=0.02, rng=random.Random(9))
        out._seq, out._ts_base = 0xFFFE, 0xFFFFFF00
        return out

    slow, fast = stream(), stream()
    for tick in [*range(5), 7, 8, *range(12, 15)]:
        if tick in (7, 8):
            slow.silence(tick)
            fast.silence(tick)
            continue
        payload = bytes([tick]) * 160
        expected = slow.packet(tick, payload)
        data, timestamp = fast.datagram(tick, payload)
        assert data == expected.serialize(), tick
        assert RtpPacket.parse(data) == expected
        assert timestamp == expected.timestamp
    assert (fast.packets_sent, fast.talk_spurts) == (slow.packets_sent, slow.talk_spurts) == (8, 2)
