"""A customer's tool server on loopback: receives Vapi ``tool-calls`` server messages and answers them.

``ToolServer(answer)`` records every POST (``requests``: path, headers with lower-case names, raw body) and
answers with ``answer(message) -> Answer`` (the parsed ``message`` object): a JSON body, a status, raw bytes
(garbage), or a delay (to make the gateway time out). The default answers each tool call of the message
with ``{"toolCallId": id, "result": "ok <name>"}``.

Use :func:`tests.fakes._server.serve_app` to serve ``app``; :func:`tool_server_thread` runs it in a
background thread for a synchronous integration test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes._server import serve_app

__all__ = ["Answer", "Received", "ToolServer", "default_answer", "tool_server_thread"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    body: Any = None  # JSON-encoded unless ``raw`` is given
    status: int = 200
    raw: bytes | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)["message"]
        return value


def default_answer(message: dict[str, Any]) -> Answer:
    return Answer(body={"results": [{"toolCallId": c["id"], "result": f"ok {c['function']['name']}"}
                                    for c in message.get("toolCallList", [])]})


@dataclass
class ToolServer:
    answer: Callable[[dict[str, Any]], Answer] = default_answer
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self.received = threading.Event()

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(Received(path=request.url.path, headers={k.lower(): v for k, v in request.headers.items()},
                                      body=body))
        self.received.set()
        try:
            message = json.loads(body)["message"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected {\"message\": {...}}"}, status_code=400)
        answer = self.answer(message)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.raw is not None:
            return Response(answer.raw, status_code=answer.status, media_type="text/plain")
        return JSONResponse(answer.body, status_code=answer.status)


@contextlib.contextmanager
def tool_server_thread(server: ToolServer) -> Iterator[str]:
    """Serve ``server`` on 127.0.0.1 in a background thread; yields its base URL."""
    ready = threading.Event()
    url: list[str] = []
    holder: dict[str, Any] = {}

    async def main() -> None:
        holder["loop"] = asyncio.get_running_loop()
        holder["stop"] = stop = asyncio.Event()
        async with serve_app(server.app) as base:
            url.append(base)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="tool-server", daemon=True)
    thread.start()
    if not ready.wait(15) or not url:
        raise RuntimeError("the tool server did not start")
    try:
        yield url[0]
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
