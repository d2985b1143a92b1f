"""One UDP socket per call for RTP (RFC 3550), taken from a bounded port pool.

Symmetric RTP (RFC 4961): we send to where the peer's media comes from. The endpoint latches on the first
valid packet (from the signalled address, or from anywhere when the peer is behind NAT and signalled a private
address); afterwards packets from any other source are dropped and counted (strict source, like Asterisk's
strictrtp), so RTP injection from a third party gets nowhere.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

Addr = tuple[str, int]


class PortPoolExhausted(Exception):
    """No free RTP port: the INVITE is answered 503 with Retry-After."""


class PortPool:
    """Even RTP ports in [port_min, port_max] (RTCP would use port+1, RFC 3550 §11)."""

    def __init__(self, port_min: int, port_max: int, *, rng: random.Random | None = None) -> None:
        first = port_min + (port_min % 2)
        self._free = list(range(first, port_max + 1, 2))
        (rng or random.Random()).shuffle(self._free)
        self.capacity = len(self._free)
        self._used: set[int] = set()

    def acquire(self) -> int:
        if not self._free:
            raise PortPoolExhausted(f"all {self.capacity} RTP ports are in use")
        port = self._free.pop()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.remove(port)
            self._free.insert(0, port)

    @property
    def in_use(self) -> int:
        return len(self._used)


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint) -> None:
        self._endpoint = endpoint

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._endpoint._receive(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self._endpoint.counters["icmp_error"] += 1


class RtpEndpoint:
    """A bound RTP socket with symmetric-RTP latching. ``on_packet(data, now)`` gets every accepted datagram."""

    def __init__(self, host: str, port: int, on_packet: Callable[[bytes, float], None]) -> None:
        self.host = host
        self.port = port
        self._on_packet = on_packet
        self._transport: asyncio.DatagramTransport | None = None
        self.signalled: Addr | None = None
        self.latched: Addr | None = None
        self.counters: Counter[str] = Counter()
        self.last_received: float | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpProtocol(self), local_addr=(self.host, self.port)
        )
        self._transport = transport

    def set_remote(self, addr: Addr) -> None:
        """The address from the SDP (c=/m=). A new offer with a new address unlatches."""
        if addr != self.signalled:
            self.signalled = addr
            self.latched = None

    def _receive(self, data: bytes, source: Addr) -> None:
        if self.latched is None:
            # Latch on the first packet that looks like RTP v2 (RFC 3550 §5.1: version 2).
            if len(data) < 12 or data[0] >> 6 != 2:
                self.counters["not_rtp"] += 1
                return
            self.latched = source
        elif source != self.latched:
            self.counters["wrong_source"] += 1
            return
        now = asyncio.get_running_loop().time()
        self.last_received = now
        self.counters["received"] += 1
        self._on_packet(data, now)

    @property
    def remote(self) -> Addr | None:
        return self.latched or self.signalled

    def send(self, data: bytes) -> bool:
        remote = self.remote
        if self._transport is None or remote is None or remote[1] == 0:
            return False
        self._transport.sendto(data, remote)
        self.counters["sent"] += 1
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
