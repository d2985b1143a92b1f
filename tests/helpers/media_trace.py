"""One echo call's media, replayed deterministically, printed as JSON: what the gateway sent and its statistics.

Run as a script (``python tests/helpers/media_trace.py``) in a process whose ``VOICEGW_NATIVE`` picks the
compiled or the Python media path; ``tests/unit/test_native.py`` compares the two outputs. The caller sends
speech-like PCMU (a tone in bursts with quiet gaps) with jitter, loss, a burst loss, reordering, duplicates, a
silence-suppressed gap with a new talk spurt (marker), an SSRC change, a malformed datagram, RFC 4733 digits and
an RTCP receiver report; the gateway's echo, RTCP and statistics must be the same byte for byte either way.
"""

from __future__ import annotations

import json
import math
import random
import struct
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gateway
from gateway.call_media import CallMedia
from gateway.codecs.g711 import ulaw_encode
from gateway.observability.metrics import Metrics
from gateway.rtp.packet import RtpPacket
from gateway.sdp import Direction, NegotiatedAudio

PEER = ("127.0.0.1", 40000)
TICKS = 1500  # 30 s of 20 ms ticks


class Capture:
    def __init__(self, sent: list[str]) -> None:
        self.sent = sent

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(data.hex())

    def close(self) -> None:
        pass


def frame(n: int) -> bytes:
    """20 ms of PCMU: a 440 Hz tone for 1.2 s, then 0.4 s of near silence (the jitter buffer may adapt there)."""
    loud = (n % 80) < 60
    amplitude = 9000 if loud else 20
    samples = [int(amplitude * math.sin(2 * math.pi * 440 * (n * 160 + i) / 8000)) for i in range(160)]
    return ulaw_encode(struct.pack("<160h", *samples))


def dtmf(seq: int, timestamp: int, event: int, duration: int, end: bool) -> bytes:
    body = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
    return RtpPacket(payload_type=101, sequence_number=seq & 0xFFFF, timestamp=timestamp, ssrc=0x1234,
                     payload=body, marker=duration == 160).serialize()


def main() -> None:
    rng = random.Random(7)
    sent: list[str] = []
    rtcp_sent: list[str] = []
    media = CallMedia("127.0.0.1", 20000, echo=True, metrics=Metrics(), rng=random.Random(1),
                      wall_clock=lambda: 1_700_000_000.0, clock=lambda: 0.0)
    media.endpoint.attach(Capture(sent), Capture(rtcp_sent))  # type: ignore[arg-type]
    media.apply(NegotiatedAudio(
        payload_type=0, codec="PCMU", clock_rate=8000, ptime=20, dtmf_payload_type=101,
        remote_host=PEER[0], remote_port=PEER[1], remote_rtcp_port=PEER[1] + 1, direction=Direction.SENDRECV,
    ))
    arrivals: list[tuple[float, bytes]] = []
    ssrc, seq_base, ts_base = 0x1234, 1000, 5000
    for n in range(TICKS - 50):
        if n == 900:  # the caller's SSRC changes (a re-INVITE elsewhere, a new stream)
            ssrc, seq_base, ts_base = 0x9999, 30000 - n, 77 - n * 160
        if 400 <= n < 425 and n % 5:  # silence suppression: nothing sent, then a new talk spurt
            continue
        if n in (101, 102, 103, 250, 251) or rng.random() < 0.02:  # a burst loss and random loss
            continue
        packet = RtpPacket(payload_type=0, sequence_number=(seq_base + n) & 0xFFFF,
                           timestamp=(ts_base + n * 160) & 0xFFFFFFFF, ssrc=ssrc, payload=frame(n),
                           marker=n in (0, 425)).serialize()
        arrival = n * 0.02 + 0.005 + rng.random() * 0.03 + (0.12 if 600 <= n < 610 else 0.0)
        arrivals.append((arrival, packet))
        if rng.random() < 0.01:
            arrivals.append((arrival + 0.004, packet))  # a duplicate
    for k, duration in enumerate((160, 320, 480, 640, 640, 640)):  # digit 5 at tick 700, end sent 3 times
        arrivals.append((14.0 + k * 0.02 + 0.007, dtmf(seq_base + 10_000 + k, (ts_base + 700 * 160) & 0xFFFFFFFF,
                                                   5, duration, k >= 3)))
    arrivals.append((5.0, b"\x80\x00garbage"))  # too short: counted and dropped
    arrivals.sort(key=lambda item: item[0])  # reordering comes from the jitter above
    rr = bytes.fromhex("81c90007") + struct.pack("!II", 0x1234, 0) + bytes(20)
    i = 0
    for tick in range(TICKS):
        now = tick * 0.02
        while i < len(arrivals) and arrivals[i][0] <= now + 0.015:
            media.endpoint.receive_datagram(arrivals[i][1], PEER, arrivals[i][0])
            i += 1
        if tick == 1200:
            media.on_rtcp(rr, now)
        media.prepare(tick, now + 0.015)
        media.send(tick)
    stats = media.media_stats()
    print(json.dumps({
        "status": gateway.native.STATUS,
        "sent": sent,
        "rtcp": rtcp_sent,
        "digits": media.digits,
        "stats": asdict(stats),
    }, default=str))


if __name__ == "__main__":
    main()
