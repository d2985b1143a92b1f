"""One call's RTP and RTCP sockets (RFC 3550 §5, §6, §11), taken from a bounded port pool.

RTP on an even port, RTCP on the next one (RFC 3550 §11 "RTCP ... the next higher (odd) port"); RTCP
arriving on the RTP port is accepted too (RFC 5761 §4 demultiplexing), so an rtcp-mux peer works, and
RTCP is sent on the RTP socket when the peer signalled the same port for both.

Symmetric RTP (RFC 4961): we send to where the peer's media comes from. Latching rule:

- a valid RTP packet from the signalled address (c=/m=) latches at once;
- otherwise (the peer is behind NAT and signalled an address we cannot see, or its NAT rewrote the
  port) the endpoint *learns*: it latches on a source once ``learn_packets`` valid packets in sequence
  (same SSRC, consecutive sequence numbers) came from it, and then delivers them all. A single spoofed
  packet therefore never steers our media;
- once latched, packets from any other source are dropped and counted (``wrong_source``), like
  Asterisk's ``strictrtp``: a third party gets nothing injected into the call. A new offer with a new
  address (re-INVITE) unlatches.

RTCP is accepted from the latched host (any port: NATs map RTCP separately) and sent to the source of
the peer's RTCP once seen, else to the signalled RTCP address.

Every datagram that is not valid RTP/RTCP is dropped and counted by reason (the ``RtpParseError`` /
``RtcpParseError`` reason, metric ``voicegw_rtp_packets_dropped``); nothing raised by parsing reaches
the call.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from gateway.observability.logging import get_logger
from gateway.observability.metrics import Metrics
from gateway.rtp.packet import RtpPacket, RtpParseError, is_rtcp, seq_distance
from gateway.sdp.crypto import SrtpKeying
from gateway.transport.pacer import Datagram, Pacer
from gateway.transport.srtp import SrtpContext

Addr = tuple[str, int]
LEARN_PACKETS = 2  # like RFC 3550 A.1 MIN_SEQUENTIAL: two packets in sequence make a source


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


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Addr], None], on_error: Callable[[], None]) -> None:
        self._on_datagram = on_datagram
        self._on_error = on_error

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # IPv4 addresses come as (host, port) already; IPv6 ones carry flowinfo and scope id as well
        self._on_datagram(data, addr if len(addr) == 2 else (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self._on_error()


class RtpEndpoint:
    """A call's RTP/RTCP sockets with symmetric-RTP latching (see module doc).

    ``on_rtp(packet, now)`` gets every accepted RTP packet; ``on_rtcp(data, now)`` every accepted RTCP
    datagram (still to be parsed). ``clock`` gives ``now`` (the loop's monotonic time by default).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        on_rtp: Callable[[RtpPacket, float], None],
        on_rtcp: Callable[[bytes, float], None],
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
        learn_packets: int = LEARN_PACKETS,
        log: Any = None,
    ) -> None:
        self.host = host
        self.port = port
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._metrics = metrics
        self._clock = clock
        self._learn_packets = max(1, learn_packets)
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        # A duplicate of the RTP socket's descriptor for sends handed to the pacer, made at the first one. Its
        # thread may send up to a lead after the loop closed the socket: it closes the duplicate itself, after
        # every batch handed over before (Pacer.release), so the number is never reused under a pending send.
        self._paced_fd = -1
        self._pacer: Pacer | None = None
        self._paced_remote: Addr | None = None  # the destination _paced_addr was packed for
        self._paced_addr: bytes | None = None
        self.signalled: Addr | None = None
        self.signalled_rtcp: Addr | None = None
        self.latched: Addr | None = None
        self.rtcp_source: Addr | None = None
        self._learning: tuple[Addr, list[RtpPacket], list[float]] | None = None
        self.counters: Counter[str] = Counter()
        self.last_received: float | None = None
        self._log = log if log is not None else get_logger("rtp")
        self.srtp: SrtpContext | None = None  # RFC 3711: set when the stream is RTP/SAVP
        self._unflushed_packets = 0  # received, not yet in the metrics (see flush_metrics)
        self._unflushed_bytes = 0

    # -- sockets ---------------------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = loop.time
        self._rtp, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._datagram, self._icmp_error), local_addr=(self.host, self.port)
        )
        try:
            self._rtcp, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self._rtcp_datagram, self._icmp_error), local_addr=(self.host, self.port + 1)
            )
        except OSError as exc:
            # RTP still works; RTCP then only flows muxed on the RTP port.
            self._log.warning("rtcp_bind_failed", port=self.port + 1, error=str(exc))

    def attach(self, rtp: asyncio.DatagramTransport, rtcp: asyncio.DatagramTransport | None = None) -> None:
        """Use already-open transports (tests hand in fakes)."""
        self._rtp, self._rtcp = rtp, rtcp

    def close(self) -> None:
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self._rtp = self._rtcp = None
        if self._pacer is not None and self._paced_fd >= 0:
            self._pacer.release(self._paced_fd)
        self._paced_fd = -1
        self._pacer = None
        # the callbacks are the owner's bound methods: dropping them breaks the owner <-> endpoint cycle
        self._on_rtp = _closed_rtp
        self._on_rtcp = _closed_rtcp

    def _icmp_error(self) -> None:
        self.counters["icmp_error"] += 1

    # -- signalling ------------------------------------------------------------------------------

    def set_remote(self, addr: Addr, rtcp_addr: Addr | None = None) -> None:
        """The addresses from the SDP (c=/m=, a=rtcp or port+1). A new address unlatches."""
        if addr != self.signalled:
            self.signalled = addr
            self.latched = None
            self.rtcp_source = None
            self._learning = None
        self.signalled_rtcp = rtcp_addr

    def set_srtp(self, keying: SrtpKeying | None) -> None:
        """SDES keys from the offer/answer; the same keys again keep the session (and its replay window)."""
        if keying is None:
            self.srtp = None
        elif self.srtp is None or self.srtp.keying != keying:
            self.srtp = SrtpContext(keying, metrics=self._metrics)

    @property
    def remote(self) -> Addr | None:
        return self.latched or self.signalled

    @property
    def rtcp_remote(self) -> Addr | None:
        return self.rtcp_source or self.signalled_rtcp

    @property
    def rtcp_mux(self) -> bool:
        return self.signalled_rtcp is not None and self.signalled is not None and self.signalled_rtcp == self.signalled

    # -- receiving -------------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._clock is not None
        return self._clock()

    def _drop(self, reason: str) -> None:
        self.counters[reason] += 1
        if self._metrics is not None:
            self._metrics.rtp_packets_dropped.labels(reason).inc()

    def _datagram(self, data: bytes, source: Addr) -> None:
        self.receive_datagram(data, source, self._now())

    def _rtcp_datagram(self, data: bytes, source: Addr) -> None:
        self.receive_rtcp_datagram(data, source, self._now())

    def receive_datagram(self, data: bytes, source: Addr, now: float) -> None:
        """A datagram on the RTP port: RTP, or RTCP from an rtcp-mux peer (RFC 5761 §4)."""
        if is_rtcp(data):
            self.receive_rtcp_datagram(data, source, now)
            return
        latched = self.latched
        if latched is not None and source != latched:
            self._drop("wrong_source")
            return
        if self.srtp is not None:
            plain = self.srtp.unprotect(data)
            if plain is None:
                self._drop("srtp_unprotect")  # RFC 3711 §3.3: the packet MUST be discarded
                return
            data = plain
        size = len(data)  # what the byte counter counts: the RTP packet (as _wire_size(packet) would say)
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError as exc:
            self._drop(exc.reason)
            return
        if latched is None and not self._latch(packet, source, now):
            return
        # _deliver, inlined (per packet)
        self.last_received = now
        self.counters["received"] += 1
        self._unflushed_packets += 1
        self._unflushed_bytes += size
        self._on_rtp(packet, now)

    def _latch(self, packet: RtpPacket, source: Addr, now: float) -> bool:
        """Decide on an unlatched source; True when ``packet`` is to be delivered now."""
        if source == self.signalled or self._learn_packets == 1:
            self._set_latched(source, "signalled" if source == self.signalled else "learnt")
            return True
        learning = self._learning
        if (
            learning is not None
            and learning[0] == source
            and learning[1][-1].ssrc == packet.ssrc
            and seq_distance(packet.sequence_number, learning[1][-1].sequence_number) == 1
        ):
            learning[1].append(packet)
            learning[2].append(now)
        else:
            if learning is not None:
                self.counters["learning_discarded"] += len(learning[1])
            self._learning = learning = (source, [packet], [now])
        if len(learning[1]) < self._learn_packets:
            return False
        self._learning = None
        self._set_latched(source, "learnt")
        for held, arrival in zip(learning[1][:-1], learning[2][:-1], strict=True):
            self._deliver(held, arrival, _wire_size(held))
        return True

    def _set_latched(self, source: Addr, how: str) -> None:
        self.latched = source
        self.counters[f"latched_{how}"] += 1
        if self._metrics is not None:
            self._metrics.rtp_latched.labels(how).inc()
        self._log.info("rtp_latched", source=f"{source[0]}:{source[1]}", how=how)

    def _deliver(self, packet: RtpPacket, now: float, size: int) -> None:
        self.last_received = now
        self.counters["received"] += 1
        # Hot path: counted in plain ints and added to the metrics by flush_metrics (the call does it about
        # once a second and at its end), since a prometheus_client inc() takes a lock each time.
        self._unflushed_packets += 1
        self._unflushed_bytes += size
        self._on_rtp(packet, now)

    def flush_metrics(self) -> None:
        """Add the packets and bytes received since the last flush to ``voicegw_rtp_packets``/``_bytes``."""
        if self._unflushed_packets and self._metrics is not None:
            self._metrics.rtp_packets_in.inc(self._unflushed_packets)
            self._metrics.rtp_bytes_in.inc(self._unflushed_bytes)
        self._unflushed_packets = self._unflushed_bytes = 0

    def receive_rtcp_datagram(self, data: bytes, source: Addr, now: float) -> None:
        """A datagram on the RTCP port (or demultiplexed from the RTP port)."""
        allowed = self.latched[0] if self.latched is not None else (self.signalled[0] if self.signalled else None)
        if source[0] != allowed:
            self._drop("rtcp_wrong_source")
            return
        if self.srtp is not None:
            plain = self.srtp.unprotect_rtcp(data)
            if plain is None:
                self._drop("srtcp_unprotect")
                return
            data = plain
        self.rtcp_source = source
        self.counters["rtcp_received"] += 1
        if self._metrics is not None:
            self._metrics.rtcp_packets.labels("in").inc()
        self._on_rtcp(data, now)

    def count_rtcp_error(self, reason: str) -> None:
        """The RTCP datagram handed to ``on_rtcp`` did not parse."""
        self._drop(f"rtcp_{reason}")

    # -- sending ---------------------------------------------------------------------------------

    def send(self, data: bytes, batch: list[Datagram] | None = None, pacer: Pacer | None = None) -> bool:
        """Send one RTP datagram to the remote (SRTP-protected when keyed). With ``batch`` and ``pacer`` (the
        playout scheduler collecting a tick for the pacer) the datagram joins ``batch`` and leaves at the tick's
        deadline; it goes from the loop at once if the destination is not an IP literal."""
        remote = self.remote
        if self._rtp is None or remote is None or remote[1] == 0:
            return False
        if self.srtp is not None:
            protected = self.srtp.protect(data)
            if protected is None:
                return False
            data = protected
        paced = self._paced(data, remote, pacer) if batch is not None and pacer is not None else None
        if paced is not None and batch is not None:
            batch.append(paced)
        else:
            self._rtp.sendto(data, remote)
        self.counters["sent"] += 1
        return True

    def _paced(self, data: bytes, remote: Addr, pacer: Pacer) -> Datagram | None:
        """The pacer's datagram for ``data`` (None: the destination is no IP literal, or there is no socket)."""
        if remote != self._paced_remote:
            self._paced_remote = remote
            self._paced_addr = pacer.sockaddr(remote[0], remote[1])
        if self._pacer is None and self._rtp is not None:
            sock = self._rtp.get_extra_info("socket")
            self._paced_fd = os.dup(sock.fileno()) if sock is not None else -1
            self._pacer = pacer
        addr = self._paced_addr
        if addr is None or self._paced_fd < 0:
            return None
        return (self._paced_fd, data, addr)

    def send_rtcp(self, data: bytes) -> bool:
        remote = self.rtcp_remote
        if remote is None or remote[1] == 0:
            return False
        transport = self._rtp if self.rtcp_mux or self._rtcp is None else self._rtcp
        if transport is None:
            return False
        if self.srtp is not None:
            protected = self.srtp.protect_rtcp(data)
            if protected is None:
                return False
            data = protected
        transport.sendto(data, remote)
        self.counters["rtcp_sent"] += 1
        if self._metrics is not None:
            self._metrics.rtcp_packets.labels("out").inc()
        return True


def _closed_rtp(packet: RtpPacket, now: float) -> None:
    """``on_rtp`` of a closed endpoint: nothing is delivered any more."""


def _closed_rtcp(data: bytes, now: float) -> None:
    """``on_rtcp`` of a closed endpoint."""


def _wire_size(packet: RtpPacket) -> int:
    """The packet's UDP payload size (RFC 3550 §5.1 header, CSRCs, §5.3.1 extension, payload, padding)."""
    extension = 4 + len(packet.extension_data) if packet.extension_profile is not None else 0
    return 12 + 4 * len(packet.csrc) + extension + len(packet.payload) + packet.padding_size
