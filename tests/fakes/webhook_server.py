"""A customer's webhook server on loopback: records every POST (headers, exact body) and answers as told.

In a test::

    receiver = WebhookReceiver(responses=[500, 200])        # first POST gets 500, then 200s
    with serve_in_thread(receiver.app) as base_url:          # a real uvicorn server in its own thread
        ...                                                  # point server.url at base_url + "/hook"
        receiver.wait_for(lambda r: r.of_type("end-of-call-report"), timeout=10)

``responses`` are consumed one per request, then ``default`` answers; each is a status code or a
:class:`Reply` (status, a delay before answering, a body). :func:`garbage_server` is a TCP server whose
answer is not HTTP at all. As a process: ``python -m tests.fakes.webhook_server --port N`` (prints each
message type it receives).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes._server import main

__all__ = ["Received", "Reply", "WebhookReceiver", "garbage_server"]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    delay: float = 0.0
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Received:
    """One POST as it arrived (header names lower-case) and the status it was answered with."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> dict[str, Any]:
        try:
            data = self.json
        except ValueError:
            return {}
        message = data.get("message") if isinstance(data, dict) else None
        return message if isinstance(message, dict) else {}

    @property
    def type(self) -> str | None:
        value = self.message.get("type")
        return value if isinstance(value, str) else None

    @property
    def call_id(self) -> str | None:
        call = self.message.get("call")
        return call.get("id") if isinstance(call, dict) else None


class WebhookReceiver:
    def __init__(self, *, responses: Iterable[int | Reply] = (), default: int | Reply = 200) -> None:
        self._responses = [r if isinstance(r, Reply) else Reply(r) for r in responses]
        self.default = default if isinstance(default, Reply) else Reply(default)
        self._received: list[Received] = []
        self._cond = threading.Condition()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        with self._cond:
            reply = self._responses.pop(0) if self._responses else self.default
        if reply.delay:
            await asyncio.sleep(reply.delay)
        received = Received("/" + request.path_params["path"], {k.lower(): v for k, v in request.headers.items()},
                            body, reply.status)
        with self._cond:
            self._received.append(received)
            self._cond.notify_all()
        return Response(reply.body, status_code=reply.status, media_type="application/json")

    @property
    def received(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    def of_type(self, message_type: str, *, delivered: bool = True) -> list[Received]:
        """Requests carrying ``message_type`` (only those answered 2xx unless ``delivered`` is False)."""
        return [r for r in self.received if r.type == message_type and (not delivered or 200 <= r.status < 300)]

    def wait_for(self, predicate: Callable[[WebhookReceiver], object], timeout: float = 10.0) -> None:
        """Block until ``predicate(self)`` is true; AssertionError with what arrived after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = [(r.type, r.status) for r in self.received]
                raise AssertionError(f"webhook receiver: condition not met within {timeout}s; got {got}")
            with self._cond:
                self._cond.wait(min(remaining, 0.2))

    async def wait_for_async(self, predicate: Callable[[WebhookReceiver], object], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def garbage_server(answer: bytes = b"this is not HTTP\r\n\r\n") -> AsyncIterator[str]:
    """A TCP server on loopback that reads a request and answers ``answer`` (not HTTP), then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.read(65536), 5)
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def _app(args: argparse.Namespace) -> Any:
    receiver = WebhookReceiver(default=args.status)
    original = receiver._handle

    async def printing(request: Request) -> Response:
        response = await original(request)
        last = receiver.received[-1]
        print(f"{last.status} {last.type} call={last.call_id}", flush=True)
        return response

    receiver.app = Starlette(routes=[Route("/{path:path}", printing, methods=["POST"])])
    return receiver.app


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", type=int, default=200, help="status every POST is answered with")


if __name__ == "__main__":
    main(_app, add_arguments=_arguments, description="A webhook receiver that records server messages")
