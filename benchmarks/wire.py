"""The gateway's outbound RTP as the wire sees it: a tcpdump capture on loopback and the send-interval jitter
of every stream in it.

Send-interval jitter (issue 7) is, for two consecutive packets of one stream, how far the time between their
departures is from the time between their RTP timestamps (20 ms for consecutive G.711 packets):
``|(t2 - t1) - (ts2 - ts1) / 8000|``. It is what a receiver's jitter buffer has to absorb from us. The capture
timestamps are the kernel's, taken when the datagram passes the loopback device, so they include the time our
own ``sendto`` calls waited for each other and for the event loop, and nothing of SIPp's.

Only pairs with consecutive sequence numbers count (a pause or a lost capture breaks the pair). tcpdump (Debian
``tcpdump``) runs with a kernel filter on the gateway's RTP source ports, so it copies only those packets.
"""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import yaml

__all__ = ["capture", "rtp_port_range", "send_interval_jitter"]

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_LINKTYPE_ETHERNET = 1
_LINKTYPE_LINUX_SLL = 113
_LINKTYPE_RAW = 101


def rtp_port_range(config_path: Path) -> tuple[int, int]:
    """``rtp.port_min``/``port_max`` of a gateway's config file."""
    rtp = yaml.safe_load(config_path.read_text())["rtp"]
    return int(rtp["port_min"]), int(rtp["port_max"])


def capture(ports: tuple[int, int], seconds: float, out: Path, *, host: str = "127.0.0.1") -> Path:
    """Capture UDP from ``host`` with a source port in ``ports`` on ``lo`` for ``seconds`` into ``out``."""
    binary = shutil.which("tcpdump")
    if binary is None:
        raise RuntimeError("tcpdump is not installed (Debian package tcpdump; `make bench` installs it)")
    low, high = ports
    proc = subprocess.Popen(
        [binary, "-i", "lo", "-n", "-q", "-s", "64", "-B", "16384", "-w", str(out),
         # even source ports only: RTP (RTCP goes out from port + 1)
        f"udp and src host {host} and src portrange {low}-{high} and (udp[0:2] & 1) = 0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if not out.exists():
        raise RuntimeError(f"tcpdump wrote nothing: {err.decode(errors='replace').strip()}")
    return out


def _packets(pcap: Path) -> list[tuple[float, tuple[int, int], int, int]]:
    """(time, (src port, dst port), RTP sequence number, RTP timestamp) of every IPv4 UDP packet in ``pcap``."""
    data = pcap.read_bytes()
    if len(data) < _GLOBAL.size:
        return []
    magic, _, _, _, _, _, linktype = _GLOBAL.unpack_from(data, 0)
    if magic == 0xA1B2C3D4:
        scale = 1e-6
    elif magic == 0xA1B23C4D:
        scale = 1e-9
    else:
        raise ValueError(f"{pcap}: not a little-endian pcap file (magic {magic:#x})")
    link = {_LINKTYPE_ETHERNET: 14, _LINKTYPE_LINUX_SLL: 16, _LINKTYPE_RAW: 0}.get(linktype)
    if link is None:
        raise ValueError(f"{pcap}: link type {linktype} not handled")
    out = []
    offset = _GLOBAL.size
    while offset + _RECORD.size <= len(data):
        sec, frac, caplen, _ = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        frame = data[offset : offset + caplen]
        offset += caplen
        ip = frame[link:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4 :]
        if len(udp) < 8 + 12:
            continue
        src, dst = struct.unpack_from("!HH", udp, 0)
        if udp[8] >> 6 != 2 or 192 <= udp[9] <= 223:
            continue  # not RTP version 2, or RTCP multiplexed on the RTP port (RFC 5761 §4)
        seq, timestamp = struct.unpack_from("!HI", udp, 8 + 2)
        out.append((sec + frac * scale, (src, dst), seq, timestamp))
    return out


def send_interval_jitter(pcap: Path, clock_rate: int = 8000) -> list[float]:
    """Send-interval jitter (seconds, see module doc) of every consecutive pair of every stream in ``pcap``."""
    streams: dict[tuple[int, int], list[tuple[float, int, int]]] = defaultdict(list)
    for when, flow, seq, timestamp in _packets(pcap):
        streams[flow].append((when, seq, timestamp))
    deviations = []
    for packets in streams.values():
        for (t1, s1, ts1), (t2, s2, ts2) in pairwise(packets):
            if (s2 - s1) & 0xFFFF != 1:
                continue
            expected = ((ts2 - ts1) & 0xFFFFFFFF) / clock_rate
            deviations.append(abs((t2 - t1) - expected))
    return deviations
