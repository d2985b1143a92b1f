"""``/call``: place outbound calls, list and read calls (live ones and the stored records of ended ones), hang
up, steer a live call (Vapi's live call control), read a call's event log.

``DELETE /call/{id}`` hangs up a live call (endedReason ``manually-canceled``) and returns it; on a call that
has ended it deletes the stored record and its event log, as Vapi's DELETE deletes a call's data.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, assert_never

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import FileResponse

from gateway.api.context import BAD_BODY, ApiContext, assistant_problem, field_problem, problem
from gateway.api.models import (
    AddMessageControl,
    CallLog,
    CallObject,
    ControlAccepted,
    CreateCall,
    EndCallControl,
    ErrorBody,
    LiveControl,
    MuteControl,
    SayControl,
    TransferControl,
)
from gateway.assistants import AssistantError, merge_overrides, override_variable_values, parse_assistant
from gateway.call import Call
from gateway.call_transfer import transfer
from gateway.call_types import CallState, CallTarget
from gateway.calls import CallError
from gateway.store import CallQuery, dt_to_us, iso_to_us

__all__ = ["calls_router"]

RETRY_AFTER = "5"
ENDED_BY_API = "manually-canceled"
TRANSFER_WAIT_SECONDS = 5.0

_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "no call with this id"}}


def _us(moment: datetime | None) -> int | None:
    return None if moment is None else dt_to_us(moment)


def calls_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(tags=["Calls"])
    manager = ctx.calls

    def live_object(call: Call) -> dict[str, Any]:
        return ctx.recorder.call_object(call)

    async def find(call_id: str) -> tuple[Call | None, dict[str, Any]]:
        call = manager.get(call_id)
        if call is not None:
            return call, live_object(call)
        stored = await ctx.store.get_call(call_id)
        if stored is None:
            raise problem(404, f"no call {call_id!r}")
        return None, stored

    @router.post(
        "/call", status_code=201, response_model=CallObject, summary="Create Call",
        responses={400: {"model": ErrorBody, "description": "the call could not be placed, or the body could not "
                         "be read"},
                   503: {"model": ErrorBody, "description": "draining, or no media ports free: retry later"}},
    )
    async def create_call(body: CreateCall) -> dict[str, Any]:
        """Dial ``customer.number`` through a trunk (``phoneNumberId``, default the first trunk) or
        ``customer.sipUri`` directly, and connect the callee to the assistant once answered. Returns the call
        at once (status ``queued``); follow it with ``GET /call/{id}``."""
        overrides = body.assistant_overrides
        try:
            if body.assistant is not None:
                assistant = parse_assistant(body.assistant, where="body.assistant")
            else:
                assert body.assistant_id is not None
                found = manager.assistant_for(CallTarget("assistant", body.assistant_id))
                if found is None:
                    raise field_problem(["body", "assistantId"], f"no assistant {body.assistant_id!r} (neither "
                                        "a config assistant's name nor a stored assistant's id)")
                assistant = found
            values: dict[str, Any] = {}
            if overrides:
                merge_overrides(assistant, overrides, where="body.assistantOverrides")
                values = override_variable_values(overrides, where="body.assistantOverrides")
        except AssistantError as exc:
            raise assistant_problem(exc) from None
        if ctx.is_draining():
            raise problem(503, "the gateway is draining", headers={"Retry-After": RETRY_AFTER})
        target = CallTarget("assistant", body.assistant_id, assistant=body.assistant, overrides=overrides,
                            variable_values=values or None)
        customer = body.customer
        destination = customer.number if customer.number is not None else customer.sip_uri
        if destination is not None and not manager.config.security.outbound_allows(destination):
            # security.outbound_allow: the toll-fraud guard (an API key alone must not reach any number)
            raise problem(403, f"destination {destination!r} is not in security.outbound_allow")
        try:
            call = await manager.place_call(number=customer.number, sip_uri=customer.sip_uri,
                                            trunk=body.phone_number_id, target=target)
        except CallError as exc:
            if ctx.is_draining() or manager.ports.in_use >= manager.ports.capacity:
                raise problem(503, str(exc), headers={"Retry-After": RETRY_AFTER}) from None
            raise problem(400, str(exc)) from None
        extras: dict[str, Any] = {}
        if body.name is not None:
            extras["name"] = body.name
        if body.phone_number_id is not None:
            extras["phoneNumberId"] = body.phone_number_id
        customer_fields = customer.model_dump(by_alias=True, exclude_none=True,
                                              include={"name", "email", "external_id", "sip_uri"})
        if customer_fields:
            extras["customer"] = customer_fields
        ctx.recorder.set_extras(call, extras)
        return live_object(call)

    @router.get("/call", response_model=list[CallObject], summary="List Calls")
    async def list_calls(
        id: str | None = None,
        assistant_id: Annotated[str | None, Query(alias="assistantId")] = None,
        phone_number_id: Annotated[str | None, Query(alias="phoneNumberId")] = None,
        limit: Annotated[int, Query(ge=0, le=1000)] = 100,
        created_at_gt: Annotated[datetime | None, Query(alias="createdAtGt")] = None,
        created_at_lt: Annotated[datetime | None, Query(alias="createdAtLt")] = None,
        created_at_ge: Annotated[datetime | None, Query(alias="createdAtGe")] = None,
        created_at_le: Annotated[datetime | None, Query(alias="createdAtLe")] = None,
        updated_at_gt: Annotated[datetime | None, Query(alias="updatedAtGt")] = None,
        updated_at_lt: Annotated[datetime | None, Query(alias="updatedAtLt")] = None,
        updated_at_ge: Annotated[datetime | None, Query(alias="updatedAtGe")] = None,
        updated_at_le: Annotated[datetime | None, Query(alias="updatedAtLe")] = None,
    ) -> list[dict[str, Any]]:
        """Live calls and the stored records of ended ones, newest first. Next page: pass the last item's
        ``createdAt`` as ``createdAtLt`` (calls created in the same millisecond may straddle a page)."""
        query = CallQuery(
            id=id, assistant_id=assistant_id, phone_number_id=phone_number_id, limit=limit,
            created_gt=_us(created_at_gt), created_lt=_us(created_at_lt),
            created_ge=_us(created_at_ge), created_le=_us(created_at_le),
            updated_gt=_us(updated_at_gt), updated_lt=_us(updated_at_lt),
            updated_ge=_us(updated_at_ge), updated_le=_us(updated_at_le),
        )
        live = {call.id: live_object(call) for call in list(manager.calls.values())}
        # Stored copies of live calls are replaced by the live objects (fresher): read enough to fill the page.
        stored = await ctx.store.list_calls(dataclasses.replace(query, limit=limit + len(live)))
        found = {r["id"]: r for r in stored if r["id"] not in live}
        found.update({cid: obj for cid, obj in live.items() if query.matches(obj)})
        ordered = sorted(found.values(), key=lambda r: (iso_to_us(r["createdAt"]), r["id"]), reverse=True)
        return ordered[:limit]

    @router.get("/call/{id}", response_model=CallObject, responses=_404, summary="Get Call")
    async def get_call(id: str) -> dict[str, Any]:
        return (await find(id))[1]

    @router.delete(
        "/call/{id}", response_model=CallObject, responses=_404,
        summary="Hang up a live call, or delete an ended call's record",
    )
    async def delete_call(id: str) -> dict[str, Any]:
        call, _ = await find(id)
        if call is not None:
            call.hangup(ENDED_BY_API)
            return live_object(call)
        deleted = await ctx.store.delete_call(id)
        if deleted is None:  # deleted by a concurrent request
            raise problem(404, f"no call {id!r}")
        return deleted

    @router.get(
        "/call/{id}/stereo-recording", response_class=FileResponse, summary="Call stereo recording",
        responses={200: {"content": {"audio/wav": {}}, "description": "the call's WAV: 8 kHz 16-bit stereo, "
                         "caller left, assistant right"},
                   404: {"model": ErrorBody, "description": "no such call, no recording, or the call is live"}},
    )
    async def stereo_recording(id: str) -> FileResponse:
        """The recording of an ended call (``recordings.path`` set and the assistant's
        ``artifactPlan.recordingEnabled``)."""
        call, obj = await find(id)
        if call is not None:
            raise problem(404, f"call {id!r} is still in progress: its recording is available once it ends")
        path = (obj.get("artifact") or {}).get("recordingPath")
        if not path:
            raise problem(404, f"call {id!r} has no recording")
        if not await asyncio.to_thread(Path(path).is_file):
            raise problem(404, f"the recording of call {id!r} is no longer on disk")
        return FileResponse(path, media_type="audio/wav", filename=f"{id}.wav")

    @router.get("/call/{id}/logs", response_model=CallLog, responses=_404, summary="Call event log")
    async def call_logs(id: str) -> dict[str, Any]:
        """Status changes, final transcripts, tool calls, transfer updates and the end, oldest first."""
        await find(id)
        return {"callId": id, "events": await ctx.store.call_events(id)}

    @router.post(
        "/call/{id}/control", response_model=ControlAccepted, response_model_exclude_none=True,
        summary="Live call control",
        responses={**_404, **BAD_BODY,
                   202: {"model": ControlAccepted, "description": "transfer started, outcome not known yet"},
                   403: {"model": ErrorBody, "description": "transfer destination not in transfers.allow"},
                   409: {"model": ErrorBody, "description": "the call has ended or has no running conversation, "
                         "or the transfer failed"}},
    )
    async def control_call(id: str, body: Annotated[LiveControl, Body()], response: Response) -> dict[str, Any]:
        """Vapi's control messages: ``say``, ``add-message``, ``end-call``, ``transfer`` and
        ``control`` (``mute-assistant``/``unmute-assistant``). ``say``, ``add-message`` and mute need the
        assistant's conversation to be running; ``end-call`` and ``transfer`` work on any answered call.
        A transfer answers with its outcome when known within a few seconds (``transfer``), else 202 with
        status ``pending``: follow it in ``GET /call/{id}/logs`` (transfer-update)."""
        call, _ = await find(id)
        if call is None or call.state in (CallState.ENDED, CallState.TERMINATING):
            raise problem(409, f"call {id!r} has ended")
        answer: dict[str, Any] = {"callId": id, "type": body.type, "status": "ok"}
        if isinstance(body, TransferControl):
            outcome = await _transfer(call, body)
            if outcome is None:
                response.status_code = 202
                answer["status"] = "pending"
            else:
                answer["transfer"] = outcome
        else:
            _apply(call, body)
        return answer

    return router


def _session(call: Call) -> Any:
    conversation = call.conversation
    session = conversation.session if conversation is not None else None
    if session is None or not session.running.is_set() or session.ending is not None:
        raise problem(409, f"call {call.id!r} has no running conversation (not answered yet, not an assistant "
                      "call, or ending)")
    return session


def _apply(call: Call, body: SayControl | AddMessageControl | EndCallControl | MuteControl) -> None:
    match body:
        case SayControl():
            session = _session(call)
            utterance = session.say(body.content)
            if body.end_call_after_spoken:
                session.end_after(utterance, "assistant-ended-call-after-message-spoken")
        case AddMessageControl():
            session = _session(call)
            session.add_message(body.message.role, body.message.content)
            if body.trigger_response_enabled:
                session.respond()
        case MuteControl():
            _session(call).mute(body.control == "mute-assistant")
        case EndCallControl():
            session = call.conversation.session if call.conversation is not None else None
            if session is not None and session.running.is_set():
                session.end(ENDED_BY_API)
            else:
                call.hangup(ENDED_BY_API)
        case _:
            assert_never(body)


async def _transfer(call: Call, body: TransferControl) -> dict[str, Any] | None:
    """Start the transfer; its outcome when known within TRANSFER_WAIT_SECONDS (a refused destination is
    known at once), else None: it goes on in the call's TaskGroup and reports through transfer-update."""
    destination = body.destination.model_dump(by_alias=True, exclude_none=True)
    try:
        async with asyncio.timeout(TRANSFER_WAIT_SECONDS):
            result = await transfer(call, destination, message=body.content, source="api")
    except TimeoutError:
        return None
    outcome = {"result": result.result, "mode": result.mode, "detail": result.detail}
    if result.result == "refused-destination":
        raise problem(403, f"transfer refused: {result.detail}")
    if not result.ok:
        raise problem(409, f"transfer failed: {result.detail}")
    return outcome
