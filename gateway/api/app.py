"""The HTTP API as a FastAPI app (Vapi-shaped ``/call`` and ``/assistant``, plus health, readiness and
metrics), served by ``gateway.api.server`` in the gateway's own event loop.

Authentication: when ``http.api_key`` is set, every route except ``/healthz``, ``/readyz``, ``/metrics`` and
``/openapi.json`` demands ``Authorization: Bearer <key>`` (compared in constant time) and answers 401
otherwise. Health and metrics stay open for probes and scrapers, as the architecture's external interface
says; the OpenAPI document holds no secrets.

Every request is counted in ``voicegw_api_requests{route,status_class}`` with the route template
(``/call/{id}``), never an id.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.context import ApiContext, CallService
from gateway.api.models import ErrorBody, Health
from gateway.api.recorder import CallRecorder
from gateway.api.routes_assistants import assistants_router
from gateway.api.routes_calls import calls_router
from gateway.observability.metrics import Metrics, status_class
from gateway.store import Store

__all__ = ["create_app"]

API_VERSION = "1"
# The security scheme (stateless): how the key is read, and how OpenAPI documents it.
BEARER = HTTPBearer(auto_error=False, description="http.api_key of the gateway's config")


def create_app(
    calls: CallService,
    store: Store,
    *,
    metrics: Metrics,
    recorder: CallRecorder | None = None,
    api_key: str | None = None,
    is_ready: Callable[[], bool] = lambda: True,
    is_draining: Callable[[], bool] = lambda: False,
) -> FastAPI:
    """The API over ``calls`` (a ``CallManager``) and ``store``; ``recorder`` must be the observer that
    writes ``store``'s call records (one is made when not given, for tests that do not record calls)."""
    ctx = ApiContext(calls=calls, store=store, recorder=recorder or CallRecorder(store), metrics=metrics,
                     api_key=api_key or None, is_ready=is_ready, is_draining=is_draining)
    app = FastAPI(
        title="voicegw",
        version=API_VERSION,
        summary="Self-hosted voice-AI SIP gateway: Vapi-shaped calls and assistants",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(_CountRequests, metrics=metrics)

    dependencies = [] if ctx.api_key is None else [Depends(_bearer_check(ctx.api_key))]
    auth_responses: dict[int | str, dict[str, Any]] = (
        {} if ctx.api_key is None
        else {401: {"model": ErrorBody, "description": "missing or wrong Authorization: Bearer <api key>"}}
    )
    api = APIRouter(dependencies=dependencies, responses=auth_responses)
    api.include_router(calls_router(ctx))
    api.include_router(assistants_router(ctx))
    app.include_router(api)
    app.include_router(_operations_router(ctx))
    return app


def _bearer_check(api_key: str) -> Callable[..., None]:
    expected = api_key.encode()

    def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if credentials is None or not hmac.compare_digest(given, expected):
            raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})

    return check


def _operations_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["Operations"])

    @router.get("/healthz", response_model=Health, summary="Liveness: 200 while the process runs")
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get(
        "/readyz", response_model=Health, summary="Readiness: 200 when SIP is bound and not draining",
        responses={503: {"model": Health, "description": "draining (SIGTERM) or not started"}},
    )
    async def readyz(response: Response) -> Health:
        if ctx.is_ready():
            return Health(status="ready")
        response.status_code = 503
        return Health(status="draining" if ctx.is_draining() else "starting")

    @router.get(
        "/metrics", summary="Prometheus metrics", response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                         "description": "Prometheus text exposition format"}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


class _CountRequests:
    """ASGI middleware: ``api_requests{route,status_class}`` per HTTP request (route: the matched template,
    ``unmatched`` when no route matched)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.api_requests.labels(template, status_class(status)).inc()
