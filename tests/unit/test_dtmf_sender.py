"""RFC 4733 DTMF out: the sans-IO DtmfSender paced by a 20 ms playout grid, and a call's media sending digits
in place of its audio (same SSRC and sequence space), checked packet by packet and decoded back with the
receiver, also with packets lost on the way."""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Callable

import pytest

from gateway.call_media import DTMF_TONE_MS
from gateway.codecs.g711 import alaw_encode
from gateway.rtp.dtmf import DtmfReceiver, DtmfSender
from gateway.rtp.packet import RtpPacket
from tests.unit.test_call_media import Rig, params, speech_like

PT = 101
TICK = 0.02


def event(packet: RtpPacket) -> tuple[int, bool, int]:
    code, flags, duration = struct.unpack("!BBH", packet.payload)
    return code, bool(flags & 0x80), duration


def on_grid(sender: DtmfSender, ticks: int, start: float = 5.0) -> list[tuple[int, RtpPacket]]:
    """Drive the sender the way the playout does: one look per 20 ms tick, at most one packet per tick."""
    out: list[tuple[int, RtpPacket]] = [(0, p) for p in sender.packets_to_send()]
    for tick in range(1, ticks):
        now = start + tick * TICK
        timer = sender.get_timer()
        if timer is not None and timer <= now + TICK / 2:
            sender.handle_timer(max(now, timer))
        packets = sender.packets_to_send()
        assert len(packets) <= 1
        out += [(tick, p) for p in packets]
    return out


def grid_sender(seq: Callable[[], int]) -> DtmfSender:
    return DtmfSender(payload_type=PT, ssrc=0x1234, next_sequence_number=seq, update_interval=TICK,
                      inter_digit_gap=0.06)


def test_one_digit_on_the_20ms_grid() -> None:
    counter = itertools.count(65533)
    sender = grid_sender(lambda: next(counter) & 0xFFFF)
    sender.send_digits("5", timestamp=0xFFFFFF00, now=5.0, duration_ms=100)
    sent = on_grid(sender, 20)
    assert [tick for tick, _ in sent] == [0, 1, 2, 3, 4, 5, 6, 7]  # one packet per tick, no gap
    packets = [p for _, p in sent]
    # §2.5.1.2: marker on the first packet only; one timestamp (the event's start) for all packets
    assert [p.marker for p in packets] == [True] + [False] * 7
    assert {p.timestamp for p in packets} == {0xFFFFFF00}
    # the duration grows by 160 samples (20 ms) per packet up to 800 (100 ms), then the end packet x3
    assert [event(p) for p in packets] == [
        (5, False, 0), (5, False, 160), (5, False, 320), (5, False, 480), (5, False, 640),
        (5, True, 800), (5, True, 800), (5, True, 800),
    ]
    assert [p.sequence_number for p in packets] == [65533, 65534, 65535, 0, 1, 2, 3, 4]
    assert {p.ssrc for p in packets} == {0x1234} and {p.payload_type for p in packets} == {PT}
    assert not sender.busy


def test_digits_follow_each_other_with_a_gap_and_advancing_timestamps() -> None:
    counter = itertools.count()
    sender = grid_sender(lambda: next(counter))
    sender.send_digits("12#", timestamp=8000, now=5.0, duration_ms=100)
    sent = on_grid(sender, 60)
    starts = [(tick, p) for tick, p in sent if p.marker]
    assert [event(p)[0] for _, p in starts] == [1, 2, 11]
    ticks = [tick for tick, _ in starts]
    # 100 ms of tone, then 100 ms without: the two end retransmissions and 60 ms without any packet
    assert ticks == [0, 10, 20]
    # the timestamp of each event is the audio clock at its start tick
    assert [p.timestamp for _, p in starts] == [8000 + 160 * t for t in ticks]
    silent = set(range(0, 28)) - {tick for tick, _ in sent}
    assert silent == {8, 9, 18, 19}


