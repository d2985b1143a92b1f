"""Vapi's ``assistant-request``: ask a number's server which assistant takes an inbound call.

The server gets ``{"message": {"type": "assistant-request", "call": ..., "customer": ..., "phoneNumber": ...}}``
(signed like every server message, see gateway.util.signing) and answers with one of Vapi's shapes:

- ``{"assistantId": "..."}`` / ``{"assistant": {...}}``, either with ``"assistantOverrides"``;
- ``{"destination": {"type": "number"|"sip", ...}}``: transfer at once, no assistant;
- ``{"error": "..."}``: the text is spoken to the caller, then the call ends;
- ``{"squadId"|"squad"|"workflowId"|"workflow": ...}``: refused (squads and workflows are not supported),
  which counts as a failure.

A response wrapped in ``{"messageResponse": {...}}`` is accepted too. Anything else, an HTTP error status or
no answer within the number's ``timeoutSeconds`` is a failure: the caller's number then falls back (see
``CallManager.resolve_target``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from gateway.config import ServerRoute
from gateway.util.signing import signed_headers

__all__ = ["AssistantDecision", "request_assistant"]

UNSUPPORTED = ("squadId", "squad", "workflowId", "workflow")


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantDecision:
    kind: Literal["assistant", "transfer", "error", "failed"]
    assistant: dict[str, Any] | None = None
    assistant_id: str | None = None
    overrides: dict[str, Any] | None = field(default=None)
    destination: dict[str, Any] | None = None
    message: str | None = None  # kind "error": what to say
    ended_reason: str | None = None  # Vapi's endedReason for "error"/"failed"
    detail: str = ""  # what went wrong, for the log


def _failed(reason: str, detail: str) -> AssistantDecision:
    return AssistantDecision(kind="failed", ended_reason=reason, detail=detail)


def decide(body: Any) -> AssistantDecision:
    """Interpret a server's JSON answer (see module doc)."""
    if isinstance(body, dict) and isinstance(body.get("messageResponse"), dict):
        body = body["messageResponse"]
    if not isinstance(body, dict):
        return _failed("assistant-request-returned-invalid-assistant", "the response is not a JSON object")
    error = body.get("error")
    if error is not None:
        if not isinstance(error, str) or not error.strip():
            return AssistantDecision(kind="error", ended_reason="assistant-request-returned-unspeakable-error",
                                     detail=f"error {error!r} cannot be spoken")
        return AssistantDecision(kind="error", message=error.strip(),
                                 ended_reason="assistant-request-returned-error", detail=error.strip())
    destination = body.get("destination")
    if destination is not None:
        if not isinstance(destination, dict) or destination.get("type") not in ("number", "sip"):
            return _failed("assistant-request-returned-invalid-assistant",
                           "destination must be an object with type 'number' or 'sip'")
        return AssistantDecision(kind="transfer", destination=destination)
    overrides = body.get("assistantOverrides")
    if overrides is not None and not isinstance(overrides, dict):
        return _failed("assistant-request-returned-invalid-assistant", "assistantOverrides must be an object")
    assistant = body.get("assistant")
    assistant_id = body.get("assistantId")
    if assistant is not None:
        if not isinstance(assistant, dict):
            return _failed("assistant-request-returned-invalid-assistant", "assistant must be an object")
        return AssistantDecision(kind="assistant", assistant=assistant, overrides=overrides)
    if assistant_id is not None:
        if not isinstance(assistant_id, str) or not assistant_id:
            return _failed("assistant-request-returned-invalid-assistant", "assistantId must be a string")
        return AssistantDecision(kind="assistant", assistant_id=assistant_id, overrides=overrides)
    unsupported = [key for key in UNSUPPORTED if key in body]
    if unsupported:
        return _failed("assistant-request-returned-invalid-assistant",
                       f"{unsupported[0]} is not supported by this gateway (squads and workflows are not); "
                       "answer with assistantId or assistant")
    return _failed("assistant-request-returned-no-assistant",
                   "the response has none of assistantId, assistant, destination or error")


async def request_assistant(
    client: httpx.AsyncClient, server: ServerRoute, message: dict[str, Any], *, now: float
) -> AssistantDecision:
    """POST ``{"message": message}`` to the server and interpret the answer; never raises for the server's
    faults (they are ``kind="failed"`` with the detail)."""
    body = json.dumps({"message": message}, separators=(",", ":")).encode()
    headers = [*signed_headers(body, server.secret, int(now)), *server.headers.items()]
    try:
        async with asyncio.timeout(server.timeoutSeconds):  # the whole exchange, not each read
            response = await client.post(server.url, content=body, headers=headers, timeout=server.timeoutSeconds)
    except (TimeoutError, httpx.TimeoutException):
        return _failed("assistant-request-failed", f"no answer within {server.timeoutSeconds:g} s")
    except httpx.HTTPError as exc:
        return _failed("assistant-request-failed", f"{type(exc).__name__}: {exc}")
    if response.status_code >= 300:
        return _failed("assistant-request-failed", f"HTTP {response.status_code}: {response.text[:200]!r}")
    try:
        payload = response.json()
    except ValueError:
        return _failed("assistant-request-returned-invalid-assistant",
                       f"the response is not JSON: {response.text[:200]!r}")
    return decide(payload)
