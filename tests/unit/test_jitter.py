"""Scripted-arrival tests of the adaptive jitter buffer (gateway/rtp/jitter.py).

A fake clock drives everything: the sender's packets carry RTP timestamps, each arrives at
its send time plus a scripted network delay, and the playout clock pops one frame every
20 ms. Payload byte ``i`` of the stream is ``i % 251`` (the silence byte 0xFF never occurs),
so every played frame can be checked against the timestamp it claims to carry.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from gateway.rtp.jitter import FrameKind, JitterBuffer, PlayoutFrame, PushResult
from gateway.rtp.packet import RtpPacket

CLOCK = 8000
FRAME = 160
TICK = 0.02
SILENCE = 0xFF
MASK = 0xFFFFFFFF


def content(timestamp: int, length: int) -> bytes:
    return bytes((timestamp + i) % 251 for i in range(length))


@dataclass
class Sent:
    send_time: float
    packet: RtpPacket
    index: int  # position in the stream, in packets


def stream(
    seconds: float,
    *,
    ptime_ms: int = 20,
    ts0: int = 1000,
    seq0: int = 100,
    ssrc: int = 0x1234,
    t0: float = 0.0,
    rate: float = 1.0,
    talk: Callable[[float], bool] | None = None,
) -> list[Sent]:
    """Packets a sender emits. ``rate`` > 1 is a sender clock running fast (send times in our
    clock shrink). ``talk(t)`` False means the sender is silent (DTX): no packet, the sequence
    number does not advance, and the next packet carries the marker bit."""
    samples = CLOCK * ptime_ms // 1000
    out: list[Sent] = []
    seq = seq0
    marker = True
    n = 0
    while True:
        sender_time = n * ptime_ms / 1000
        if sender_time >= seconds:
            return out
        ts = (ts0 + n * samples) & MASK
        if talk is None or talk(sender_time):
            packet = RtpPacket(
                payload_type=0,
                sequence_number=seq & 0xFFFF,
                timestamp=ts,
                ssrc=ssrc,
                payload=content(ts, samples),
                marker=marker,
            )
            out.append(Sent(t0 + sender_time / rate, packet, n))
            seq += 1
            marker = False
        else:
            marker = True
        n += 1


@dataclass
class Run:
    buffer: JitterBuffer
    frames: list[PlayoutFrame] = field(default_factory=list)
    pop_times: list[float] = field(default_factory=list)
    results: list[tuple[Sent, PushResult]] = field(default_factory=list)
    delays: list[tuple[float, float]] = field(default_factory=list)  # (time, current delay)
    max_buffered: float = 0.0

    def audio(self) -> list[PlayoutFrame]:
        return [f for f in self.frames if f.kind is FrameKind.AUDIO]

    def count(self, kind: FrameKind, after: float = -1.0) -> int:
        return sum(1 for f, t in zip(self.frames, self.pop_times, strict=True) if f.kind is kind and t >= after)

    def during(self, kind: FrameKind) -> int:
        """Frames of ``kind`` between the first and the last audio frame (not the stream's end)."""
        indexes = [i for i, f in enumerate(self.frames) if f.kind is FrameKind.AUDIO]
        return sum(1 for f in self.frames[indexes[0] : indexes[-1]] if f.kind is kind)

    def pushed(self, result: PushResult, after: float = -1.0) -> int:
        return sum(1 for s, r in self.results if r is result and s.send_time >= after)

    def delay_at(self, time: float) -> float:
        return next(d for t, d in self.delays if t >= time)


def simulate(
    arrivals: Iterable[tuple[float, Sent]],
    *,
    duration: float,
    buffer: JitterBuffer | None = None,
    phase: float = 0.0,
) -> Run:
    """Deliver ``(arrival_time, sent)`` and pop every 20 ms from ``phase`` until ``duration``."""
    run = Run(buffer or JitterBuffer(silence_byte=SILENCE))
    pending = sorted(arrivals, key=lambda a: a[0])
    k = 0
    i = 0
    while True:
        tick = phase + k * TICK
        if tick >= duration:
            break
        while i < len(pending) and pending[i][0] <= tick:
            arrival, sent = pending[i]
            run.results.append((sent, run.buffer.push(sent.packet, arrival)))
            i += 1
        frame = run.buffer.pop(tick)
        stats = run.buffer.stats()
        run.frames.append(frame)
        run.pop_times.append(tick)
        run.delays.append((tick, stats.current_delay))
        run.max_buffered = max(run.max_buffered, stats.buffered)
        k += 1
    return run


def check_frames(run: Run) -> None:
    """Invariants every run must keep."""
    previous: int | None = None
    played: set[int] = set()
    for frame in run.frames:
        assert len(frame.payload) == FRAME
        if previous is not None:
            assert frame.timestamp == (previous + FRAME) & MASK
        previous = frame.timestamp
        if frame.kind is FrameKind.AUDIO:
            assert frame.source_timestamp is not None
            assert frame.source_timestamp not in played, "audio played twice"
            played.add(frame.source_timestamp)
            expected = content(frame.source_timestamp, FRAME)
            for got, want in zip(frame.payload, expected, strict=True):
                assert got in (want, SILENCE)
        elif frame.kind is FrameKind.SILENCE:
            assert frame.payload == bytes([SILENCE]) * FRAME
    assert run.max_buffered <= 0.2 + TICK + 1e-9


def assert_concealment_only_after_talk_spurts(run: Run, sent: list[Sent]) -> None:
    """With nothing left in the buffer a pause cannot be told from a stall, so the end of
    each talk spurt is concealed (faded out) for at most 60 ms; nothing inside a spurt is."""
    sent_ts = {s.packet.timestamp for s in sent}
    concealed = [f.source_timestamp for f in run.frames if f.kind is FrameKind.CONCEALED]
    assert not sent_ts.intersection(concealed)
    spurts = sum(1 for s in sent if s.packet.marker)
    assert len(concealed) <= 3 * spurts


def constant(delay: float, sent: list[Sent]) -> list[tuple[float, Sent]]:
    return [(s.send_time + delay, s) for s in sent]


# -- basic behaviour ------------------------------------------------------------------------


def test_pops_before_any_packet_are_silence_of_one_frame() -> None:
    buffer = JitterBuffer(silence_byte=SILENCE)
    frames = [buffer.pop(k * TICK) for k in range(5)]
    assert [f.kind for f in frames] == [FrameKind.SILENCE] * 5
    assert [f.timestamp for f in frames] == [0, 160, 320, 480, 640]
    assert all(f.payload == b"\xff" * 160 and f.source_timestamp is None for f in frames)


def test_clean_stream_plays_everything_in_order_at_the_start_delay() -> None:
    sent = stream(10.0)
    run = simulate(constant(0.030, sent), duration=10.5, phase=0.007)
    check_frames(run)
    stats = run.buffer.stats()
    assert run.during(FrameKind.CONCEALED) == 0
    assert stats.packets_late == 0
    assert stats.frames_dropped == stats.frames_inserted == 0
    assert [f.source_timestamp for f in run.audio()] == [s.packet.timestamp for s in sent]
    # The first frame is held for about the start delay (40 ms), and that delay is kept.
    first = next(t for f, t in zip(run.frames, run.pop_times, strict=True) if f.kind is FrameKind.AUDIO)
    assert 0.030 + 0.03 <= first <= 0.030 + 0.05 + 1e-9
    assert all(0.03 <= d <= 0.05 + 1e-9 for t, d in run.delays if 1.0 < t < 10.0)


def test_random_loss_is_concealed_frame_for_frame() -> None:
    rng = random.Random(7)
    sent = stream(30.0)
    kept = [s for s in sent if s.index < 5 or rng.random() >= 0.02]
    lost = len(sent) - len(kept)
    run = simulate(constant(0.030, kept), duration=30.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert lost > 10
    assert run.during(FrameKind.CONCEALED) == lost
    assert stats.packets_late == 0
    assert len(run.audio()) == len(kept)


def test_loss_bursts_are_bridged_without_losing_the_audio_after_them() -> None:
    sent = stream(20.0)
    lost = {i for start in range(100, 1000, 100) for i in range(start, start + start // 100)}  # 1..9 frames
    kept = [s for s in sent if s.index not in lost]
    run = simulate(constant(0.030, kept), duration=20.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert len(run.audio()) == len(kept)
    assert stats.packets_late == 0
    # Each gap is as long as the burst: concealed first, silence once concealment has faded.
    gaps = run.during(FrameKind.CONCEALED) + run.during(FrameKind.SILENCE)
    assert abs(gaps - len(lost)) <= 9  # at most one frame of re-anchoring per burst
    assert 9 <= run.during(FrameKind.CONCEALED) <= 3 * 9


def test_reordered_packets_are_put_back_in_order() -> None:
    sent = stream(10.0)
    # Every 5th packet is held 28 ms and overtaken by the next one.
    arrivals = [(s.send_time + 0.030 + (0.028 if s.index % 5 == 3 else 0.0), s) for s in sent]
    run = simulate(arrivals, duration=10.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert stats.packets_late == 0
    # The first reordering shows the start delay is short by a frame: one frame is inserted.
    assert run.during(FrameKind.CONCEALED) == stats.frames_inserted <= 1
    assert [f.source_timestamp for f in run.audio()] == [s.packet.timestamp for s in sent]


def test_duplicates_are_dropped_and_counted() -> None:
    sent = stream(10.0)
    arrivals = constant(0.030, sent) + [(s.send_time + 0.033, s) for s in sent]
    arrivals += [(s.send_time + 0.3, s) for s in sent if s.index % 10 == 0]  # long after playout
    run = simulate(arrivals, duration=10.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert stats.packets_duplicate == len(sent) + len(sent) // 10
    assert stats.packets_late == 0
    assert len(run.audio()) == len(sent)


# -- network events ------------------------------------------------------------------------


def test_stall_then_burst_drops_the_late_frames_and_resyncs_at_the_old_delay() -> None:
    sent = stream(10.0)
    stall_start, stall = 5.0, 0.200

    def arrival(s: Sent) -> float:
        t = s.send_time + 0.030
        return max(t, stall_start + stall) if stall_start <= t < stall_start + stall else t

    run = simulate([(arrival(s), s) for s in sent], duration=10.5)
    check_frames(run)
    stats = run.buffer.stats()
    # The frames whose moment passed during the stall are dropped (about stall - 40 ms).
    assert 6 <= stats.packets_late <= 9
    # The rest is played, but for a frame or two dropped while the delay shrinks back.
    assert len(run.audio()) + stats.packets_late + stats.frames_dropped == len(sent)
    assert stats.frames_dropped <= 3
    # Not 200 ms of extra delay for the rest of the call: back to the start delay within seconds.
    assert run.delay_at(5.5) <= 0.08
    assert all(d <= 0.05 + 1e-9 for t, d in run.delays if t > 8.5)
    assert stats.resets == 0


def test_jitter_of_30ms_raises_the_target_until_nothing_arrives_late() -> None:
    rng = random.Random(3)
    sent = stream(20.0)
    run = simulate([(s.send_time + 0.050 + rng.uniform(-0.03, 0.03), s) for s in sent], duration=20.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert 0.06 <= stats.target_delay <= 0.1
    late_after_adaptation = run.pushed(PushResult.LATE, after=3.0)
    assert late_after_adaptation == 0
    assert stats.packets_late <= 15
    assert stats.resets == 0


def test_target_returns_to_the_base_delay_within_seconds_once_jitter_ends() -> None:
    rng = random.Random(5)
    sent = stream(20.0)

    def delay(s: Sent) -> float:
        return 0.020 + (rng.uniform(0.0, 0.08) if s.send_time < 8.0 else 0.0)

    buffer = JitterBuffer(silence_byte=SILENCE)
    run = simulate([(s.send_time + delay(s), s) for s in sent], duration=20.5, buffer=buffer)
    check_frames(run)
    assert run.delay_at(7.5) >= 0.08  # grown while the jitter lasted
    assert run.buffer.stats().target_delay <= 0.04
    # Shrunk by at most one dropped frame per second of speech: back under 40 ms within 5 s.
    assert all(d <= 0.045 for t, d in run.delays if t > 13.0)
    assert run.pushed(PushResult.LATE, after=8.0) == 0


@pytest.mark.parametrize("ppm", [300, -300])
def test_clock_drift_over_ten_minutes_is_absorbed_frame_by_frame(ppm: int) -> None:
    minutes = 10
    sent = stream(minutes * 60.0, rate=1 + ppm * 1e-6)
    run = simulate(constant(0.030, sent), duration=minutes * 60.0)
    stats = run.buffer.stats()
    drift_frames = minutes * 60 * CLOCK * ppm * 1e-6 / FRAME  # 9 frames
    net = stats.frames_dropped - stats.frames_inserted
    assert abs(net - drift_frames) <= 1.5
    assert stats.packets_late == 0
    assert run.during(FrameKind.CONCEALED) == stats.frames_inserted  # no underrun, only deliberate insertions
    assert all(0.0 < d <= 0.07 for t, d in run.delays if t > 1.0)


@pytest.mark.parametrize("ppm", [300, -300])
def test_clock_drift_with_talk_spurts_is_absorbed_in_the_pauses(ppm: int) -> None:
    sent = stream(600.0, rate=1 + ppm * 1e-6, talk=lambda t: t % 4.0 < 3.0)
    run = simulate(constant(0.030, sent), duration=600.0)
    check_frames(run)
    stats = run.buffer.stats()
    # Every received frame is played; the pauses take up the drift.
    assert stats.frames_dropped == 0 and stats.frames_inserted == 0
    assert len(run.audio()) == len(sent)
    assert_concealment_only_after_talk_spurts(run, sent)
    assert all(0.0 < d <= 0.07 for t, d in run.delays if t > 1.0)


def test_talk_spurt_gaps_are_silence_not_concealment() -> None:
    sent = stream(10.0, talk=lambda t: t % 2.0 < 1.0)
    run = simulate(constant(0.030, sent), duration=10.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert len(run.audio()) == len(sent)
    assert_concealment_only_after_talk_spurts(run, sent)
    assert stats.frames_silence >= 4 * (50 - 3)


def test_path_delay_step_resyncs_quickly() -> None:
    sent = stream(10.0)
    run = simulate([(s.send_time + (0.030 if s.send_time < 5.0 else 0.150), s) for s in sent], duration=10.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert stats.resets == 1
    resumed = next(t for f, t in zip(run.frames, run.pop_times, strict=True) if t > 5.0 and f.kind is FrameKind.AUDIO)
    assert resumed <= 5.0 + 0.150 + 0.2
    assert all(d <= 0.05 for t, d in run.delays if t > 6.0)


# -- stream identity and number spaces -------------------------------------------------------


def test_timestamp_and_sequence_wrap_around() -> None:
    sent = stream(5.0, ts0=MASK + 1 - 50 * FRAME, seq0=0xFFFF - 20)
    run = simulate(constant(0.030, sent), duration=5.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert stats.resets == 0 and run.during(FrameKind.CONCEALED) == 0
    assert [f.source_timestamp for f in run.audio()] == [s.packet.timestamp for s in sent]


def test_ssrc_change_resets_after_two_packets_and_keeps_both() -> None:
    first = stream(3.0)
    second = stream(3.0, ts0=999_999, seq0=40_000, ssrc=0xBEEF, t0=3.0)
    run = simulate(constant(0.030, first + second), duration=6.5)
    results = [r for _, r in run.results]
    assert results[len(first)] is PushResult.PROBATION
    assert results[len(first) + 1] is PushResult.RESET
    assert run.buffer.stats().resets == 1
    played = [f.source_timestamp for f in run.audio()]
    assert played == [s.packet.timestamp for s in first + second]


def test_stray_packet_from_another_source_is_discarded() -> None:
    sent = stream(4.0)
    stray = Sent(2.001, RtpPacket(payload_type=0, sequence_number=7, timestamp=5, ssrc=0x666, payload=b"\0" * 160), -1)
    run = simulate([*constant(0.030, sent), (2.031, stray)], duration=4.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert stats.resets == 0 and stats.packets_discarded == 1
    assert len(run.audio()) == len(sent) and run.during(FrameKind.CONCEALED) == 0


@pytest.mark.parametrize("jump", ["timestamp", "sequence"])
def test_big_jump_in_the_same_stream_resets(jump: str) -> None:
    before = stream(3.0)
    if jump == "timestamp":
        after = stream(3.0, ts0=1000 + 150 * FRAME + 10 * CLOCK, seq0=100 + 150, t0=3.0)
    else:
        after = stream(3.0, ts0=1000 + 150 * FRAME, seq0=100 + 150 + 5000, t0=3.0)
    run = simulate(constant(0.030, before + after), duration=6.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert stats.resets == 1
    assert len(run.audio()) == len(before) + len(after)


# -- packetisation -----------------------------------------------------------------------------


@pytest.mark.parametrize("ptime", [10, 30, 60])
def test_other_packet_times_are_split_and_joined_into_20ms_frames(ptime: int) -> None:
    sent = stream(6.0, ptime_ms=ptime)
    run = simulate(constant(0.030, sent), duration=6.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert run.during(FrameKind.CONCEALED) == 0 and stats.frames_partial == 0
    audio = run.audio()
    assert len(audio) == 6.0 / TICK
    assert [f.payload for f in audio] == [content(1000 + k * FRAME, FRAME) for k in range(len(audio))]


def test_a_lost_10ms_packet_leaves_half_a_frame_of_silence() -> None:
    sent = stream(2.0, ptime_ms=10)
    kept = [s for s in sent if s.index != 51]
    run = simulate(constant(0.030, kept), duration=2.5)
    check_frames(run)
    stats = run.buffer.stats()
    assert stats.frames_partial == 1 and run.during(FrameKind.CONCEALED) == 0
    partial = next(f for f in run.audio() if SILENCE in f.payload)
    assert partial.payload[80:] == b"\xff" * 80


def test_a_sender_running_ahead_overflows_and_memory_stays_bounded() -> None:
    sent = stream(3.0)
    run = simulate([(0.5 + s.index * 1e-4, s) for s in sent], duration=4.0)
    check_frames(run)
    stats = run.buffer.stats()
    assert stats.packets_overflow > 100
    assert stats.max_buffered <= 0.2 + TICK


def test_quiet_frames_are_where_drift_is_taken() -> None:
    quiet = bytes([0x7F]) * FRAME  # whatever the codec calls quiet; here a marker value

    sent = stream(300.0, rate=1 + 300e-6)
    for s in sent:
        if s.index % 250 >= 200:  # one second of quiet every five
            s.packet.payload = quiet
    buffer = JitterBuffer(silence_byte=SILENCE, is_quiet=lambda p: p == quiet)
    run = simulate(constant(0.030, sent), duration=300.0, buffer=buffer)
    stats = run.buffer.stats()
    assert 3 <= stats.frames_dropped <= 6
    loud_played = sum(1 for f in run.audio() if f.payload != quiet)
    assert loud_played == sum(1 for s in sent if s.packet.payload != quiet)


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(silence_byte=SILENCE, start_delay=0.3)
    with pytest.raises(ValueError):
        JitterBuffer(clock_rate=11025, frame_ms=20, silence_byte=SILENCE)
    with pytest.raises(ValueError):
        JitterBuffer(silence_byte=256)
