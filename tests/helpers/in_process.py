"""A gateway running inside the test's own event loop (``gateway.app.serve``), for tests that need its objects
(the call manager, the UA) while real peers (SIPp) talk to it over loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from gateway.app import Gateway, serve
from gateway.config import GatewayConfig


@contextlib.asynccontextmanager
async def running_gateway(config: GatewayConfig, *, deadline: float = 15.0) -> AsyncIterator[Gateway]:
    """Serve ``config`` until the block ends (then stop without draining); fails with the reason if the gateway
    stops on its own, and bounds starting and stopping by ``deadline`` seconds each."""
    ready: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(config, ready=ready))
    try:
        async with asyncio.timeout(deadline):
            waiters: list[asyncio.Future[Any]] = [ready, server]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            server.result()  # raises why it stopped
        yield ready.result()
    finally:
        if ready.done() and not ready.cancelled():
            ready.result().request_stop(drain=False)
        else:
            server.cancel()
        async with asyncio.timeout(deadline):
            await asyncio.gather(server, return_exceptions=True)
