"""A customer's server for ``assistant-request`` on loopback: records what the gateway POSTed and answers
with whatever the test scripted (a JSON body, a status, a delay, or raw garbage)."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["Answer", "AssistantServer", "Received"]


@dataclass(frozen=True)
class Answer:
    body: Any = None  # JSON-serialisable; ignored when ``raw`` is given
    status: int = 200
    delay: float = 0.0
    raw: bytes | None = None


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> dict[str, Any]:
        payload = json.loads(self.body)
        assert isinstance(payload, dict)
        message = payload["message"]
        assert isinstance(message, dict)
        return message


@dataclass
class AssistantServer:
    answer: Answer = field(default_factory=Answer)
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.received.append(Received({k.lower(): v for k, v in request.headers.items()}, body))
        answer = self.answer
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.raw is not None:
            return Response(answer.raw, status_code=answer.status, media_type="application/json")
        return JSONResponse(answer.body, status_code=answer.status)
