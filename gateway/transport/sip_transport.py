"""SIP over UDP and TCP (RFC 3261 §18) on one configured address, one event loop.

Datagrams are handed up whole (the parser frames them by Content-Length, §18.3); TCP byte streams are framed by
:class:`gateway.sip.parser.StreamFramer` and each connection is remembered by its peer address so responses and
in-dialog requests reuse it (§18.2.2). Outbound TCP connects on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.parser import StreamFramer

Addr = tuple[str, int]
# (data, source address, "udp" | "tcp")
ReceiveCallback = Callable[[bytes, Addr, str], None]
ErrorCallback = Callable[[str, Addr, str], None]

_TCP_CONNECT_TIMEOUT = 5.0
_TCP_IDLE_LIMIT_BYTES = 1 << 20


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_receive: ReceiveCallback) -> None:
        self._on_receive = on_receive
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's class is not a subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._on_receive(data, (addr[0], addr[1]), "udp")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction layer's timers cover the loss.
        pass


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: SipTransport, outbound_peer: Addr | None = None) -> None:
        self._owner = owner
        self._framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Addr | None = outbound_peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.peer is None:
            info = transport.get_extra_info("peername")
            self.peer = (info[0], info[1])
        self._owner._tcp_connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        self._framer.feed(data)
        while True:
            try:
                message = self._framer.next_message()
            except RemoteProtocolError as exc:
                # §18.3: a stream that cannot be framed is unrecoverable: close it.
                self._owner._on_error(exc.reason, self.peer, "tcp")
                self.transport.close()
                return
            if message is None:
                return
            self._owner._on_receive(message, self.peer, "tcp")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self._owner._tcp_connections.get(self.peer) is self:
            del self._owner._tcp_connections[self.peer]

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class SipTransport:
    """UDP and TCP listeners on one host:port; ``send`` picks the transport the message names."""

    def __init__(self, on_receive: ReceiveCallback, on_error: ErrorCallback, tasks: asyncio.TaskGroup) -> None:
        self._tasks = tasks  # outbound TCP connects belong to the server's task group
        self._on_receive = on_receive
        self._on_error = on_error
        self._udp: _UdpProtocol | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_connections: dict[Addr, _TcpConnection] = {}
        self._pending_tcp: dict[Addr, list[bytes]] = {}
        self.local_addr: Addr | None = None

    async def start(self, host: str, port: int) -> Addr:
        loop = asyncio.get_running_loop()
        udp_transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self._on_receive), local_addr=(host, port)
        )
        self._udp = protocol
        sockname = udp_transport.get_extra_info("sockname")
        bound_port = sockname[1]
        # TCP on the same port number as UDP (port 0 asked for UDP → the TCP listener follows it).
        self._tcp_server = await loop.create_server(
            lambda: _TcpConnection(self), host=host, port=bound_port, reuse_address=True
        )
        self.local_addr = (sockname[0], bound_port)
        return self.local_addr

    def send(self, data: bytes, destination: Addr, transport: str) -> None:
        if transport == "udp":
            if self._udp is None or self._udp.transport is None:
                return
            self._udp.transport.sendto(data, destination)
            return
        conn = self._tcp_connections.get(destination)
        if conn is not None:
            conn.send(data)
            return
        pending = self._pending_tcp.get(destination)
        if pending is not None:
            pending.append(data)
            return
        self._pending_tcp[destination] = [data]
        self._tasks.create_task(self._connect(destination))

    async def _connect(self, destination: Addr) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_TCP_CONNECT_TIMEOUT):
                await loop.create_connection(lambda: _TcpConnection(self, destination), *destination)
        except (OSError, TimeoutError) as exc:
            self._pending_tcp.pop(destination, None)
            self._on_error(f"tcp connect failed: {exc}", destination, "tcp")
            return
        queued = self._pending_tcp.pop(destination, [])
        conn = self._tcp_connections.get(destination)
        if conn is not None:
            for data in queued:
                conn.send(data)

    async def close(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.close()
        for conn in list(self._tcp_connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        if self._tcp_server is not None:
            try:
                async with asyncio.timeout(2):
                    await self._tcp_server.wait_closed()
            except TimeoutError:
                pass
