"""HTTP connection pools for provider clients that every call shares (ElevenLabs).

httpx's pool (httpcore 1.0) re-examines every connection it holds on each request it starts or ends:
a cleanup pass that, for each idle connection, counts the idle connections again, and for each queued
request two passes over all connections. One pool serving a few hundred concurrent calls therefore costs
time in the square of its size on every turn; measured at 150 conversational calls against instant fake
providers, that bookkeeping was about a quarter of the gateway's CPU (py-spy, ``bench_conversation.py
--profile``). httpx's default limits also queue the 101st concurrent request of a client (100
connections) and close all but 20 idle ones, so a busy gateway waited for a free connection and opened
a new TCP (and TLS) connection for most requests.

:class:`HttpPool` is a fixed set of independent httpx clients, each request on the least busy one: each holds a fraction of
the connections, so a request costs the pool's bookkeeping over ``connections / shards``, nothing queues
behind a connection cap, and idle connections are kept for reuse (``KEEPALIVE_PER_SHARD`` each, for
``KEEPALIVE_EXPIRY`` seconds). The clients share one TLS context (CA bundle loaded once).

The OpenAI SDK brings its own client (``httpx2``, whose pool does this bookkeeping in linear time, with a
cap of 1,000 connections): it needs none of this.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Iterator
from typing import Final

import httpx

__all__ = ["KEEPALIVE_EXPIRY", "KEEPALIVE_PER_SHARD", "SHARDS", "HttpPool"]

SHARDS: Final = 16
KEEPALIVE_PER_SHARD: Final = 32  # 512 idle connections in all: a reply per call waiting for its next turn
KEEPALIVE_EXPIRY: Final = 30.0  # seconds an idle connection is kept: longer than a turn, shorter than LBs' idle cut


class HttpPool:
    """``shards`` httpx clients without a connection cap, each request on the least busy (:meth:`lease`)."""

    def __init__(self, *, timeout: float, follow_redirects: bool = True, shards: int = SHARDS,
                 keepalive: int = KEEPALIVE_PER_SHARD, keepalive_expiry: float = KEEPALIVE_EXPIRY) -> None:
        if shards < 1:
            raise ValueError(f"an HTTP pool needs at least one client, not {shards}")
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=keepalive,
                              keepalive_expiry=keepalive_expiry)
        tls = _tls_context()
        self.clients: tuple[httpx.AsyncClient, ...] = tuple(
            httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=follow_redirects, limits=limits,
                              verify=tls)
            for _ in range(shards)
        )
        self._active = [0] * shards

    @contextlib.contextmanager
    def lease(self) -> Iterator[int]:
        """The index of the client with the fewest requests in flight, for one request (its whole
        response): load stays even, and a burst like the last one finds its connections where they were."""
        active = self._active
        index = active.index(min(active))
        active[index] += 1
        try:
            yield index
        finally:
            active[index] -= 1

    async def aclose(self) -> None:
        """Close every client's connections."""
        for client in self.clients:
            await client.aclose()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification context (certifi's CA bundle), built once for every pool."""
    return httpx.create_ssl_context()
