"""SIP over TLS at the transport edge (RFC 3261 §26.2): framing like TCP, connection reuse, outbound
verification of the peer's name, and handshake failures reported and closed."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from gateway.transport.sip_transport import Addr, SipTransport
from gateway.transport.tls import client_context, server_context
from tests.helpers.certs import PkiFiles, make_pki

OPTIONS = (
    b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK1\r\n"
    b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


class Collector:
    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[bytes, Addr, str]] = asyncio.Queue()
        self.errors: asyncio.Queue[tuple[str, Addr, str]] = asyncio.Queue()

    def receive(self, data: bytes, source: Addr, transport: str) -> None:
        self.messages.put_nowait((data, source, transport))

    def error(self, reason: str, peer: Addr, transport: str) -> None:
        self.errors.put_nowait((reason, peer, transport))


async def tls_server(tasks: asyncio.TaskGroup, pki: PkiFiles, collector: Collector) -> tuple[SipTransport, Addr]:
    transport = SipTransport(collector.receive, collector.error, tasks)
    await transport.start("127.0.0.1", 0)
    addr = await transport.start_tls(
        "127.0.0.1", 0, server_context(str(pki.cert_file), str(pki.key_file)),
        lambda verify: client_context(ca_file=str(pki.ca_file), verify=verify),
    )
    assert addr is not None
    return transport, addr


def run(coro_factory: object) -> None:
    asyncio.run(asyncio.wait_for(coro_factory(), 20))  # type: ignore[operator]


def test_inbound_tls_is_framed_and_the_response_reuses_the_connection(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    async def scenario() -> None:
        collector = Collector()
        async with asyncio.TaskGroup() as tasks:
            server, addr = await tls_server(tasks, pki, collector)
            context = ssl.create_default_context(cafile=str(pki.ca_file))
            reader, writer = await asyncio.open_connection(*addr, ssl=context, server_hostname="localhost")
            writer.write(OPTIONS[:40])
            await writer.drain()
            writer.write(OPTIONS[40:] + OPTIONS)  # the rest, then a second message in the same record
            data, peer, kind = await collector.messages.get()
            assert (data, kind) == (OPTIONS, "tls")
            assert (await collector.messages.get())[0] == OPTIONS
            server.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", peer, "tls")
            assert await reader.readuntil(b"\r\n\r\n") == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
            writer.close()
            await server.close()

    run(scenario)


def test_plain_tcp_client_on_the_tls_port_is_logged_and_closed(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    async def scenario() -> None:
        collector = Collector()
        async with asyncio.TaskGroup() as tasks:
            server, addr = await tls_server(tasks, pki, collector)
            reader, writer = await asyncio.open_connection(*addr)
            writer.write(OPTIONS)
            reason, peer, kind = await collector.errors.get()
            assert kind == "tls" and reason.startswith("tls handshake failed") and peer[0] == "127.0.0.1"
            assert await reader.read() == b""  # closed by the server
            assert collector.messages.empty()
            writer.close()
            await server.close()

    run(scenario)


def test_outbound_tls_verifies_the_server_name(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    async def scenario() -> None:
        server_seen, client_seen = Collector(), Collector()
        async with asyncio.TaskGroup() as tasks:
            server, addr = await tls_server(tasks, pki, server_seen)
            client = SipTransport(client_seen.receive, client_seen.error, tasks)
            await client.start("127.0.0.1", 0)
            await client.start_tls("127.0.0.1", 0, None,
                                   lambda verify: client_context(ca_file=str(pki.ca_file), verify=verify))
            client.set_tls_peer(addr, "localhost")
            client.send(OPTIONS, addr, "tls")
            data, peer, kind = await server_seen.messages.get()
            assert (data, kind) == (OPTIONS, "tls")
            server.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", peer, "tls")
            assert (await client_seen.messages.get())[1:] == (addr, "tls")

            # The same server under a name its certificate does not carry: refused, reported.
            other = Collector()
            wrong = SipTransport(other.receive, other.error, tasks)
            await wrong.start("127.0.0.1", 0)
            await wrong.start_tls("127.0.0.1", 0, None,
                                  lambda verify: client_context(ca_file=str(pki.ca_file), verify=verify))
            wrong.set_tls_peer(addr, "trunk.example.com")
            wrong.send(OPTIONS, addr, "tls")
            reason, _, kind = await other.errors.get()
            assert kind == "tls" and "tls connect failed" in reason and "certificate" in reason.lower()
            for transport in (wrong, client, server):
                await transport.close()

    run(scenario)


LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.mark.parametrize("loop", LOOPS)
def test_clients_whose_hello_arrives_with_the_connection_all_get_through(tmp_path: Path, loop: str) -> None:
    """Twenty clients connect at once and send their ClientHello straight away (blocking sockets in threads, as
    a PBX does): every handshake completes. Accepting as plain TCP and upgrading afterwards lost the hellos that
    uvloop read in between (0 of 20 got through), and those calls hung until the handshake timeout."""
    pki = make_pki(tmp_path)
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    results: list[str] = []

    def client(addr: Addr) -> None:
        try:
            with socket.create_connection(addr, timeout=5) as raw, context.wrap_socket(raw, server_hostname="localhost"):
                results.append("ok")
        except (OSError, ssl.SSLError) as exc:
            results.append(repr(exc))

    async def scenario() -> None:
        collector = Collector()
        async with asyncio.TaskGroup() as tasks:
            server, addr = await tls_server(tasks, pki, collector)
            threads = [threading.Thread(target=client, args=(addr,)) for _ in range(20)]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                await asyncio.sleep(0.02)
            await server.close()
        assert collector.errors.empty()

    LOOPS[loop](asyncio.wait_for(scenario(), 20))
    assert results == ["ok"] * 20
