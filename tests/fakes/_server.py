"""Run a fake vendor's ASGI app on 127.0.0.1 with uvicorn: in-process for tests, or as its own process.

In a test::

    async with serve_app(fake.app) as base_url:   # "http://127.0.0.1:PORT", PORT picked by the kernel
        ...

As a process (benchmarks, manual runs), a fake module ends with ``main(app_factory, sys.argv[1:])`` so that
``python -m tests.fakes.<name> --port N`` prints ``listening on http://127.0.0.1:PORT`` and serves until
SIGINT/SIGTERM. ``app_factory`` receives the parsed arguments (``host``, ``port`` and whatever
``add_arguments`` declared) and returns the app.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Callable, Generator, Sequence

import uvicorn
from starlette.types import ASGIApp

__all__ = ["main", "serve_app"]

START_DEADLINE = 10.0
STOP_DEADLINE = 5.0


class _InProcessServer(uvicorn.Server):
    """A uvicorn server that leaves the host process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve_app(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0,
                    log_level: str = "warning") -> AsyncIterator[str]:
    """Serve ``app`` for the duration of the block; yields its base URL (``http://host:port``)."""
    sock = _bind(host, port)
    config = uvicorn.Config(app, log_level=log_level, lifespan="off", timeout_graceful_shutdown=1,
                            ws_ping_interval=None)
    server = _InProcessServer(config)
    # The server task is owned by this block and always awaited before it ends. (Not a TaskGroup: a
    # TaskGroup would wrap an exception raised in the caller's block into an ExceptionGroup.)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(START_DEADLINE):
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped it
                    raise RuntimeError("fake server stopped before it started")
                await asyncio.sleep(0.005)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(STOP_DEADLINE):
                await asyncio.shield(task)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            await asyncio.wait([task])
        sock.close()


def main(app_factory: Callable[[argparse.Namespace], ASGIApp], argv: Sequence[str] | None = None, *,
         add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
         description: str | None = None) -> None:
    """Parse ``--host``/``--port`` (and ``add_arguments``' options), build the app, print
    ``listening on http://HOST:PORT`` and serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the kernel pick a free port")
    parser.add_argument("--log-level", default="warning")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    app = app_factory(args)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with serve_app(app, host=args.host, port=args.port, log_level=args.log_level) as base_url:
            print(f"listening on {base_url}", flush=True)
            await stop.wait()

    asyncio.run(run())
