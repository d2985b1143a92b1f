"""A local stand-in for OpenAI's chat completions endpoint (``POST /v1/chat/completions``), streaming.

It answers the way api.openai.com does, so the real ``openai`` SDK can be pointed at it: a streamed
request gets ``text/event-stream`` lines ``data: {chat.completion.chunk}`` -- the first delta carries the
role, then content pieces (or ``tool_calls`` deltas: index/id/type/function name first, then argument
fragments), then a chunk with ``finish_reason``, then (when ``stream_options.include_usage``) a chunk
with empty ``choices`` and the ``usage``, then ``data: [DONE]``. Errors have OpenAI's JSON shape
``{"error": {"message", "type", "param", "code"}}``.

The same handler answers under any path prefix (``/custom/chat/completions`` ...), as a custom-llm
server would. Replies come from a script (a callable ``(request_body) -> Reply`` or a list consumed in
order) or, without one, from a rule: ``You said: <last user message>.``

Run as a process for benchmarks (replies instantly)::

    python -m tests.fakes.openai_server --port 8001 [--reply TEXT] [--api-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = [
    "FakeOpenAI",
    "FakeToolCall",
    "Faults",
    "Reply",
    "Script",
    "TextReply",
    "ToolCallsReply",
    "build_app",
    "echo_rule",
]

COMPLETIONS_SUFFIX = "/chat/completions"
DEFAULT_CHUNK_SIZE = 4
GARBAGE_LINE = "data: {this is not json\n\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class TextReply:
    """A text answer, streamed ``chunk_size`` characters per delta (the fake's default when None)."""

    text: str
    chunk_size: int | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeToolCall:
    name: str
    arguments: str  # JSON text, streamed in fragments
    id: str | None = None  # generated (call_<n>) when None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallsReply:
    """The model calls these functions (in parallel when more than one); ``text`` is optional content
    streamed before the calls, as some models do."""

    calls: tuple[FakeToolCall, ...]
    text: str = ""
    chunk_size: int | None = None


Reply = str | TextReply | ToolCallsReply
Script = Callable[[dict[str, Any]], Reply] | Sequence[Reply]


@dataclass(slots=True, kw_only=True)
class Faults:
    """Misbehaviour to inject. ``status``: answer every request with this HTTP error (429, 500...).
    After this many chunks: ``garbage_after`` sends a non-JSON ``data:`` line and carries on;
    ``drop_after`` ends the body without a finish_reason or ``[DONE]``; ``error_after`` sends an
    ``{"error": ...}`` event (as OpenAI does when it fails mid-reply) and ends the body."""

    status: int | None = None
    first_chunk_delay: float = 0.0
    chunk_delay: float = 0.0
    garbage_after: int | None = None
    drop_after: int | None = None
    error_after: int | None = None


def echo_rule(body: dict[str, Any]) -> Reply:
    """The default reply without a script: repeat the caller's last user message."""
    last = ""
    for message in body.get("messages", []):
        if isinstance(message, dict) and message.get("role") == "user":
            last = _content_text(message.get("content"))
    return f"You said: {last.strip()}."


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status
    )


