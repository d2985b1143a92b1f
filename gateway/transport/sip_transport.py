"""SIP over UDP, TCP (RFC 3261 §18) and TLS (§26.2, RFC 5630) on configured addresses, one event loop.

Datagrams are handed up whole (the parser frames them by Content-Length, §18.3); TCP byte streams are framed by
:class:`gateway.sip.parser.StreamFramer` and each connection is remembered by its peer address so responses and
in-dialog requests reuse it (§18.2.2). Outbound TCP connects on demand.

UDP datagrams are handled in turns of at most ``DRAIN_BUDGET`` seconds: the event loop hands a burst of them
over at once (up to 32 per socket wake-up), and handling each one (an INVITE builds a call) takes up to a few
milliseconds, so handling a burst in one go held every call's 20 ms playout timer back by tens of milliseconds.
They wait in a bounded inbox (``INBOX_LIMIT_BYTES``, counted with the kernel's queue by
:meth:`SipTransport.receive_backlog`) and the loop runs its timers between turns.

TLS is framed like TCP. Inbound connections are accepted by our own loop on the TLS port and each socket is
handed to its TLS handshake before a byte of it is read, so a failed handshake (a plain-TCP or garbage
client, an untrusted certificate, a timeout) is reported with the peer and the reason, and the connection
is closed. Outbound TLS verifies the peer's certificate against the name registered with
:meth:`SipTransport.set_tls_peer` (RFC 5922 §7).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.parser import StreamFramer

Addr = tuple[str, int]
# (data, source address, "udp" | "tcp" | "tls")
ReceiveCallback = Callable[[bytes, Addr, str], None]
ErrorCallback = Callable[[str, Addr, str], None]

_TCP_CONNECT_TIMEOUT = 5.0
_TCP_IDLE_LIMIT_BYTES = 1 << 20
_TLS_HANDSHAKE_TIMEOUT = 10.0
# <linux/sock_diag.h>: SO_MEMINFO returns u32 [rmem_alloc, rcvbuf, wmem_alloc, sndbuf, fwd_alloc, wmem_queued,
# optmem, backlog, drops]
_SO_MEMINFO = 55
_SK_MEMINFO_VARS = 9
_SK_MEMINFO_DROPS = 8
DRAIN_BUDGET = 0.002  # seconds of datagram handling per loop turn (then timers and other sockets run)
INBOX_LIMIT_BYTES = 256 * 1024  # datagrams received, not yet handled; beyond it they are dropped like the kernel's


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiveBacklog:
    """The SIP UDP socket's receive queue: ``queued`` bytes (kernel accounting, headers included) of
    ``capacity``, and ``drops``, datagrams discarded because it was full (a running total)."""

    queued: int
    capacity: int
    drops: int


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
    def __init__(self, owner: SipTransport, outbound_peer: Addr | None = None, kind: str = "tcp") -> None:
        self._owner = owner
        self.kind = kind
        self._connections = owner._tls_connections if kind == "tls" else owner._tcp_connections
        self._framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Addr | None = outbound_peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.peer is None:
            info = transport.get_extra_info("peername")
            self.peer = (info[0], info[1])
        self._connections[self.peer] = self
        self._drain()

    def data_received(self, data: bytes) -> None:
        self._framer.feed(data)
        self._drain()

    def _drain(self) -> None:
        assert self.peer is not None and self.transport is not None
        while True:
            try:
                message = self._framer.next_message()
            except RemoteProtocolError as exc:
                # §18.3: a stream that cannot be framed is unrecoverable: close it.
                self._owner._on_error(exc.reason, self.peer, self.kind)
                self.transport.close()
                return
            if message is None:
                return
            self._owner._on_receive(message, self.peer, self.kind)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self._connections.get(self.peer) is self:
            del self._connections[self.peer]

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class SipTransport:
    """UDP and TCP listeners on one host:port (plus TLS on its own); ``send`` picks the transport named."""

    def __init__(self, on_receive: ReceiveCallback, on_error: ErrorCallback, tasks: asyncio.TaskGroup) -> None:
        self._tasks = tasks  # outbound TCP connects belong to the server's task group
        self._on_receive = on_receive
        self._on_error = on_error
        self._udp: _UdpProtocol | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_connections: dict[Addr, _TcpConnection] = {}
        self._pending_tcp: dict[tuple[str, Addr], list[bytes]] = {}
        self._tls_connections: dict[Addr, _TcpConnection] = {}
        self._tls_listener: socket.socket | None = None
        self._tls_accepting: asyncio.Task[None] | None = None
        self._tls_server_context: ssl.SSLContext | None = None
        self._tls_client_context: Callable[[bool], ssl.SSLContext] | None = None
        self._tls_peers: dict[Addr, tuple[str, bool]] = {}
        self.local_addr: Addr | None = None
        self.tls_addr: Addr | None = None
        self._inbox: deque[tuple[bytes, Addr]] = deque()
        self._inbox_bytes = 0
        self._inbox_drops = 0
        self._draining = False
        self._closed = False

    async def start(self, host: str, port: int) -> Addr:
        loop = asyncio.get_running_loop()
        udp_transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self._enqueue), local_addr=(host, port)
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

    async def start_tls(
        self, host: str, port: int, server_context: ssl.SSLContext | None,
        client_context: Callable[[bool], ssl.SSLContext],
    ) -> Addr | None:
        """The TLS listener (when ``server_context`` is given) and the outbound TLS contexts
        (``client_context(verify)``). Returns the bound TLS address."""
        self._tls_client_context = client_context
        if server_context is None:
            return None
        self._tls_server_context = server_context
        loop = asyncio.get_running_loop()
        family, _, _, _, sockaddr = (await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE))[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            listener.listen(socket.SOMAXCONN)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._tls_listener = listener
        self._tls_accepting = self._tasks.create_task(self._accept_tls(listener))
        sockname = listener.getsockname()
        self.tls_addr = (sockname[0], sockname[1])
        return self.tls_addr

    def set_tls_peer(self, destination: Addr, server_name: str, *, verify: bool = True) -> None:
        """The name the certificate of ``destination`` must carry (the trunk host or the sips: URI host)."""
        self._tls_peers[destination] = (server_name, verify)

    async def _accept_tls(self, listener: socket.socket) -> None:
        """Accepts on the TLS port until close. Each connection's socket goes to its handshake as it is, before
        the event loop reads a byte of it (a listener that first hands connections to a plain protocol and then
        upgrades them loses a ClientHello that arrives in between: uvloop starts reading right after
        ``connection_made``, whatever the protocol asked)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors and the like: report, breathe, go on
                if self._closed:
                    return
                self._on_error(f"tls accept failed: {_reason(exc)}", self.tls_addr or ("", 0), "tls")
                await asyncio.sleep(0.1)
                continue
            self._tasks.create_task(self._handshake(sock, (peer[0], peer[1])))

    async def _handshake(self, sock: socket.socket, peer: Addr) -> None:
        assert self._tls_server_context is not None
        loop = asyncio.get_running_loop()
        try:
            # The transport owns the socket from here: a failed handshake closes it.
            await loop.connect_accepted_socket(
                lambda: _TcpConnection(self, peer, kind="tls"), sock, ssl=self._tls_server_context,
                ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT,
            )
        except (OSError, TimeoutError, ConnectionError) as exc:
            self._on_error(f"tls handshake failed: {_reason(exc)}", peer, "tls")

    def send(self, data: bytes, destination: Addr, transport: str) -> None:
        if transport == "udp":
            if self._udp is None or self._udp.transport is None:
                return
            self._udp.transport.sendto(data, destination)
            return
        kind = "tls" if transport == "tls" else "tcp"
        conn = (self._tls_connections if kind == "tls" else self._tcp_connections).get(destination)
        if conn is not None:
            conn.send(data)
            return
        pending = self._pending_tcp.get((kind, destination))
        if pending is not None:
            pending.append(data)
            return
        self._pending_tcp[(kind, destination)] = [data]
        self._tasks.create_task(self._connect(destination, kind))

    def _enqueue(self, data: bytes, source: Addr, kind: str) -> None:
        """A datagram from the socket: queued for the next turn (see the module doc)."""
        if self._inbox_bytes + len(data) > INBOX_LIMIT_BYTES:
            self._inbox_drops += 1
            return
        self._inbox.append((data, source))
        self._inbox_bytes += len(data)
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain_inbox)

    def _drain_inbox(self) -> None:
        inbox = self._inbox
        deadline = time.perf_counter() + DRAIN_BUDGET
        try:
            while inbox and not self._closed:
                data, source = inbox.popleft()
                self._inbox_bytes -= len(data)
                try:
                    self._on_receive(data, source, "udp")
                except Exception as exc:  # one bad datagram must not stall the ones behind it
                    asyncio.get_running_loop().call_exception_handler(
                        {"message": "handling a SIP datagram failed", "exception": exc}
                    )
                if time.perf_counter() >= deadline:
                    break
        finally:
            if inbox and not self._closed:
                asyncio.get_running_loop().call_soon(self._drain_inbox)
            else:
                self._draining = False

    def receive_backlog(self) -> ReceiveBacklog | None:
        """The UDP receive queue: bytes queued in the kernel's socket buffer (Linux ``SO_MEMINFO``: one
        getsockopt, no scan) and in our inbox, the two buffers' sizes, and the datagrams either dropped for lack
        of room since the socket opened. None before start, or where the platform does not tell."""
        if not sys.platform.startswith("linux") or self._udp is None or self._udp.transport is None:
            return None
        sock = self._udp.transport.get_extra_info("socket")
        if sock is None:
            return None
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 4 * _SK_MEMINFO_VARS)
        except (OSError, AttributeError, TypeError):
            return None
        values = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
        if len(values) < 2:
            return None
        drops = values[_SK_MEMINFO_DROPS] if len(values) > _SK_MEMINFO_DROPS else 0
        return ReceiveBacklog(queued=values[0] + self._inbox_bytes, capacity=values[1] + INBOX_LIMIT_BYTES,
                              drops=drops + self._inbox_drops)

    async def _connect(self, destination: Addr, kind: str = "tcp") -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_TCP_CONNECT_TIMEOUT + (_TLS_HANDSHAKE_TIMEOUT if kind == "tls" else 0)):
                if kind == "tls":
                    if self._tls_client_context is None:
                        raise ConnectionError("TLS is not configured")
                    name, verify = self._tls_peers.get(destination, (destination[0], True))
                    await loop.create_connection(
                        lambda: _TcpConnection(self, destination, kind="tls"), *destination,
                        ssl=self._tls_client_context(verify), server_hostname=name,
                        ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT,
                    )
                else:
                    await loop.create_connection(lambda: _TcpConnection(self, destination), *destination)
        except (OSError, TimeoutError) as exc:
            self._pending_tcp.pop((kind, destination), None)
            self._on_error(f"{kind} connect failed: {_reason(exc)}", destination, kind)
            return
        queued = self._pending_tcp.pop((kind, destination), [])
        conn = (self._tls_connections if kind == "tls" else self._tcp_connections).get(destination)
        if conn is not None:
            for data in queued:
                conn.send(data)

    async def close(self) -> None:
        self._closed = True
        self._inbox.clear()
        self._inbox_bytes = 0
        if self._tcp_server is not None:
            self._tcp_server.close()
        if self._tls_accepting is not None:
            self._tls_accepting.cancel()  # before the socket closes: asyncio's sock_accept would not wake up
        if self._tls_listener is not None:
            self._tls_listener.close()
        for conn in [*self._tcp_connections.values(), *self._tls_connections.values()]:
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


def _reason(exc: BaseException) -> str:
    """A short reason for the log: the OpenSSL reason when there is one (never key material)."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{type(exc).__name__}: {exc.reason}" + (
            f" ({exc.verify_message})" if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message else ""
        )
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
