"""Serve an ASGI app on loopback from a background thread, for synchronous integration tests that run a
gateway process and need a customer's HTTP server next to it (assistant-request, webhooks, tools)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence

from starlette.types import ASGIApp

from tests.fakes._server import serve_app

__all__ = ["serve_apps_in_thread", "serve_in_thread"]


@contextlib.contextmanager
def serve_in_thread(app: ASGIApp, *, port: int = 0) -> Iterator[str]:
    """Yields the base URL (``http://127.0.0.1:PORT``); the server stops when the block ends."""
    with serve_apps_in_thread([app], port=port) as urls:
        yield urls[0]


@contextlib.contextmanager
def serve_apps_in_thread(apps: Sequence[ASGIApp], *, port: int = 0) -> Iterator[list[str]]:
    """Serve several apps from one thread (one event loop); yields their base URLs in order. ``port`` applies
    to a single app (0: the kernel picks)."""
    ready = threading.Event()
    urls: list[str] = []
    failure: list[BaseException] = []
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    async def main() -> None:
        nonlocal stop, loop
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            for app in apps:
                urls.append(await stack.enter_async_context(serve_app(app, port=port if len(apps) == 1 else 0)))
            ready.set()
            await stop.wait()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=thread_main, name="http-thread", daemon=True)
    thread.start()
    ready.wait(15)
    if failure or len(urls) != len(apps):
        raise RuntimeError(f"HTTP servers did not start: {failure!r}")
    try:
        yield list(urls)
    finally:
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
