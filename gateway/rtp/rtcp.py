"""RTCP packets: SR, RR, SDES, BYE and compound packets (RFC 3550 §6.4, §6.5, §6.6, §6.1).

Also the NTP timestamp helpers used by sender reports and the round-trip time
computation from LSR/DLSR (RFC 3550 §6.4.1: "A - LSR - DLSR" in the "middle 32 bits"
NTP format, units of 1/65536 s).

Packet types we do not interpret (APP, RTPFB, PSFB, XR...) are kept as
:class:`RtcpUnknown` so a compound packet always parses whole.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

__all__ = [
    "NTP_EPOCH_OFFSET",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "SDES_CNAME",
    "ReportBlock",
    "RtcpBye",
    "RtcpPacket",
    "RtcpParseError",
    "RtcpReceiverReport",
    "RtcpSenderReport",
    "RtcpSourceDescription",
    "RtcpUnknown",
    "SdesChunk",
    "ntp_middle",
    "ntp_timestamp",
    "parse_compound",
    "round_trip_time",
    "serialize_compound",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
SDES_END = 0
SDES_CNAME = 1
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01

_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packet count, octet count
_REPORT_BLOCK = struct.Struct("!IIIIII")
_U32 = struct.Struct("!I")


class RtcpParseError(Exception):
    """The peer sent an invalid RTCP packet; ``reason`` is a snake_case metric label:
    ``too_short``, ``bad_version``, ``bad_length``, ``bad_padding``, ``bad_report_count``,
    ``bad_sdes``, ``bad_bye``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point: lost/expected * 256
    cumulative_lost: int  # signed 24-bit
    highest_sequence: int  # extended highest sequence number received
    jitter: int  # interarrival jitter, timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP timestamp, 0 if none
    dlsr: int = 0  # delay since that SR, 1/65536 s

    @property
    def fraction_lost_ratio(self) -> float:
        return self.fraction_lost / 256.0

    def _pack(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def _unpack(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(
            ssrc=ssrc,
            fraction_lost=lost_word >> 24,
            cumulative_lost=lost,
            highest_sequence=highest,
            jitter=jitter,
            lsr=lsr,
            dlsr=dlsr,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpSenderReport:
    """SR, packet type 200 (RFC 3550 §6.4.1)."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""  # profile-specific extension


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpReceiverReport:
    """RR, packet type 201 (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()  # (item type, value), e.g. (SDES_CNAME, b"user@host")

    @property
    def cname(self) -> str | None:
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpSourceDescription:
    """SDES, packet type 202 (RFC 3550 §6.5)."""

    chunks: tuple[SdesChunk, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpBye:
    """BYE, packet type 203 (RFC 3550 §6.6)."""

    sources: tuple[int, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpUnknown:
    """Any other packet type, kept opaque (APP, RTPFB, PSFB, XR...)."""

    packet_type: int
    count: int  # the 5-bit field after the padding bit
    payload: bytes = b""


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpSourceDescription | RtcpBye | RtcpUnknown


# -- parsing -----------------------------------------------------------------


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a (compound) RTCP datagram; raise :class:`RtcpParseError` and nothing else.

    Checks from RFC 3550 Appendix A.2: version 2 in every packet and lengths that add up
    to the datagram size. The "first packet is SR or RR" rule is not enforced so that
    reduced-size RTCP (RFC 5506) is accepted.
    """
    packets: list[RtcpPacket] = []
    offset = 0
    total = len(data)
    if total < 4:
        raise RtcpParseError("too_short", f"{total} bytes")
    while offset < total:
        if total - offset < 4:
            raise RtcpParseError("bad_length", "trailing bytes after the last packet")
        first, packet_type, length_words = _HEADER.unpack_from(data, offset)
        if first >> 6 != 2:
            raise RtcpParseError("bad_version", f"version {first >> 6}")
        end = offset + 4 * (length_words + 1)
        if end > total:
            raise RtcpParseError("bad_length", f"length {length_words} overruns the datagram")
        body_end = end
        if first & 0x20:
            # RFC 3550 §6.4.1: "the last octet of the padding is a count of how many
            # padding octets should be ignored, including itself"
            padding = data[end - 1]
            if padding == 0 or padding > end - offset - 4:
                raise RtcpParseError("bad_padding", f"padding count {padding}")
            body_end = end - padding
        packets.append(_parse_one(packet_type, first & 0x1F, data, offset + 4, body_end))
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, data: bytes, start: int, end: int) -> RtcpPacket:
    if packet_type == RTCP_SR:
        need = _SENDER_INFO.size + count * _REPORT_BLOCK.size
        if end - start < need:
            raise RtcpParseError("bad_report_count", f"SR with {count} blocks needs {need} bytes")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(data, start)
        blocks_at = start + _SENDER_INFO.size
        return RtcpSenderReport(
            ssrc=ssrc,
            ntp_timestamp=ntp,
            rtp_timestamp=rtp_ts,
            packet_count=packets,
            octet_count=octets,
            reports=_parse_blocks(data, blocks_at, count),
            extension=bytes(data[blocks_at + count * _REPORT_BLOCK.size : end]),
        )
    if packet_type == RTCP_RR:
        need = 4 + count * _REPORT_BLOCK.size
        if end - start < need:
            raise RtcpParseError("bad_report_count", f"RR with {count} blocks needs {need} bytes")
        (ssrc,) = _U32.unpack_from(data, start)
        return RtcpReceiverReport(
            ssrc=ssrc,
            reports=_parse_blocks(data, start + 4, count),
            extension=bytes(data[start + 4 + count * _REPORT_BLOCK.size : end]),
        )
    if packet_type == RTCP_SDES:
        return _parse_sdes(count, data, start, end)
    if packet_type == RTCP_BYE:
        return _parse_bye(count, data, start, end)
    return RtcpUnknown(packet_type=packet_type, count=count, payload=bytes(data[start:end]))


def _parse_blocks(data: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    return tuple(ReportBlock._unpack(data, offset + i * _REPORT_BLOCK.size) for i in range(count))


def _parse_sdes(count: int, data: bytes, start: int, end: int) -> RtcpSourceDescription:
    chunks: list[SdesChunk] = []
    pos = start
    for _ in range(count):
        if end - pos < 4:
            raise RtcpParseError("bad_sdes", "truncated chunk")
        (ssrc,) = _U32.unpack_from(data, pos)
        pos += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if pos >= end:
                raise RtcpParseError("bad_sdes", "chunk without a terminating null item")
            item_type = data[pos]
            if item_type == SDES_END:
                # RFC 3550 §6.5: "followed by one to four null octets ... to the next
                # 32-bit boundary"
                pos = (pos + 4) & ~3
                break
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RtcpParseError("bad_sdes", "item overruns the packet")
            length = data[pos + 1]
            items.append((item_type, bytes(data[pos + 2 : pos + 2 + length])))
            pos += 2 + length
        if pos > end:
            raise RtcpParseError("bad_sdes", "chunk padding overruns the packet")
        chunks.append(SdesChunk(ssrc=ssrc, items=tuple(items)))
    return RtcpSourceDescription(chunks=tuple(chunks))


def _parse_bye(count: int, data: bytes, start: int, end: int) -> RtcpBye:
    if end - start < 4 * count:
        raise RtcpParseError("bad_bye", f"{count} sources do not fit")
    sources = struct.unpack_from(f"!{count}I", data, start)
    pos = start + 4 * count
    reason = ""
    if pos < end:
        length = data[pos]
        if pos + 1 + length > end:
            raise RtcpParseError("bad_bye", "reason overruns the packet")
        reason = bytes(data[pos + 1 : pos + 1 + length]).decode("utf-8", "replace")
    return RtcpBye(sources=tuple(sources), reason=reason)


# -- serializing ---------------------------------------------------------------


def _pack(packet_type: int, count: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise ValueError("an RTCP packet body must be a multiple of 4 bytes")
    if not 0 <= count <= 31:
        raise ValueError(f"an RTCP count field holds 0..31, got {count}")
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


def serialize(packet: RtcpPacket) -> bytes:
    """Wire form of one RTCP packet (no padding). ``ValueError`` on unencodable values."""
    match packet:
        case RtcpSenderReport():
            body = _SENDER_INFO.pack(
                packet.ssrc,
                packet.ntp_timestamp,
                packet.rtp_timestamp & 0xFFFFFFFF,
                packet.packet_count & 0xFFFFFFFF,
                packet.octet_count & 0xFFFFFFFF,
            )
            body += b"".join(block._pack() for block in packet.reports) + packet.extension
            return _pack(RTCP_SR, len(packet.reports), body)
        case RtcpReceiverReport():
            body = _U32.pack(packet.ssrc) + b"".join(block._pack() for block in packet.reports)
            return _pack(RTCP_RR, len(packet.reports), body + packet.extension)
        case RtcpSourceDescription():
            parts = []
            for chunk in packet.chunks:
                chunk_bytes = bytearray(_U32.pack(chunk.ssrc))
                for item_type, value in chunk.items:
                    if not 1 <= item_type <= 255 or len(value) > 255:
                        raise ValueError("an SDES item has a type 1..255 and at most 255 octets")
                    chunk_bytes += bytes((item_type, len(value))) + value
                # null item terminator, then pad to a 32-bit boundary
                chunk_bytes += bytes(4 - (len(chunk_bytes) % 4))
                parts.append(bytes(chunk_bytes))
            return _pack(RTCP_SDES, len(packet.chunks), b"".join(parts))
        case RtcpBye():
            body = b"".join(_U32.pack(source) for source in packet.sources)
            if packet.reason:
                reason = packet.reason.encode()
                if len(reason) > 255:
                    raise ValueError("a BYE reason holds at most 255 octets")
                text = bytes((len(reason),)) + reason
                body += text + bytes(-len(text) % 4)
            return _pack(RTCP_BYE, len(packet.sources), body)
        case RtcpUnknown():
            return _pack(packet.packet_type, packet.count, packet.payload)
    raise TypeError(f"not an RTCP packet: {packet!r}")


def serialize_compound(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """Concatenate packets into one compound datagram (RFC 3550 §6.1)."""
    return b"".join(serialize(packet) for packet in packets)


# -- NTP time and round-trip time --------------------------------------------------


def ntp_timestamp(unix_seconds: float) -> int:
    """64-bit NTP timestamp (seconds since 1900 in the high 32 bits) for a Unix time."""
    seconds = math.floor(unix_seconds)
    fraction = round((unix_seconds - seconds) * 2**32)
    return (((seconds + NTP_EPOCH_OFFSET) << 32) + fraction) & 0xFFFFFFFFFFFFFFFF


def ntp_middle(ntp: int) -> int:
    """The "middle 32 bits" of a 64-bit NTP timestamp, as carried in LSR (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def round_trip_time(arrival_ntp: int, lsr: int, dlsr: int) -> float | None:
    """Round-trip time in seconds from a report block received at ``arrival_ntp`` (64-bit).

    RFC 3550 §6.4.1: the sender "computes the total round-trip time A-LSR using the last
    SR timestamp (LSR) field, and then subtracting this field [DLSR]". ``None`` when the
    peer has not received an SR yet (LSR = 0). A result below zero (the peer overstated
    DLSR) is reported as 0.
    """
    if lsr == 0:
        return None
    rtt = (ntp_middle(arrival_ntp) - lsr - dlsr) & 0xFFFFFFFF
    if rtt >= 0x80000000:
        return 0.0
    return rtt / 65536.0
