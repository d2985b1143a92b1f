"""A tiny classic-pcap reader: enough to pull UDP payloads out of Ethernet/IPv4 captures.

Handles both byte orders and the microsecond and nanosecond magic numbers, link types
Ethernet (1), raw IPv4 (101) and Linux cooked capture (113). Not a general pcap library.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpDatagram:
    time: float  # capture time, seconds since the epoch
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def _ipv4(address: bytes) -> str:
    return ".".join(str(octet) for octet in address)


def read_udp(path: Path) -> list[UdpDatagram]:
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    (linktype,) = struct.unpack_from(endian + "I", data, 20)
    out: list[UdpDatagram] = []
    offset = 24
    while offset + 16 <= len(data):
        seconds, fraction, captured, _original = struct.unpack_from(endian + "IIII", data, offset)
        offset += 16
        frame = data[offset : offset + captured]
        offset += captured
        if linktype == LINKTYPE_ETHERNET:
            ethertype = struct.unpack_from("!H", frame, 12)[0]
            ip = frame[14:]
            if ethertype == 0x8100:  # 802.1Q tag
                ethertype = struct.unpack_from("!H", frame, 16)[0]
                ip = frame[18:]
        elif linktype == LINKTYPE_LINUX_SLL:
            ethertype = struct.unpack_from("!H", frame, 14)[0]
            ip = frame[16:]
        elif linktype == LINKTYPE_RAW:
            ethertype, ip = 0x0800, frame
        else:
            raise ValueError(f"{path}: unsupported link type {linktype}")
        if ethertype != 0x0800 or len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue  # not IPv4/UDP
        header_len = (ip[0] & 0x0F) * 4
        total_len = struct.unpack_from("!H", ip, 2)[0]
        udp = ip[header_len:total_len]
        sport, dport, udp_len = struct.unpack_from("!HHH", udp, 0)
        out.append(
            UdpDatagram(
                time=seconds + fraction / (1e9 if nano else 1e6),
                src=(_ipv4(ip[12:16]), sport),
                dst=(_ipv4(ip[16:20]), dport),
                payload=bytes(udp[8:udp_len]),
            )
        )
    return out
