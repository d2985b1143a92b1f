"""The HTTP client that every call's provider requests share (OpenAI, ElevenLabs): httpx's API on aiohttp's
connection pool and C HTTP parser.

The vendors' SDKs speak httpx. httpx's own transport (httpcore, h11 in Python, anyio locks) was the largest
single cost of a conversational turn: at 150 calls against instant fake providers, the ElevenLabs requests
and the OpenAI turn were 19 % and 18 % of the event loop's samples, most of it in that transport (py-spy,
``bench_conversation.py --profile``; the A/B of an OpenAI turn is in ``benchmarks/results/llm_turn.md``).
httpcore 1.0's pool also re-examines every connection on each request (quadratic in the pool's size) and
httpx's default limits queue the 101st concurrent request and keep 20 idle connections (this module held
16 httpx clients to work around that before).

:class:`AiohttpTransport` is an ``httpx.AsyncBaseTransport``: the SDKs build their requests and read their
responses through httpx as before; this sends them on an ``aiohttp.TCPConnector`` without a connection cap,
keeping idle connections ``KEEPALIVE_EXPIRY`` seconds. aiohttp's errors become httpx's (what the SDKs and
our providers map to timeout / connection errors): connect failures ``ConnectError``/``ConnectTimeout``, no
response or a stalled body ``ReadTimeout``, a connection cut mid-response ``RemoteProtocolError``/``ReadError``.

Proxies come from the ``HTTP(S)_PROXY``/``NO_PROXY`` environment, as with httpx (read once, per host);
aiohttp's own ``trust_env`` is off because it reads ``~/.netrc`` in a thread for every request. One TLS
context (certifi's CA bundle via httpx, honouring ``SSL_CERT_FILE``) serves every client.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import httpx

__all__ = ["KEEPALIVE_EXPIRY", "AiohttpTransport", "shared_client"]

KEEPALIVE_EXPIRY: Final = 30.0  # seconds an idle connection is kept: longer than a turn, shorter than LBs' idle cut


def shared_client(*, timeout: float, follow_redirects: bool = True) -> httpx.AsyncClient:
    """An httpx client for provider SDKs on :class:`AiohttpTransport` (no connection cap)."""
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=follow_redirects,
                             transport=AiohttpTransport())


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent on one aiohttp connection pool (created on first use, in the running loop)."""

    def __init__(self, *, keepalive_expiry: float = KEEPALIVE_EXPIRY) -> None:
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxies = urllib.request.getproxies_environment()
        self._proxy_for: dict[tuple[str, str], str | None] = {}

    def _session_for(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=self._keepalive_expiry,
                                             ssl=_tls_context())
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
            self._loop = loop
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session_for(asyncio.get_running_loop())
        timeouts = request.extensions.get("timeout", {})
        headers = request.headers.multi_items()
        data: Any
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streamed body: aiohttp sends it chunked itself
            data = request.stream
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        url = str(request.url)
        try:
            response = await session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False, compress=None,
                proxy=self._proxy(request.url), server_hostname=request.extensions.get("sni_hostname"),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.get("connect"),
                                              sock_read=timeouts.get("read")),
            )
        except Exception as exc:
            raise _httpx_error(exc, request, responding=False) from exc
        return httpx.Response(status_code=response.status, headers=response.raw_headers,
                              stream=_Body(response, request), request=request,
                              extensions={"http_version": b"HTTP/1.1",
                                          "reason_phrase": (response.reason or "").encode("ascii", "replace")})

    def _proxy(self, url: httpx.URL) -> str | None:
        if not self._proxies:
            return None
        key = (url.scheme, url.host)
        if key not in self._proxy_for:
            bypass = urllib.request.proxy_bypass_environment(url.host, self._proxies)  # type: ignore[attr-defined]
            self._proxy_for[key] = None if bypass else self._proxies.get(url.scheme) or self._proxies.get("all")
        return self._proxy_for[key]

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                return
            if running is self._loop:
                await session.close()


class _Body(httpx.AsyncByteStream):
    """A response body as aiohttp reads it; closing it early closes the connection (aiohttp keeps a
    connection only when its body was read to the end)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _httpx_error(exc, self._request, responding=True) from exc

    async def aclose(self) -> None:
        self._response.release()


def _httpx_error(exc: Exception, request: httpx.Request, *, responding: bool) -> Exception:
    """aiohttp's exception as the httpx exception the SDKs expect; anything else as it is."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError):  # sock_read: no response, or the body stalled
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, DNS, TLS handshake
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed status line or headers
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return (httpx.ReadError if responding else httpx.ConnectError)(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message, request=request)
    return exc


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification context (certifi's CA bundle, ``SSL_CERT_FILE``), built once."""
    return httpx.create_ssl_context()
