"""``/assistant``: assistants created over the API, persisted in SQLite, usable as ``assistantId`` in
``POST /call``, in a number's assistant-request answer, and anywhere a config assistant's name is.

Bodies are Vapi assistant objects, validated as the config loader validates them (422 with the JSON path of
each problem). ``PATCH`` is Vapi's update: the top-level fields given replace the stored ones, ``null``
removes a field (it takes its default). ``id``, ``orgId``, ``createdAt`` and ``updatedAt`` are the server's:
in a body they are ignored, so an object read with GET can be sent back as is.

Assistants of the config file are addressable by name in ``assistantId`` but are not listed here: they are
read-only and belong to the config.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from gateway.api.context import BAD_BODY, ApiContext, assistant_problem, problem
from gateway.api.models import AssistantObject, ErrorBody
from gateway.assistants import AssistantError, parse_assistant
from gateway.store import dt_to_us

__all__ = ["assistants_router"]

SERVER_FIELDS = frozenset({"id", "orgId", "createdAt", "updatedAt"})
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "no assistant with this id"}}
_BODY_DOC = ("a Vapi assistant object (model, voice, transcriber, firstMessage, ...); see "
             "config/ for examples")
AssistantBody = Annotated[
    dict[str, Any],
    Body(description=_BODY_DOC, examples=[{"name": "front-desk", "firstMessage": "Hello, how can I help?",
                                            "model": {"provider": "rules", "rules": []}}]),
]


def _validated(body: dict[str, Any]) -> dict[str, Any]:
    clean = {k: v for k, v in body.items() if k not in SERVER_FIELDS}
    try:
        parse_assistant(clean, where="body")
    except AssistantError as exc:
        raise assistant_problem(exc) from None
    return clean


def assistants_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["Assistants"])
    store = ctx.store

    @router.post("/assistant", status_code=201, response_model=AssistantObject, responses=BAD_BODY,
                 summary="Create Assistant")
    async def create_assistant(body: AssistantBody) -> dict[str, Any]:
        record = await store.create_assistant(_validated(body))
        return record.to_json()

    @router.get("/assistant", response_model=list[AssistantObject], summary="List Assistants")
    async def list_assistants(
        limit: Annotated[int, Query(ge=0, le=1000)] = 100,
        created_at_gt: Annotated[datetime | None, Query(alias="createdAtGt")] = None,
        created_at_lt: Annotated[datetime | None, Query(alias="createdAtLt")] = None,
        created_at_ge: Annotated[datetime | None, Query(alias="createdAtGe")] = None,
        created_at_le: Annotated[datetime | None, Query(alias="createdAtLe")] = None,
    ) -> list[dict[str, Any]]:
        """Assistants created over the API, newest first (config assistants are not listed)."""
        records = store.list_assistants(
            limit=limit,
            created_gt=None if created_at_gt is None else dt_to_us(created_at_gt),
            created_lt=None if created_at_lt is None else dt_to_us(created_at_lt),
            created_ge=None if created_at_ge is None else dt_to_us(created_at_ge),
            created_le=None if created_at_le is None else dt_to_us(created_at_le),
        )
        return [r.to_json() for r in records]

    @router.get("/assistant/{id}", response_model=AssistantObject, responses=_404, summary="Get Assistant")
    async def get_assistant(id: str) -> dict[str, Any]:
        record = store.assistant(id)
        if record is None:
            raise problem(404, f"no assistant {id!r}")
        return record.to_json()

    @router.patch("/assistant/{id}", response_model=AssistantObject, responses={**_404, **BAD_BODY},
                  summary="Update Assistant")
    async def update_assistant(id: str, body: AssistantBody) -> dict[str, Any]:
        record = store.assistant(id)
        if record is None:
            raise problem(404, f"no assistant {id!r}")
        merged = dict(record.body)
        for key, value in body.items():
            if key in SERVER_FIELDS:
                continue
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        updated = await store.replace_assistant(id, _validated(merged))
        if updated is None:  # deleted meanwhile
            raise problem(404, f"no assistant {id!r}")
        return updated.to_json()

    @router.delete("/assistant/{id}", response_model=AssistantObject, responses=_404, summary="Delete Assistant")
    async def delete_assistant(id: str) -> dict[str, Any]:
        record = await store.delete_assistant(id)
        if record is None:
            raise problem(404, f"no assistant {id!r}")
        return record.to_json()

    return router
