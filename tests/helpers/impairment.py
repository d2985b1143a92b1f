"""A UDP impairment relay for media tests (there is no netem here): loss (random and bursty), jitter,
reordering, duplication and a stall, from a seeded RNG, on loopback only, bounded.

:class:`MediaRelay` sits between a caller and the gateway's RTP port. ``upstream`` impairs what the
caller sends to the gateway, ``downstream`` the way back; the relay records what it did (packets
dropped, duplicated, the RFC 3550 A.8 interarrival jitter of what it actually sent) and every packet it
received from the gateway, so a test can compare the gateway's view with what was injected.

:class:`SdpRelay` is the SIP side of it: SIPp talks SIP to it, it forwards to the gateway and rewrites
the ``m=audio`` port of each SDP body so that the media of both sides flows through a
:class:`MediaRelay` (SIPp's ``rtp_stream`` sends to the address in the 200 OK's SDP).

Everything runs in one thread per relay with ``selectors`` and a bounded heap of scheduled sends.
"""

from __future__ import annotations

import heapq
import itertools
import random
import re
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

Addr = tuple[str, int]
LOOPBACK = "127.0.0.1"
MAX_QUEUED = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Impairment:
    """What happens to packets in one direction. Durations in seconds.

    ``loss``: probability a packet is dropped (independently). ``burst``: Gilbert-Elliott bursty loss as
    ``(p_enter_bad, p_leave_bad)``; every packet in the bad state is dropped. ``jitter``: each packet is
    delayed by ``base_delay + uniform(-jitter, +jitter)`` (``base_delay`` defaults to ``jitter`` so no
    delay is negative); packets overtake each other when their delays say so. ``reorder``: probability
    a packet is held back an extra ``reorder_delay``. ``duplicate``: probability a packet is sent twice.
    ``stall``: ``(start, length)``: from ``start`` seconds after the first packet, everything is held
    for ``length`` seconds and then released at once.
    """

    loss: float = 0.0
    burst: tuple[float, float] | None = None
    jitter: float = 0.0
    base_delay: float | None = None
    reorder: float = 0.0
    reorder_delay: float = 0.04
    duplicate: float = 0.0
    stall: tuple[float, float] | None = None


@dataclass
class DirectionLog:
    """What the relay did in one direction."""

    received: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    overflow: int = 0
    sent: int = 0
    # RFC 3550 A.8 over the actual send times (what the far side should measure), timestamp units
    jitter: float = 0.0
    jitter_sum: float = 0.0  # of the estimate after every sample, for its mean over the call
    jitter_samples: int = 0
    _transit: float | None = None
    _last_ts: int | None = None
    dropped_seqs: list[int] = field(default_factory=list)
    # (send time, sequence number, payload) of every RTP packet sent, in send order (duplicates included)
    sent_rtp: list[tuple[float, int, bytes]] = field(default_factory=list)

    def on_sent(self, data: bytes, now: float, clock_rate: int) -> None:
        self.sent += 1
        if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
            return
        self.sent_rtp.append((now, struct.unpack_from("!H", data, 2)[0], data[12:]))
        (timestamp,) = struct.unpack_from("!I", data, 4)
        if timestamp == self._last_ts:
            return  # a duplicate or an event update: not a new transit sample
        self._last_ts = timestamp
        transit = now * clock_rate - timestamp
        if self._transit is not None:
            self.jitter += (abs(transit - self._transit) - self.jitter) / 16
            self.jitter_sum += self.jitter
            self.jitter_samples += 1
        self._transit = transit

    def jitter_seconds(self, clock_rate: int = 8000) -> float:
        return self.jitter / clock_rate

    def jitter_mean_seconds(self, clock_rate: int = 8000) -> float:
        return self.jitter_sum / self.jitter_samples / clock_rate if self.jitter_samples else 0.0

    @property
    def loss_ratio(self) -> float:
        return self.dropped / self.received if self.received else 0.0

    def reordered_as_sent(self) -> int:
        """Packets that left after a higher sequence number had left (what RFC 3550 A.1 calls misordered
        at the far side): the relay's reorder *and* the overtaking its jitter causes."""
        count = 0
        highest: int | None = None
        seen: set[int] = set()
        for _, seq, _ in self.sent_rtp:
            if seq in seen:
                continue  # a duplicate is not a reordering
            seen.add(seq)
            if highest is not None and ((seq - highest) & 0xFFFF) >= 0x8000:
                count += 1
            elif highest is None or seq != highest:
                highest = seq
        return count


class _Direction:
    def __init__(self, impairment: Impairment, rng: random.Random) -> None:
        self.impairment = impairment
        self.rng = rng
        self.log = DirectionLog()
        self.bad = False
        self.first: float | None = None

    def plan(self, now: float) -> list[float]:
        """Send times for one received packet ([] = dropped)."""
        imp = self.impairment
        self.log.received += 1
        if self.first is None:
            self.first = now
        if imp.burst is not None:
            enter, leave = imp.burst
            self.bad = (self.rng.random() >= leave) if self.bad else (self.rng.random() < enter)
            if self.bad:
                self.log.dropped += 1
                return []
        if imp.loss and self.rng.random() < imp.loss:
            self.log.dropped += 1
            return []
        base = imp.jitter if imp.base_delay is None else imp.base_delay
        delay = base + (self.rng.uniform(-imp.jitter, imp.jitter) if imp.jitter else 0.0)
        if imp.reorder and self.rng.random() < imp.reorder:
            delay += imp.reorder_delay
            self.log.reordered += 1
        at = now + max(0.0, delay)
        if imp.stall is not None:
            start, length = imp.stall
            stall_from = self.first + start
            if stall_from <= at < stall_from + length:
                at = stall_from + length
        times = [at]
        if imp.duplicate and self.rng.random() < imp.duplicate:
            self.log.duplicated += 1
            times.append(at + 0.001)
        return times


