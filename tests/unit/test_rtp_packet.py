"""RtpPacket parse/serialize (RFC 3550 §5.1), RFC 5761 demux and sequence arithmetic."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.rtp.packet import RtpPacket, RtpParseError, is_rtcp, seq_distance, seq_newer

# A G.711 packet as sent by SIPp (g711a.pcap): V=2, PT=8, seq 0xe6fd, ts 0xf0, SSRC 0xdee0ee8f
SIPP_HEADER = bytes.fromhex("8088e6fd000000f0dee0ee8f")


def test_parse_fixed_header_of_a_real_packet() -> None:
    packet = RtpPacket.parse(SIPP_HEADER + b"\xd5" * 240)
    assert packet.payload_type == 8
    assert packet.marker is True
    assert packet.sequence_number == 0xE6FD
    assert packet.timestamp == 0xF0
    assert packet.ssrc == 0xDEE0EE8F
    assert packet.payload == b"\xd5" * 240
    assert packet.csrc == ()
    assert packet.extension_profile is None
    assert packet.padding_size == 0


def test_serialize_minimal_packet_bit_exact() -> None:
    packet = RtpPacket(payload_type=0, sequence_number=1, timestamp=160, ssrc=0x01020304, payload=b"\xff" * 4)
    assert packet.serialize() == bytes.fromhex("80000001000000a001020304ffffffff")


def test_csrc_extension_and_padding_layout() -> None:
    packet = RtpPacket(
        payload_type=96,
        sequence_number=7,
        timestamp=8,
        ssrc=9,
        payload=b"abc",
        marker=True,
        csrc=(0x11111111, 0x22222222),
        extension_profile=0xBEDE,
        extension_data=b"\x10\xaa\x00\x00",
        padding_size=5,
    )
    wire = packet.serialize()
    # V=2 P=1 X=1 CC=2
    assert wire[0] == 0b1011_0010
    assert wire[1] == 0x80 | 96
    assert wire[12:20] == bytes.fromhex("1111111122222222")
    assert wire[20:24] == bytes.fromhex("bede0001")
    assert wire[24:28] == b"\x10\xaa\x00\x00"
    assert wire[28:31] == b"abc"
    assert wire[-5:] == b"\x00\x00\x00\x00\x05"
    assert RtpPacket.parse(wire) == packet


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too_short"),
        (SIPP_HEADER[:11], "too_short"),
        (bytes([0x40]) + SIPP_HEADER[1:], "bad_version"),
        (bytes([0x00]) + SIPP_HEADER[1:], "bad_version"),
        (bytes([0x83]) + SIPP_HEADER[1:] + b"\x00" * 8, "bad_csrc_count"),  # CC=3, room for 2
        (bytes([0x90]) + SIPP_HEADER[1:] + b"\xbe\xde", "bad_extension"),  # truncated ext header
        (bytes([0x90]) + SIPP_HEADER[1:] + b"\xbe\xde\x00\x02" + b"\x00" * 4, "bad_extension"),
        (bytes([0xA0]) + SIPP_HEADER[1:] + b"ab\x00", "bad_padding"),  # count 0
        (bytes([0xA0]) + SIPP_HEADER[1:] + b"ab\x04", "bad_padding"),  # count > payload
    ],
)
def test_invalid_packets_raise_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RtpParseError) as info:
        RtpPacket.parse(data)
    assert info.value.reason == reason


def test_padding_may_take_the_whole_payload() -> None:
    packet = RtpPacket.parse(bytes([0xA0]) + SIPP_HEADER[1:] + b"\x00\x00\x03")
    assert packet.payload == b""
    assert packet.padding_size == 3


def test_parse_accepts_memoryview_and_returns_bytes() -> None:
    data = RtpPacket(payload_type=0, sequence_number=1, timestamp=2, ssrc=3, payload=b"xy").serialize()
    packet = RtpPacket.parse(memoryview(data))  # type: ignore[arg-type]
    assert isinstance(packet.payload, bytes)
    assert packet.payload == b"xy"


def test_serialize_rejects_what_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        RtpPacket(payload_type=0, sequence_number=0, timestamp=0, ssrc=0, csrc=tuple(range(16))).serialize()
    with pytest.raises(ValueError):
        RtpPacket(
            payload_type=0, sequence_number=0, timestamp=0, ssrc=0, extension_profile=1, extension_data=b"abc"
        ).serialize()


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension_profile=st.none() | st.integers(0, 0xFFFF),
    extension_data=st.just(b""),
    padding_size=st.integers(0, 255),
).flatmap(
    lambda p: st.binary(max_size=40).map(
        lambda ext: RtpPacket(
            payload_type=p.payload_type,
            sequence_number=p.sequence_number,
            timestamp=p.timestamp,
            ssrc=p.ssrc,
            payload=p.payload,
            marker=p.marker,
            csrc=p.csrc,
            extension_profile=p.extension_profile,
            extension_data=ext[: len(ext) // 4 * 4] if p.extension_profile is not None else b"",
            padding_size=p.padding_size,
        )
    )
)


@given(packets)
def test_parse_inverts_serialize(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.serialize()) == packet


@given(st.binary(max_size=200))
def test_parser_returns_a_packet_or_raises_rtp_parse_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError as error:
        assert error.reason in {"too_short", "bad_version", "bad_padding", "bad_extension", "bad_csrc_count"}
    else:
        # whatever parsed re-serializes to the same bytes, except random padding content
        wire = packet.serialize()
        assert len(wire) == len(data)
        assert wire[: len(wire) - packet.padding_size] == data[: len(data) - packet.padding_size]


def test_is_rtcp_rfc5761_ranges() -> None:
    rr = struct.pack("!BBHI", 0x80, 201, 1, 1)
    assert is_rtcp(rr)
    assert is_rtcp(bytes([0x81, 200]))
    assert is_rtcp(bytes([0x80, 223]))
    assert not is_rtcp(SIPP_HEADER)  # PT 8 with marker: 0x88
    assert not is_rtcp(bytes([0x80, 0x80 | 63]))  # PT 63 + marker = 191
    assert not is_rtcp(bytes([0x80, 0x80 | 96]))  # PT 96 + marker = 224
    assert not is_rtcp(b"\x80")


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [(1, 0, 1), (0, 1, -1), (0, 65535, 1), (65535, 0, -1), (5, 65530, 11), (100, 100, 0), (32767, 0, 32767)],
)
def test_seq_distance_wraps(a: int, b: int, distance: int) -> None:
    assert seq_distance(a, b) == distance
    assert seq_newer(a, b) is (distance > 0)


@given(st.integers(0, 0xFFFF), st.integers(1, 0x7FFF))
def test_seq_newer_is_antisymmetric(base: int, step: int) -> None:
    later = (base + step) & 0xFFFF
    assert seq_newer(later, base)
    assert not seq_newer(base, later)
    assert seq_distance(later, base) == step
