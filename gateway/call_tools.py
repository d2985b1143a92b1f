"""The tools of an assistant call: the conversation's tool runner (``gateway.pipeline.session.ToolRunner``).

- ``function``: Vapi's ``tool-calls`` server message is POSTed to the tool's ``server.url`` (else the
  assistant's server), wrapped as ``{"message": {...}}`` and signed with :func:`gateway.util.signing.signed_headers`
  (the tool server's secret, else the assistant server's), within the server's ``timeoutSeconds``. The answer
  ``{"results": [{"toolCallId", "result" | "error"}]}`` (Vapi ``ServerMessageResponseToolCalls``) gives the
  model its result; an ``error``, a non-2xx status, a body that is not that JSON, or no answer in time is a
  failed call: the model is told it failed (and the responder speaks the tool's ``request-failed``).
  ``async: true``: the POST is sent without waiting for the answer. ``tool-calls`` is sent only here, never
  through the webhook outbox (a late tool call is worth nothing).
- ``endCall``: the responder ends the call after speaking (endedReason ``assistant-ended-call``).
- ``dtmf``: the digits of ``{"dtmf": "123#"}`` go out as RFC 4733 telephone-events on the answer's payload
  type, or as SIP INFO ``application/dtmf-relay`` (RFC 6086) when the peer did not negotiate telephone-event
  or the tool sets ``sipInfoDtmfEnabled``. ``w``/``,`` pause half a second, ``W`` a second.
- ``transferCall``: :func:`gateway.call_transfer.transfer_from_tool`.

Every call is logged (``tool_call``), counted (``tool_calls{type,result}``) and recorded in the call's artifact
messages (``tool_calls`` then ``tool_call_result``, Vapi's roles).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from gateway.assistants import Assistant
from gateway.assistants.plans import Server
from gateway.assistants.tools import DtmfTool, EndCallTool, FunctionTool, TransferCallTool
from gateway.call_record import artifact, call_object
from gateway.pipeline.session import ToolOutcome
from gateway.rtp.dtmf import DIGIT_EVENTS
from gateway.sip.message import Response
from gateway.util.signing import signed_headers

if TYPE_CHECKING:
    from gateway.call import Call

__all__ = ["CallTools", "dtmf_plan", "tool_calls_message"]

DEFAULT_TIMEOUT_SECONDS = 20.0  # Vapi's server.timeoutSeconds default
INFO_DURATION_MS = 100
INFO_GAP_SECONDS = 0.1
INFO_DEADLINE_SECONDS = 32.0  # 64*T1: a non-INVITE transaction's own timeout (RFC 3261 §17.1.2.2)
PAUSES = {"w": 0.5, ",": 0.5, "W": 1.0}
MAX_RESULT_CHARS = 10_000  # what goes to the model of one result


class _Failed(Exception):
    def __init__(self, content: str, result: str = "failed") -> None:
        super().__init__(content)
        self.content = content
        self.result = result  # the metric's label: failed, timeout


def dtmf_plan(text: str) -> list[str | float]:
    """``"12w#"`` → ``["12", 0.5, "#"]``: digit runs and pauses. Spaces and dashes are ignored; anything
    else raises ``ValueError`` naming it (the model's mistake, reported back to it)."""
    out: list[str | float] = []
    for char in text:
        if char in " -":
            continue
        if char in PAUSES:
            out.append(PAUSES[char])
        elif char.upper() in DIGIT_EVENTS:
            if out and isinstance(out[-1], str):
                out[-1] += char.upper()
            else:
                out.append(char.upper())
        else:
            raise ValueError(f"{char!r} is not a keypad key (0-9, *, #, A-D, w for a pause)")
    if not any(isinstance(p, str) for p in out):
        raise ValueError("no keypad keys to press")
    return out


def tool_calls_message(call: Call, assistant: Assistant, tool: FunctionTool, tool_call: dict[str, Any],
                       timestamp_ms: int) -> dict[str, Any]:
    """Vapi's ``ServerMessageToolCalls`` for one call of ``tool`` (the body POSTs wrap it in ``message``)."""
    tool_json = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
    message: dict[str, Any] = {
        "type": "tool-calls",
        "timestamp": timestamp_ms,
        "call": call_object(call),
        "toolCallList": [tool_call],
        "toolWithToolCallList": [{**tool_json, "toolCall": tool_call}],
        "assistant": assistant.model_dump(mode="json", by_alias=True, exclude_none=True),
        "artifact": artifact(call),
    }
    if call.customer_number:
        message["customer"] = {"number": call.customer_number}
    if call.phone_number:
        message["phoneNumber"] = {"number": call.phone_number}
    return message


class CallTools:
    """The call's tool runner (see module doc); ``assistant`` is the call's assistant, variables substituted."""

    def __init__(self, call: Call, assistant: Assistant, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.call = call
        self.assistant = assistant
        self._wall_clock = wall_clock
        self._tools: dict[str, FunctionTool | EndCallTool | DtmfTool | TransferCallTool] = {}
        for tool in assistant.model.tools:
            name = tool.function.name if tool.function is not None else tool.type
            self._tools[name] = tool

    async def __call__(self, name: str, arguments: str, call_id: str) -> ToolOutcome:
        call = self.call
        tool = self._tools.get(name)
        kind = tool.type if tool is not None else "unknown"
        started = time.monotonic()
        parsed = _parse_arguments(arguments)
        self._record("tool_calls", toolCalls=[{"id": call_id, "type": "function",
                                               "function": {"name": name, "arguments": arguments}}])
        try:
            if tool is None:
                raise _Failed(f"Error: there is no tool named {name!r}.")
            if parsed is None:
                raise _Failed(f"Error: the arguments are not a JSON object: {arguments[:200]!r}.")
            outcome = await self._run(tool, name, parsed, call_id)
            result = "failed" if outcome.failed else "ok"
        except _Failed as exc:
            outcome = ToolOutcome(content=exc.content, failed=True)
            result = exc.result
        call.manager.metrics.tool_calls.labels(kind, result).inc()
        call.log.info("tool_call", tool=name, type=kind, tool_call_id=call_id, result=result,
                      ms=round(1000 * (time.monotonic() - started), 1),
                      **({"error": outcome.content} if outcome.failed else {}))
        self._record("tool_call_result", name=name, result=outcome.content, toolCallId=call_id)
        return outcome

    async def _run(self, tool: FunctionTool | EndCallTool | DtmfTool | TransferCallTool, name: str,
                   arguments: dict[str, Any], call_id: str) -> ToolOutcome:
        match tool:
            case FunctionTool():
                return await self._function(tool, name, arguments, call_id)
            case EndCallTool():
                return ToolOutcome(content="Ending the call.", end_call=True)
            case DtmfTool():
                return await self._dtmf(tool, arguments)
            case TransferCallTool():
                from gateway.call_transfer import transfer_from_tool

                outcome: ToolOutcome = await transfer_from_tool(self.call, tool, arguments, call_id)
                return outcome

    # -- function tools --------------------------------------------------------------------------------

    def _server(self, tool: FunctionTool) -> tuple[str, str | None, float, dict[str, str]]:
        own = tool.server if tool.server is not None and tool.server.url else None
        assistant_server: Server | None = self.assistant.webhook_server()
        server = own or assistant_server
        if server is None or not server.url:
            raise _Failed(f"Error: the tool {tool.function.name if tool.function else ''!r} has no server url.")
        secret = (tool.server.secret if tool.server is not None and tool.server.secret else None) or (
            assistant_server.secret if assistant_server is not None else None)
        timeout = server.timeout_seconds if server.timeout_seconds else DEFAULT_TIMEOUT_SECONDS
        return server.url, secret, timeout, dict(server.headers)

    async def _function(self, tool: FunctionTool, name: str, arguments: dict[str, Any],
                        call_id: str) -> ToolOutcome:
        url, secret, timeout, extra = self._server(tool)
        now = self._wall_clock()
        tool_call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        body = json.dumps({"message": tool_calls_message(self.call, self.assistant, tool, tool_call,
                                                         int(now * 1000))}).encode()
        headers = [*extra.items(), *signed_headers(body, secret, int(now))]
        if tool.async_:
            # "the assistant will move forward without waiting for your server to respond"
            self.call.spawn(self._post_async(url, body, headers, timeout, name, call_id))
            return ToolOutcome(content="The request was sent; its result is not awaited.")
        response = await self._post(url, body, headers, timeout)
        return _outcome(response, call_id)

    async def _post(self, url: str, body: bytes, headers: list[tuple[str, str]], timeout: float) -> httpx.Response:
        try:
            async with asyncio.timeout(timeout):
                return await self.call.manager.http.post(url, content=body, headers=headers, timeout=timeout)
        except (TimeoutError, httpx.TimeoutException):
            raise _Failed(f"Error: the tool server did not answer within {timeout:g} s.", "timeout") from None
        except httpx.HTTPError as exc:
            raise _Failed(f"Error: the tool server could not be reached ({type(exc).__name__}).") from None

    async def _post_async(self, url: str, body: bytes, headers: list[tuple[str, str]], timeout: float,
                          name: str, call_id: str) -> None:
        try:
            response = await self._post(url, body, headers, timeout)
            outcome = _outcome(response, call_id)
            self.call.log.info("tool_call_async_answered", tool=name, tool_call_id=call_id,
                               status=response.status_code, failed=outcome.failed)
        except _Failed as exc:
            self.call.log.warning("tool_call_async_failed", tool=name, tool_call_id=call_id, error=exc.content)

    # -- dtmf ------------------------------------------------------------------------------------------------

    async def _dtmf(self, tool: DtmfTool, arguments: dict[str, Any]) -> ToolOutcome:
        keys = arguments.get("dtmf", arguments.get("digits"))
        if not isinstance(keys, str):
            raise _Failed('Error: the dtmf tool takes {"dtmf": "<keys>"}, e.g. {"dtmf": "123#"}.')
        try:
            plan = dtmf_plan(keys)
        except ValueError as exc:
            raise _Failed(f"Error: {exc}.") from None
        media = self.call.media
        use_info = tool.sip_info_dtmf_enabled or not media.can_send_rfc4733
        sent = ""
        for part in plan:
            if isinstance(part, float):
                await asyncio.sleep(part)
                continue
            if use_info:
                for digit in part:
                    await self._info(digit)
                    sent += digit
                    await asyncio.sleep(INFO_GAP_SECONDS)
            else:
                # 200 ms a digit; the deadline leaves room for a playout that is held (on hold) a while
                async with asyncio.timeout(5.0 + 0.5 * len(part)):
                    await media.send_dtmf(part)
                sent += part
        method = "sip-info" if use_info else "rfc4733"
        self.call.log.info("dtmf_sent", digits=sent, method=method)
        return ToolOutcome(content=f"Pressed {sent}.")

    async def _info(self, digit: str) -> None:
        """One digit as SIP INFO application/dtmf-relay (the Signal/Duration body Asterisk and FreeSWITCH read)."""
        call = self.call
        if call.dialog is None:
            raise _Failed("Error: the call is not connected.")
        request = call.dialog.new_request(
            "INFO", via=call.ua.make_via(call.transport), body=f"Signal={digit}\r\nDuration={INFO_DURATION_MS}\r\n".encode(),
            content_type="application/dtmf-relay",
        )
        done: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
        call._send_in_dialog(request, lambda r: None if done.done() else done.set_result(r))
        try:
            async with asyncio.timeout(INFO_DEADLINE_SECONDS):
                response = await done
        except TimeoutError:
            response = None
        if response is None or not 200 <= response.status_code < 300:
            status = "no answer" if response is None else f"{response.status_code} {response.reason}"
            raise _Failed(f"Error: the far end refused the keypad tones (SIP INFO: {status}).")
        call.manager.metrics.dtmf_sent.labels("sip-info").inc()

    # -- artifact ------------------------------------------------------------------------------------------

    def _record(self, role: str, **fields: Any) -> None:
        conversation = self.call.conversation
        if conversation is not None:
            conversation.record_message(role, **fields)


def _parse_arguments(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _outcome(response: httpx.Response, call_id: str) -> ToolOutcome:
    """The tool server's answer (Vapi ``ServerMessageResponseToolCalls``) as what the model sees."""
    if not 200 <= response.status_code < 300:
        raise _Failed(f"Error: the tool server answered HTTP {response.status_code}.")
    try:
        body = response.json()
    except ValueError:
        raise _Failed("Error: the tool server's answer is not JSON.") from None
    if not isinstance(body, dict):
        raise _Failed("Error: the tool server's answer is not a JSON object.")
    results = body.get("results")
    if isinstance(body.get("error"), str) and not results:
        raise _Failed(f"Error: {body['error']}")
    if not isinstance(results, list) or not results or not all(isinstance(r, dict) for r in results):
        raise _Failed('Error: the tool server\'s answer has no "results" list.')
    mine = [r for r in results if r.get("toolCallId") == call_id]
    if not mine and len(results) == 1 and "toolCallId" not in results[0]:
        mine = results
    if not mine:
        raise _Failed(f"Error: the tool server's answer has no result for tool call {call_id!r}.")
    item = mine[0]
    if item.get("error") is not None:
        error = item["error"] if isinstance(item["error"], str) else json.dumps(item["error"])
        raise _Failed(f"Error: {error}"[:MAX_RESULT_CHARS])
    if "result" not in item:
        raise _Failed('Error: the tool server\'s result has neither "result" nor "error".')
    result = item["result"]
    content = result if isinstance(result, str) else json.dumps(result)
    return ToolOutcome(content=content[:MAX_RESULT_CHARS])
