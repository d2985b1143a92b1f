"""What the API's routes work with: the call manager (as the narrow protocol the routes use), the store,
and the call recorder; plus the helpers that turn an ``AssistantError`` into a 422 with the field path."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import HTTPException

from gateway.api.recorder import CallRecorder
from gateway.assistants import Assistant, AssistantError
from gateway.call import Call
from gateway.call_types import CallTarget
from gateway.config import GatewayConfig
from gateway.observability.metrics import Metrics
from gateway.store import Store
from gateway.transport.rtp_endpoint import PortPool

__all__ = ["BAD_BODY", "ApiContext", "CallService", "assistant_problem", "field_problem", "problem"]

# FastAPI answers 400 itself when a body cannot be decoded at all (not UTF-8): documented on every route
# that takes a body. A body that is JSON but wrong is a 422.
BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body could not be read (not UTF-8 JSON)", "content": {"application/json": {
        "schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}}},
}


class CallService(Protocol):
    """The part of ``gateway.calls.CallManager`` the API uses."""

    calls: dict[str, Call]
    config: GatewayConfig
    ports: PortPool

    def get(self, call_id: str) -> Call | None: ...

    def assistant_for(self, target: CallTarget) -> Assistant | None: ...

    async def place_call(
        self,
        *,
        number: str | None = None,
        sip_uri: str | None = None,
        trunk: str | None = None,
        target: CallTarget,
        from_user: str | None = None,
        display_name: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Call: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiContext:
    calls: CallService
    store: Store
    recorder: CallRecorder
    metrics: Metrics
    api_key: str | None
    is_ready: Callable[[], bool]  # SIP bound and not draining
    is_draining: Callable[[], bool]


def problem(status: int, message: str, *, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers)


def _loc(path: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in path.split(".") if p]


def assistant_problem(exc: AssistantError) -> HTTPException:
    """422 in FastAPI's validation shape: one ``{loc, msg, type}`` per problem, ``loc`` the JSON path
    (the AssistantError was raised with ``where="body..."``)."""
    detail: list[dict[str, Any]] = [
        {"type": "assistant_error", "loc": _loc(path), "msg": message} for path, message in exc.problems
    ]
    return HTTPException(status_code=422, detail=detail)


def field_problem(loc: list[str | int], message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=[{"type": "value_error", "loc": loc, "msg": message}])
