"""uvicorn inside the running loop: it serves on the socket bound beforehand, leaves the process's SIGINT and
SIGTERM handlers alone while it runs and after it stops, stops on request, and a busy port is an OSError."""

from __future__ import annotations

import asyncio
import signal
import socket

import httpx
import pytest
from fastapi import FastAPI

from gateway.api import ApiServer


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def test_serves_in_the_loop_without_touching_signal_handlers() -> None:
    def ours(signum: int, frame: object) -> None:
        raise AssertionError("not expected to run")

    before = {sig: signal.signal(sig, ours) for sig in (signal.SIGINT, signal.SIGTERM)}

    async def go() -> None:
        server = ApiServer(hello_app(), "127.0.0.1:0")
        task = asyncio.create_task(server.serve())
        host, port = server.address
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            async with asyncio.timeout(10):
                while not server.started:
                    await asyncio.sleep(0.01)
            assert (await client.get("/hello")).json() == {"hello": "world"}
            assert signal.getsignal(signal.SIGTERM) is ours and signal.getsignal(signal.SIGINT) is ours
        server.stop()
        async with asyncio.timeout(10):
            await task
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as client:
                await client.get(f"http://{host}:{port}/hello")

    try:
        asyncio.run(go())
        assert signal.getsignal(signal.SIGTERM) is ours and signal.getsignal(signal.SIGINT) is ours
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_busy_port_is_an_oserror() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError):
            ApiServer(hello_app(), f"127.0.0.1:{port}")