class MediaRelay:
    """Relays RTP/RTCP between a caller and the gateway with impairments (see module doc).

    ``caller_port`` faces the caller (the caller sends there; echoes leave from there); ``gateway_port``
    faces the gateway (impaired caller packets leave from there; the gateway's packets arrive there).
    """

    def __init__(
        self,
        *,
        upstream: Impairment | None = None,
        downstream: Impairment | None = None,
        seed: int = 0,
        clock_rate: int = 8000,
    ) -> None:
        rng = random.Random(seed)
        self.up = _Direction(upstream or Impairment(), random.Random(rng.random()))
        self.down = _Direction(downstream or Impairment(), random.Random(rng.random()))
        self.clock_rate = clock_rate
        self._caller_sock = _bind()
        self._gateway_sock = _bind()
        self.caller_port = self._caller_sock.getsockname()[1]
        self.gateway_port = self._gateway_sock.getsockname()[1]
        self.caller_addr: Addr | None = None  # learnt from the first packet, or set from SDP
        self.gateway_addr: Addr | None = None
        self.from_gateway: list[tuple[float, bytes]] = []  # every datagram the gateway sent, as received
        self.from_caller: list[tuple[float, bytes]] = []  # every datagram the caller sent, before impairment
        self._heap: list[tuple[float, int, socket.socket, bytes, str]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="media-relay", daemon=True)

    def start(self) -> MediaRelay:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._caller_sock.close()
        self._gateway_sock.close()

    def __enter__(self) -> MediaRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._caller_sock, selectors.EVENT_READ, "up")
        selector.register(self._gateway_sock, selectors.EVENT_READ, "down")
        while not self._stop.is_set():
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                _, _, sock, data, direction = heapq.heappop(self._heap)
                addr = self.gateway_addr if direction == "up" else self.caller_addr
                if addr is not None:
                    sock.sendto(data, addr)
                    (self.up if direction == "up" else self.down).log.on_sent(data, time.monotonic(),
                                                                               self.clock_rate)
            timeout = 0.05 if not self._heap else max(0.0, self._heap[0][0] - time.monotonic())
            for key, _ in selector.select(timeout):
                readable = key.fileobj
                assert isinstance(readable, socket.socket)
                try:
                    data, source = readable.recvfrom(65536)
                except OSError:
                    continue
                arrival = time.monotonic()
                if key.data == "up":
                    if self.caller_addr is None:
                        self.caller_addr = source
                    self.from_caller.append((arrival, data))
                    self._schedule(self.up, data, arrival, self._gateway_sock, "up")
                else:
                    self.from_gateway.append((arrival, data))
                    self._schedule(self.down, data, arrival, self._caller_sock, "down")
        selector.close()

    def _schedule(self, direction: _Direction, data: bytes, now: float, out: socket.socket, name: str) -> None:
        plan = direction.plan(now)
        if not plan and len(data) >= 12 and not 192 <= data[1] <= 223:
            direction.log.dropped_seqs.append(struct.unpack_from("!H", data, 2)[0])
        for at in plan:
            if len(self._heap) >= MAX_QUEUED:
                direction.log.overflow += 1
                continue
            heapq.heappush(self._heap, (at, next(self._order), out, data, name))


_M_AUDIO = re.compile(rb"^m=audio (\d+)", re.MULTILINE)
_CALL_ID = re.compile(rb"^(Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.MULTILINE | re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"^(Content-Length|l)[ \t]*:[ \t]*\d+", re.MULTILINE | re.IGNORECASE)


class SdpRelay:
    """Forwards SIP between SIPp and the gateway, steering both sides' media through ``media``."""

    def __init__(self, gateway_sip: Addr, media: MediaRelay) -> None:
        self.gateway_sip = gateway_sip
        self.media = media
        self._sock = _bind()
        self.port = self._sock.getsockname()[1]
        self._peer: Addr | None = None
        self.call_id: str | None = None  # Call-ID of the first request the caller sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sdp-relay", daemon=True)

    def start(self) -> SdpRelay:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> SdpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        self._sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                data, source = self._sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            if source == self.gateway_sip:
                if self._peer is not None:
                    self._sock.sendto(self._rewrite(data, from_gateway=True), self._peer)
            else:
                self._peer = source
                if self.call_id is None:
                    match = _CALL_ID.search(data)
                    if match is not None:
                        self.call_id = match.group(2).decode(errors="replace").strip()
                self._sock.sendto(self._rewrite(data, from_gateway=False), self.gateway_sip)

    def _rewrite(self, data: bytes, *, from_gateway: bool) -> bytes:
        head, sep, body = data.partition(b"\r\n\r\n")
        match = _M_AUDIO.search(body)
        if not sep or match is None:
            return data
        port = int(match.group(1))
        if from_gateway:
            self.media.gateway_addr = (LOOPBACK, port)
            new_port = self.media.caller_port
        else:
            self.media.caller_addr = (LOOPBACK, port)
            new_port = self.media.gateway_port
        body = body[: match.start(1)] + str(new_port).encode() + body[match.end(1) :]
        head = _CONTENT_LENGTH.sub(b"Content-Length: " + str(len(body)).encode(), head)
        return head + sep + body


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))  # loopback only: the relay never talks to the outside
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock
