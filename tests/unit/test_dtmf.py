"""RFC 4733 telephone-event receiver and sender, and SIP INFO DTMF bodies."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gateway.rtp.dtmf import DtmfDigit, DtmfReceiver, DtmfSender
from gateway.rtp.packet import RtpPacket
from gateway.util.dtmf_info import DtmfInfoError, parse_dtmf_info
from tests.helpers.pcap import read_udp

SIPP_PCAPS = Path("/usr/share/sip-tester")
PCAP_DIGITS = {
    "0": "0", "1": "1", "2": "2", "3": "3", "4": "4", "5": "5",
    "6": "6", "7": "7", "8": "8", "9": "9", "star": "*", "pound": "#",
}  # fmt: skip
PT = 101


def event(
    code: int, duration: int, *, end: bool = False, ts: int = 8000, seq: int = 1, marker: bool = False
) -> RtpPacket:
    payload = struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)
    return RtpPacket(
        payload_type=PT, sequence_number=seq, timestamp=ts, ssrc=7, payload=payload, marker=marker
    )


def feed(receiver: DtmfReceiver, packets: list[RtpPacket], *, start: float = 0.0) -> list[DtmfDigit]:
    for i, packet in enumerate(packets):
        receiver.receive_packet(packet, start + i * 0.02)
    return receiver.pop_events()


# -- receiver ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "digit"), sorted(PCAP_DIGITS.items()))
def test_sipp_capture_gives_each_digit_exactly_once(name: str, digit: str) -> None:
    path = SIPP_PCAPS / f"dtmf_2833_{name}.pcap"
    if not path.exists():
        pytest.skip("the sip-tester package's DTMF captures are not installed")
    receiver = DtmfReceiver(PT)
    events: list[DtmfDigit] = []
    for datagram in read_udp(path):
        receiver.receive_packet(RtpPacket.parse(datagram.payload), datagram.time)
        events += receiver.pop_events()
    receiver.handle_timer(1e12)
    events += receiver.pop_events()
    assert [e.digit for e in events] == [digit]
    assert events[0].duration_ms == 280  # final duration 2240 samples at 8 kHz
    assert not events[0].ended_by_timeout


def test_all_sipp_captures_back_to_back_give_the_digit_sequence() -> None:
    names = sorted(PCAP_DIGITS)
    paths = [SIPP_PCAPS / f"dtmf_2833_{name}.pcap" for name in names]
    if not all(p.exists() for p in paths):
        pytest.skip("the sip-tester package's DTMF captures are not installed")
    receiver = DtmfReceiver(PT)
    digits = []
    for path in paths:
        for datagram in read_udp(path):
            receiver.receive_packet(RtpPacket.parse(datagram.payload), datagram.time)
        digits += [e.digit for e in receiver.pop_events()]
    assert digits == [PCAP_DIGITS[name] for name in names]


def test_marker_bit_is_not_required() -> None:
    # peers that never set the marker bit must not lose their digits
    packets = [event(5, 160), event(5, 320), event(5, 480, end=True), event(5, 480, end=True)]
    assert [e.digit for e in feed(DtmfReceiver(PT), packets)] == ["5"]


def test_three_end_packets_give_one_digit() -> None:
    packets = [event(1, 0, marker=True), event(1, 400)] + [event(1, 800, end=True)] * 3
    events = feed(DtmfReceiver(PT), packets)
    assert events == [DtmfDigit(digit="1", duration_ms=100, timestamp=8000)]


def test_start_packet_lost_still_detected() -> None:
    events = feed(DtmfReceiver(PT), [event(9, 800, end=True)] * 3)
    assert [e.digit for e in events] == ["9"]


def test_same_digit_twice_is_two_events_by_timestamp() -> None:
    packets = [event(2, 800, end=True, ts=1000)] * 3 + [event(2, 800, end=True, ts=3000)] * 3
    assert [e.digit for e in feed(DtmfReceiver(PT), packets)] == ["2", "2"]


def test_missing_end_is_emitted_after_the_timeout() -> None:
    receiver = DtmfReceiver(PT, end_timeout=0.5)
    feed(receiver, [event(3, 160), event(3, 320)])
    assert receiver.pop_events() == []
    timer = receiver.get_timer()
    assert timer is not None
    assert timer == pytest.approx(0.02 + 0.5)
    receiver.handle_timer(timer - 0.001)
    assert receiver.pop_events() == []
    receiver.handle_timer(timer)
    assert receiver.pop_events() == [
        DtmfDigit(digit="3", duration_ms=40, timestamp=8000, ended_by_timeout=True)
    ]
    assert receiver.get_timer() is None
    # the end packets arriving after all do not repeat the digit
    receiver.receive_packet(event(3, 800, end=True), 1.0)
    assert receiver.pop_events() == []


def test_a_new_event_ends_the_previous_one_without_end() -> None:
    packets = [
        event(4, 160, ts=1000),
        event(4, 320, ts=1000),
        event(6, 160, ts=5000),
        event(6, 480, ts=5000, end=True),
    ]
    events = feed(DtmfReceiver(PT), packets)
    assert [(e.digit, e.ended_by_timeout) for e in events] == [("4", True), ("6", False)]


def test_late_update_of_an_older_event_is_ignored() -> None:
    receiver = DtmfReceiver(PT)
    assert [e.digit for e in feed(receiver, [event(4, 800, ts=1000, end=True), event(6, 160, ts=5000)])] == [
        "4"
    ]
    receiver.receive_packet(event(4, 400, ts=1000), 1.0)  # reordered, already ended
    receiver.receive_packet(event(8, 400, ts=900), 1.0)  # older than the current event
    receiver.receive_packet(event(6, 480, ts=5000, end=True), 1.1)
    assert [e.digit for e in receiver.pop_events()] == ["6"]


@pytest.mark.parametrize(
    ("code", "digit"), [(10, "*"), (11, "#"), (12, "A"), (13, "B"), (14, "C"), (15, "D"), (0, "0")]
)
def test_event_codes(code: int, digit: str) -> None:
    assert [e.digit for e in feed(DtmfReceiver(PT), [event(code, 800, end=True)])] == [digit]


def test_flash_and_other_payload_types_are_ignored() -> None:
    receiver = DtmfReceiver(PT)
    assert feed(receiver, [event(16, 800, end=True)] * 3) == []
    audio = RtpPacket(payload_type=0, sequence_number=1, timestamp=1, ssrc=7, payload=b"\x00\x00\x00\x00")
    receiver.receive_packet(audio, 0.0)
    short = RtpPacket(payload_type=PT, sequence_number=1, timestamp=1, ssrc=7, payload=b"\x01")
    receiver.receive_packet(short, 0.0)
    assert receiver.pop_events() == []
    assert receiver.malformed == 1


# -- sender --------------------------------------------------------------------------


class SeqAllocator:
    def __init__(self, start: int) -> None:
        self.next = start

    def __call__(self) -> int:
        value = self.next
        self.next = (self.next + 1) & 0xFFFF
        return value


def run(sender: DtmfSender, until: float, now: float = 0.0) -> list[tuple[float, RtpPacket]]:
    sent = [(now, p) for p in sender.packets_to_send()]
    while (timer := sender.get_timer()) is not None and timer <= until:
        sender.handle_timer(timer)
        sent += [(timer, p) for p in sender.packets_to_send()]
    return sent


def decode(packet: RtpPacket) -> tuple[int, bool, int]:
    code, flags, duration = struct.unpack("!BBH", packet.payload)
    return code, bool(flags & 0x80), duration


def test_sender_packet_sequence_for_one_digit() -> None:
    seq = SeqAllocator(65534)
    sender = DtmfSender(payload_type=PT, ssrc=0x55, next_sequence_number=seq)
    sender.send_digits("7", timestamp=123456, now=0.0, duration_ms=100)
    assert sender.busy
    sent = run(sender, 10.0)
    assert not sender.busy
    times = [t for t, _ in sent]
    packets = [p for _, p in sent]
    assert [decode(p) for p in packets] == [
        (7, False, 0),
        (7, False, 400),
        (7, True, 800),
        (7, True, 800),
        (7, True, 800),
    ]
    assert [p.marker for p in packets] == [True, False, False, False, False]
    assert {p.timestamp for p in packets} == {123456}
    assert {p.payload_type for p in packets} == {PT}
    # sequence numbers come from the audio stream's allocator, wrapping
    assert [p.sequence_number for p in packets] == [65534, 65535, 0, 1, 2]
    assert seq.next == 3
    # updates and end retransmissions every 50 ms
    assert times == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20])


def test_sender_queues_digits_on_the_audio_clock() -> None:
    sender = DtmfSender(payload_type=PT, ssrc=1, next_sequence_number=SeqAllocator(0), inter_digit_gap=0.05)
    sender.send_digits("12", timestamp=1000, now=10.0, duration_ms=100)
    sent = run(sender, 100.0, now=10.0)
    starts = [(t, p) for t, p in sent if p.marker]
    assert [decode(p)[0] for _, p in starts] == [1, 2]
    (t1, p1), (t2, p2) = starts
    assert p1.timestamp == 1000
    # the second digit's timestamp follows the audio clock anchored at (1000, 10.0)
    assert p2.timestamp == 1000 + round((t2 - t1) * 8000)
    assert t2 - t1 >= 0.1 + 0.05


def test_sender_rejects_non_digits_and_bad_durations() -> None:
    sender = DtmfSender(payload_type=PT, ssrc=1, next_sequence_number=SeqAllocator(0))
    with pytest.raises(ValueError):
        sender.send_digits("1x", timestamp=0, now=0.0)
    with pytest.raises(ValueError):
        sender.send_digits("1", timestamp=0, now=0.0, duration_ms=9000)
    assert not sender.busy


def test_sender_to_receiver_loopback() -> None:
    sender = DtmfSender(payload_type=PT, ssrc=1, next_sequence_number=SeqAllocator(100))
    sender.send_digits("123*#ABCD0", timestamp=0, now=0.0, duration_ms=120)
    receiver = DtmfReceiver(PT)
    for t, packet in run(sender, 100.0):
        receiver.receive_packet(RtpPacket.parse(packet.serialize()), t)
    events = receiver.pop_events()
    assert "".join(e.digit for e in events) == "123*#ABCD0"
    assert {e.duration_ms for e in events} == {120}
    assert not any(e.ended_by_timeout for e in events)


# -- SIP INFO ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
        ("application/dtmf-relay", b"Signal= *\r\nDuration= 250", ("*", 250)),
        ("Application/DTMF-Relay; charset=us-ascii", b"signal=#\nduration=100\n", ("#", 100)),
        ("application/dtmf-relay", b"Signal=11\r\nDuration=100", ("#", 100)),
        ("application/dtmf-relay", b"Signal=a\r\n", ("A", 250)),
        ("application/dtmf-relay", b"Signal=1\r\nDuration=0", ("1", 250)),
        ("application/dtmf", b"5", ("5", 250)),
        ("application/dtmf", b" 9\r\n", ("9", 250)),
    ],
)
def test_info_bodies(content_type: str, body: bytes, expected: tuple[str, int]) -> None:
    assert parse_dtmf_info(content_type, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/sdp", b"v=0", "unsupported_content_type"),
        ("application/dtmf-relay", b"", "empty_body"),
        ("application/dtmf-relay", b"Duration=160", "missing_signal"),
        ("application/dtmf-relay", b"Signal=16\r\nDuration=160", "bad_signal"),
        ("application/dtmf-relay", b"Signal=55", "bad_signal"),
        ("application/dtmf-relay", b"Signal=5\r\nDuration=-3", "bad_duration"),
        ("application/dtmf-relay", b"Signal=5\r\nDuration=99999999", "bad_duration"),
        ("application/dtmf-relay", b"Signal=\xff", "bad_encoding"),
        ("application/dtmf", b"x", "bad_signal"),
    ],
)
def test_bad_info_bodies(content_type: str, body: bytes, reason: str) -> None:
    with pytest.raises(DtmfInfoError) as info:
        parse_dtmf_info(content_type, body)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)
