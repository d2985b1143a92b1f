"""RTP fixed header, CSRC list, header extension and padding (RFC 3550 §5.1, §5.3.1).

Also the RTP/RTCP demultiplexing rule for rtcp-mux peers (RFC 5761 §4) and 16-bit
sequence-number arithmetic with wrap-around (RFC 3550 §5.1, Appendix A.1).

Parsing is per packet, so it is kept cheap: one ``struct.unpack_from`` on the 12-byte
fixed header and slices for the rest, no intermediate objects beyond the result.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "RtpPacket",
    "RtpParseError",
    "is_rtcp",
    "seq_distance",
    "seq_newer",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12

_FIXED_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_unpack_fixed = _FIXED_HEADER.unpack_from
_pack_fixed = _FIXED_HEADER.pack


class RtpParseError(Exception):
    """The peer sent a datagram that is not a valid RTP packet.

    ``reason`` is a short snake_case label, suitable as a metric label value:
    ``too_short``, ``bad_version``, ``bad_padding``, ``bad_extension``, ``bad_csrc_count``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    ``extension_profile`` is ``None`` when the X bit is clear; otherwise it holds the
    16-bit "defined by profile" field and ``extension_data`` the extension body, whose
    length must be a multiple of 4 bytes (RFC 3550 §5.3.1: "length in 32-bit words").
    ``padding_size`` is the number of padding octets including the final count octet;
    0 means the P bit is clear.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension_data: bytes = b""
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes | memoryview) -> RtpPacket:
        """Parse one datagram; raise :class:`RtpParseError` (and nothing else) if invalid."""
        length = len(data)
        if length < RTP_HEADER_SIZE:
            raise RtpParseError("too_short", f"{length} bytes, the fixed header is 12")
        first, second, seq, timestamp, ssrc = _unpack_fixed(data, 0)
        if first == 0x80:
            # the common case: version 2, no padding, no extension, no CSRC
            return cls(second & 0x7F, seq, timestamp, ssrc, bytes(data[RTP_HEADER_SIZE:]), second > 0x7F)
        if first >> 6 != RTP_VERSION:
            raise RtpParseError("bad_version", f"version {first >> 6}")
        offset = RTP_HEADER_SIZE
        csrc: tuple[int, ...] = ()
        cc = first & 0x0F
        if cc:
            end = offset + 4 * cc
            if end > length:
                raise RtpParseError("bad_csrc_count", f"CC={cc} needs {end} bytes, have {length}")
            csrc = struct.unpack_from(f"!{cc}I", data, offset)
            offset = end
        extension_profile: int | None = None
        extension_data = b""
        if first & 0x10:
            if offset + 4 > length:
                raise RtpParseError("bad_extension", "truncated extension header")
            extension_profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            offset += 4
            end = offset + 4 * words
            if end > length:
                raise RtpParseError("bad_extension", f"extension of {words} words overruns the packet")
            extension_data = bytes(data[offset:end])
            offset = end
        padding_size = 0
        end = length
        if first & 0x20:
            # RFC 3550 §5.1: "The last octet of the padding contains a count of how many
            # padding octets should be ignored, including itself."
            padding_size = data[-1]
            if padding_size == 0 or offset + padding_size > length:
                raise RtpParseError("bad_padding", f"padding count {padding_size}")
            end = length - padding_size
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrc=csrc,
            extension_profile=extension_profile,
            extension_data=extension_data,
            padding_size=padding_size,
        )

    def serialize(self) -> bytes:
        """Build the wire form. Raises ``ValueError`` on values that cannot be encoded (our misuse)."""
        cc = len(self.csrc)
        if cc > 15:
            raise ValueError(f"at most 15 CSRCs fit in the header, got {cc}")
        if not 0 <= self.padding_size <= 255:
            raise ValueError(f"padding_size must be 0..255, got {self.padding_size}")
        first = (RTP_VERSION << 6) | cc
        if self.padding_size:
            first |= 0x20
        if self.extension_profile is not None:
            first |= 0x10
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        header = _pack_fixed(
            first,
            second,
            self.sequence_number & 0xFFFF,
            self.timestamp & 0xFFFFFFFF,
            self.ssrc & 0xFFFFFFFF,
        )
        if not cc and self.extension_profile is None and not self.padding_size:
            return header + self.payload
        parts = [header]
        if cc:
            parts.append(struct.pack(f"!{cc}I", *self.csrc))
        if self.extension_profile is not None:
            if len(self.extension_data) % 4:
                raise ValueError("extension_data length must be a multiple of 4 bytes")
            parts.append(_EXTENSION_HEADER.pack(self.extension_profile, len(self.extension_data) // 4))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes((self.padding_size,)))
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4 demultiplexing: an RTCP packet has its second octet in 192..223.

    "the packet type field [...] falls in the range 192-223" for the RTCP types in use
    (SR=200 .. APP=204, RTPFB/PSFB 205/206, XR=207) once the marker bit is taken into
    account, which keeps the RTP payload types 64-95 unused on rtcp-mux sessions.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def seq_distance(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in 16-bit sequence space, in -32768..32767.

    ``seq_distance(1, 65535) == 2``; ``seq_distance(65535, 1) == -2``.
    """
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_newer(a: int, b: int) -> bool:
    """True when sequence number ``a`` comes after ``b`` (with 16-bit wrap-around)."""
    return seq_distance(a, b) > 0
