"""gateway/providers/http_pool.py: httpx requests on aiohttp's connection pool behave as httpx's own transport
does for the SDKs that use them: the same response (status, headers, decoded body), kept-alive connections
reused, an abandoned body's connection not reused, aiohttp's failures raised as the httpx errors the SDKs
map (connect / timeout / a cut response), proxies from the environment."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import httpx
import pytest

from gateway.providers.http_pool import shared_client
from tests.helpers.raw_http import read_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Server:
    """A raw HTTP/1.1 server on 127.0.0.1: ``answer(head)`` gives each request's bytes to write back
    (``None``: hang up without answering; ``...``: never answer)."""

    def __init__(self, answer: Callable[[bytes], object], *, hang_up_after: bool = False) -> None:
        self.answer = answer
        self.hang_up_after = hang_up_after
        self.connections = 0
        self.heads: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await read_request(reader)
                self.heads.append(head)
                reply = self.answer(head)
                if reply is Ellipsis:
                    await asyncio.sleep(30)
                if not isinstance(reply, bytes):
                    return
                writer.write(reply)
                await writer.drain()
                if self.hang_up_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went, or the test's loop is ending
        finally:
            writer.close()


def _run(server: _Server, body: Callable[[str], Awaitable[object]]) -> object:
    async def main() -> object:
        listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        try:
            return await body(f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}")
        finally:
            listener.close()
    return asyncio.run(main())


def _ok(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), b"".join(e + b"\r\n" for e in extra), body)


def test_responses_and_kept_alive_connections_as_with_httpx() -> None:
    packed = gzip.compress(b'{"text": "hello"}')
    server = _Server(lambda head: _ok(packed, b"content-encoding: gzip", b"x-request-id: r1") if b"/json" in head
                     else _ok(b"plain"))

    async def body(url: str) -> list[object]:
        client = shared_client(timeout=5)
        try:
            got = await client.post(f"{url}/json", json={"a": 1}, headers={"xi-api-key": "k"})
            plain = [(await client.get(f"{url}/plain")).text for _ in range(3)]
            return [got.status_code, got.json(), got.headers["x-request-id"], plain]
        finally:
            await client.aclose()

    assert _run(server, body) == [200, {"text": "hello"}, "r1", ["plain"] * 3]
    assert server.connections == 1  # four requests, one kept-alive connection
    first = server.heads[0].lower()
    assert first.startswith(b"post /json http/1.1") and b"xi-api-key: k" in first
    assert b"content-type: application/json" in first


def test_a_body_abandoned_half_read_is_not_reused() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"4\r\nabcd\r\n" * 2)
    server = _Server(lambda head: chunked if b"/stream" in head else _ok(b"next"))  # the stream never ends

    async def body(url: str) -> str:
        client = shared_client(timeout=5)
        try:
            async with client.stream("GET", f"{url}/stream") as response:
                async for chunk in response.aiter_raw():
                    assert chunk
                    break
            return (await client.get(f"{url}/next")).text
        finally:
            await client.aclose()

    assert _run(server, body) == "next"
    assert server.connections == 2


@pytest.mark.parametrize(("answer", "hang_up", "error"), [
    (None, True, httpx.RemoteProtocolError),  # hung up without a response
    (..., False, httpx.ReadTimeout),  # never answers
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", True, httpx.RemoteProtocolError),  # body cut short
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nstalls", False, httpx.ReadTimeout),  # body stalls
    (b"NOT HTTP AT ALL\r\n\r\n", True, httpx.RemoteProtocolError),
], ids=["no-response", "no-answer", "cut-body", "stalled-body", "garbage"])
def test_failures_are_the_httpx_errors_the_sdks_map(answer: object, hang_up: bool, error: type[Exception]) -> None:
    server = _Server(lambda head: answer, hang_up_after=hang_up)

    async def body(url: str) -> type[BaseException]:
        client = shared_client(timeout=0.3)
        try:
            await client.get(f"{url}/x")
        except Exception as exc:
            return type(exc)
        finally:
            await client.aclose()
        raise AssertionError("no error")

    raised = _run(server, body)
    assert isinstance(raised, type) and issubclass(raised, error), raised


def test_a_refused_connection_is_a_connect_error() -> None:
    async def body() -> None:
        client = shared_client(timeout=2)
        try:
            with pytest.raises(httpx.ConnectError):
                await client.get("http://127.0.0.1:9/")
        finally:
            await client.aclose()
    asyncio.run(body())


def test_the_same_client_serves_a_second_event_loop() -> None:
    server = _Server(lambda head: _ok(b"again"))
    client = shared_client(timeout=5)

    async def body(url: str) -> list[str]:
        return [(await client.get(url)).text, (await asyncio.to_thread(_second_loop, client, url))]

    def _second_loop(client: httpx.AsyncClient, url: str) -> str:
        async def get() -> str:
            return (await client.get(url)).text
        return asyncio.run(get())

    assert _run(server, body) == ["again", "again"]


def test_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = _Server(lambda head: _ok(b"via proxy"))

    async def body(url: str) -> list[str]:
        monkeypatch.setenv("HTTP_PROXY", url)
        monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
        client = shared_client(timeout=5)
        try:
            text = (await client.get("http://vendor.invalid/v1/x")).text
            with pytest.raises(httpx.ConnectError):  # not proxied: its name does not resolve
                await client.get("http://bypassed.invalid/")
            return [text]
        finally:
            await client.aclose()

    assert _run(proxy, body) == ["via proxy"]
    assert proxy.heads[0].startswith(b"GET http://vendor.invalid/v1/x HTTP/1.1")
    assert len(proxy.heads) == 1