_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: ("The model does not exist.", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def _validate(body: Any) -> str | None:
    """What OpenAI would reject with a 400 (the parts a client of ours could get wrong)."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    if not isinstance(body.get("model"), str):
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "[] is too short - 'messages'"
    tool_ids: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            return f"Invalid value for 'messages[{i}].role'."
        for call in m.get("tool_calls") or ():
            tool_ids.add(call.get("id", ""))
        if m["role"] == "tool" and m.get("tool_call_id") not in tool_ids:
            return (
                f"Invalid parameter: messages[{i}] with role 'tool' must be a response to a preceeding "
                "message with 'tool_calls'."
            )
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict) or tool.get("type") != "function" or "name" not in tool.get("function", {}):
            return "Missing required parameter: 'tools[0].function'."
    if "max_tokens" in body and "max_completion_tokens" in body:
        return "max_tokens and max_completion_tokens cannot both be set"
    return None


class FakeOpenAI:
    """The fake server's state: ``app`` (ASGI), ``requests`` (each request body, in arrival order),
    ``headers`` (each request's headers, lower-case names), ``faults`` (mutable between requests),
    ``completed`` / ``aborted`` (streams the fake ended itself, faults included / streams the client hung
    up on before the end)."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        api_key: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        faults: Faults | None = None,
    ) -> None:
        self._script = script
        self._script_pos = 0
        self.api_key = api_key
        self.chunk_size = chunk_size
        self.faults = faults or Faults()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.completed = 0
        self.aborted = 0
        self.stream_ended = asyncio.Event()  # set whenever a stream ends, either way
        self._ids = itertools.count(1)
        self._next_faults: list[Faults] = []
        # Per-request faults chosen from the request body (e.g. only one assistant's calls fail).
        self.fault_rule: Callable[[dict[str, Any]], Faults | None] | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    def fail_next(self, faults: Faults, *, times: int = 1) -> None:
        """The next ``times`` requests misbehave as ``faults`` says; later ones are served normally."""
        self._next_faults += [faults] * times

    def faults_for(self, body: dict[str, Any]) -> Faults:
        if self._next_faults:
            return self._next_faults.pop(0)
        if self.fault_rule is not None and (faults := self.fault_rule(body)) is not None:
            return faults
        return self.faults

    def next_reply(self, body: dict[str, Any]) -> Reply:
        script = self._script
        if script is None:
            return echo_rule(body)
        if callable(script):
            return script(body)
        if self._script_pos >= len(script):
            raise LookupError("the fake's reply script is exhausted")
        reply = script[self._script_pos]
        self._script_pos += 1
        return reply

    async def _handle(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if not path.endswith(COMPLETIONS_SUFFIX):
            return _error(404, f"Invalid URL (POST {request.url.path})", "invalid_request_error")
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, *_STATUS_ERRORS[401])
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.paths.append(request.url.path)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if isinstance(body, dict):
            self.requests.append(body)
        if (problem := _validate(body)) is not None:
            return _error(400, problem, "invalid_request_error")
        assert isinstance(body, dict)
        faults = self.faults_for(body)
        if faults.status is not None:
            status = faults.status
            return _error(status, *_STATUS_ERRORS.get(status, ("Error.", "server_error", None)))
        reply = self.next_reply(body)
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        model = body["model"]
        if not body.get("stream"):
            return JSONResponse(self._completion(completion_id, model, reply, body))
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            self._sse(completion_id, model, reply, usage, body, faults),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    # -- the stream -----------------------------------------------------------------------------

    def _deltas(self, reply: Reply) -> tuple[list[dict[str, Any]], str]:
        """The reply as the ``delta`` objects OpenAI would send, and the finish_reason."""
        if isinstance(reply, str):
            reply = TextReply(text=reply)
        size = max(1, reply.chunk_size or self.chunk_size)
        text = reply.text
        has_text = isinstance(reply, TextReply) or bool(text)
        first: dict[str, Any] = {"role": "assistant", "content": "" if has_text else None, "refusal": None}
        deltas = [first] + [{"content": text[i : i + size]} for i in range(0, len(text), size)]
        if isinstance(reply, TextReply):
            return deltas, reply.finish_reason
        for index, call in enumerate(reply.calls):
            call_id = call.id or f"call_{next(self._ids)}"
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
            args = call.arguments
            deltas += [
                {"tool_calls": [{"index": index, "function": {"arguments": args[i : i + size]}}]}
                for i in range(0, len(args), size)
            ]
        return deltas, "tool_calls"

    def _chunk(self, completion_id: str, model: str, usage: bool, choices: list[dict[str, Any]]) -> str:
        chunk: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if usage:
            chunk["usage"] = None
        return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"

    async def _sse(
        self, completion_id: str, model: str, reply: Reply, usage: bool, body: dict[str, Any], faults: Faults
    ) -> AsyncIterator[str]:
        deltas, finish_reason = self._deltas(reply)
        done = False
        try:
            if faults.first_chunk_delay:
                await asyncio.sleep(faults.first_chunk_delay)
            for sent, delta in enumerate(deltas):
                if faults.garbage_after is not None and sent == faults.garbage_after:
                    yield GARBAGE_LINE
                if faults.drop_after is not None and sent == faults.drop_after:
                    done = True
                    return
                if faults.error_after is not None and sent == faults.error_after:
                    error = dict(zip(("message", "type", "code"), _STATUS_ERRORS[500], strict=True))
                    yield f"data: {json.dumps({'error': {**error, 'param': None}})}\n\n"
                    done = True
                    return
                if sent and faults.chunk_delay:
                    await asyncio.sleep(faults.chunk_delay)
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
                yield self._chunk(completion_id, model, usage, [choice])
            final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
            yield self._chunk(completion_id, model, usage, [final])
            if usage:
                text = json.dumps(body.get("messages"))
                chunk: dict[str, Any] = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": {
                        "prompt_tokens": len(text) // 4,
                        "completion_tokens": len(deltas),
                        "total_tokens": len(text) // 4 + len(deltas),
                    },
                }
                yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
            yield "data: [DONE]\n\n"
            done = True
        finally:
            if done:
                self.completed += 1
            else:
                self.aborted += 1
            self.stream_ended.set()

    def _completion(self, completion_id: str, model: str, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed answer (``stream`` false), for completeness."""
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        finish_reason = "stop"
        if isinstance(reply, str):
            message["content"] = reply
        elif isinstance(reply, TextReply):
            message["content"], finish_reason = reply.text, reply.finish_reason
        else:
            message["content"] = reply.text or None
            message["tool_calls"] = [
                {
                    "id": c.id or f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in reply.calls
            ]
            finish_reason = "tool_calls"
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }


def build_app(args: argparse.Namespace) -> Any:
    """The process entry's app factory: ``--reply`` answers every request with that text, otherwise
    the echo rule; ``--api-key`` demands that bearer key."""
    fixed: str | None = args.reply
    script: Script | None = None if fixed is None else (lambda body: fixed)
    return FakeOpenAI(script, api_key=args.api_key, chunk_size=args.chunk_size).app


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reply", default=None, help="answer every request with this text")
    parser.add_argument("--api-key", default=None, help="demand Authorization: Bearer KEY")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="characters per delta")


if __name__ == "__main__":
    from tests.fakes._server import main

    main(build_app, sys.argv[1:], add_arguments=_add_arguments, description=__doc__)