@pytest.mark.parametrize(
    ("lost", "timeouts"),
    [
        (set(), 0),
        ({0}, 0),  # the start packet (with the marker): the updates still carry the event
        ({5}, 0),  # the first end packet: a retransmission ends the event
        ({5, 6, 7}, 1),  # every end packet: the receiver ends the event by timeout
        ({8}, 0),  # the second digit's start packet
    ],
)
def test_round_trip_through_the_receiver(lost: set[int], timeouts: int) -> None:
    counter = itertools.count(100)
    sender = grid_sender(lambda: next(counter))
    sender.send_digits("12#", timestamp=0, now=5.0, duration_ms=DTMF_TONE_MS)
    receiver = DtmfReceiver(PT)
    sent = on_grid(sender, 40)
    for i, (tick, packet) in enumerate(sent):
        if i not in lost:
            receiver.receive_packet(RtpPacket.parse(packet.serialize()), 5.0 + tick * TICK)
    now = 5.0 + 40 * TICK
    receiver.handle_timer(now + 1.0)
    digits = receiver.pop_events()
    assert "".join(d.digit for d in digits) == "12#"
    assert sum(d.ended_by_timeout for d in digits) == timeouts
    assert all(d.duration_ms in (80, 100) for d in digits)  # 80: the last update before the lost ends


class _Sink:
    def __init__(self) -> None:
        self.frames = 0

    def on_voice_frame(self, pcm: bytes, now: float) -> None:
        pass

    def on_tick(self, encoded: bytes | None, encoding: str, pcm: bytes | None, now: float) -> None:
        pass

    def next_frame(self, now: float) -> bytes | None:
        self.frames += 1
        return speech_like(0.02).tobytes()


def test_call_media_sends_digits_in_place_of_the_assistant_audio() -> None:
    async def go() -> tuple[Rig, _Sink, list[RtpPacket], bool]:
        rig = Rig(params("PCMA", 8), echo=False)
        sink = _Sink()
        rig.media.conversation = sink
        rig.deliver(rig.packet(alaw_encode(bytes(320)), marker=True))
        for _ in range(10):
            rig.step()
        frames_before = sink.frames
        done = rig.media.send_dtmf("12#")
        for _ in range(80):
            rig.step()
        await asyncio.sleep(0)
        out = rig.sent_rtp()
        # the assistant's audio waited while the digits played: fewer frames taken than ticks run
        assert sink.frames - frames_before < 80 - 3 * 8
        return rig, sink, out, done.done() and done.exception() is None

    rig, _sink, out, done = asyncio.run(go())
    assert done
    assert {p.ssrc for p in out} == {rig.media.ssrc}
    assert {p.payload_type for p in out} == {8, 101}
    # one sequence space: audio and events numbered +1 each, no gap, no repeat
    assert all((b.sequence_number - a.sequence_number) & 0xFFFF == 1 for a, b in itertools.pairwise(out))
    events = [p for p in out if p.payload_type == 101]
    assert len(events) == 3 * 8
    # each event's timestamp is on the audio clock: audio before it is exactly whole ticks earlier
    first = out.index(events[0])
    assert (events[0].timestamp - out[first - 1].timestamp) & 0xFFFFFFFF == 160
    receiver = DtmfReceiver(101)
    for p in events:
        receiver.receive_packet(p, 0.0)
    assert "".join(d.digit for d in receiver.pop_events()) == "12#"
    # the audio after the digits starts a new talk spurt
    after = out[out.index(events[-1]) + 1]
    assert after.payload_type == 8 and after.marker
    assert rig.media.digits_sent == 3
    assert rig.metrics.dtmf_sent.labels("rfc4733")._value.get() == 3


def test_send_dtmf_refuses_what_it_cannot_send() -> None:
    async def go() -> None:
        rig = Rig(params("PCMA", 8))
        with pytest.raises(ValueError, match="not DTMF"):
            rig.media.send_dtmf("12x")
        no_events = params("PCMA", 8)
        from dataclasses import replace

        rig.media.apply(replace(no_events, dtmf_payload_type=None))
        assert not rig.media.can_send_rfc4733
        with pytest.raises(ValueError, match="telephone-event"):
            rig.media.send_dtmf("1")

    asyncio.run(go())
