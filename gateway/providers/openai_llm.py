"""OpenAI chat completions, streamed (``POST {base_url}/chat/completions`` with ``stream: true``).

Spec: OpenAI API reference, "Create chat completion" and "The chat completion chunk object"; streamed
as server-sent events, one ``chat.completion.chunk`` per ``data:`` line, ending with ``data: [DONE]``.
Tool calls arrive as ``choices[0].delta.tool_calls`` fragments keyed by ``index``: the first fragment
of a call carries its ``id``, ``type`` and ``function.name``; later ones carry pieces of
``function.arguments`` to be concatenated. With ``stream_options.include_usage`` the last chunk before
``[DONE]`` has empty ``choices`` and only ``usage``.

Vapi's ``model.provider: custom-llm`` is the same protocol against the assistant's own server: per the
assistant schema, ``model.url`` "is the URL we'll use for the OpenAI client's baseURL", so the request
goes to ``{url}/chat/completions`` (``https://openrouter.ai/api/v1`` -> ``.../api/v1/chat/completions``).
See :func:`custom_llm`.

The request body is sent as built, through the SDK client's ``post`` (its auth, base URL, headers, error
classes and server-sent-event decoding) but without ``chat.completions.create``'s parameter transform,
which walks the whole, growing message list with type introspection on every turn: our parameters are
JSON values already, so the bytes on the wire are the same. Chunks are read as the JSON objects they are
(``_ChunkStream``), not built into a ``ChatCompletionChunk`` model each: one per token is most of a
reply's client-side cost.

One deadline scope covers the request and the read loop; it is moved to the total deadline when the first
token arrives, and it is disarmed across every ``yield``: a timeout left armed while the consumer holds
the generator suspended would cancel the consumer's own work instead. The generator is read from the
task that started it (the scope cancels that task).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import openai
from openai import AsyncOpenAI, RequestOptions
from openai._streaming_cleanup import drain_response_async  # the SDK's own end-of-stream read (pinned < 4)

from gateway.providers.base import (
    ChatMessage,
    LlmDone,
    LlmEvent,
    LlmOptions,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolCallsDone,
    ToolSpec,
)
from gateway.providers.deadline import Deadline
from gateway.providers.http_pool import shared_client

__all__ = ["DEFAULT_MODEL", "NO_API_KEY", "OpenAiLlm", "custom_llm", "custom_llm_endpoint"]

DEFAULT_MODEL = "gpt-4o-mini"
# The SDK refuses an empty key; a custom-llm server without a credential gets this bearer instead.
NO_API_KEY = "no-key"
# Vapi: custom-llm "timeoutSeconds ... for the connection to the custom provider without needing to
# stream any tokens back. Default is 20 seconds."
CUSTOM_LLM_FIRST_TOKEN_TIMEOUT = 20.0
# After finish_reason only the usage chunk and [DONE] remain; reading them lets the connection be reused.
DRAIN_TIMEOUT = 1.0

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


def custom_llm_endpoint(url: str) -> str:
    """Where a custom-llm assistant's requests go: ``model.url`` is the client's base URL and the SDK
    appends ``/chat/completions`` (a trailing slash on the URL is not doubled)."""
    return url.rstrip("/") + "/chat/completions"


class OpenAiLlm:
    """:class:`~gateway.providers.base.LlmProvider` over the official ``openai`` SDK.

    ``base_url`` is the API root including the version (``http://host:port/v1``); None uses the SDK's
    default (``OPENAI_BASE_URL`` or api.openai.com). ``headers`` are sent with every request; an
    ``Authorization`` among them is ignored (the key is the credential, as in Vapi's ``model.headers``).
    ``max_tokens_field`` names the body field ``LlmOptions.max_tokens`` is sent as: OpenAI's current
    ``max_completion_tokens`` (its reasoning models reject ``max_tokens``) or the older ``max_tokens``
    that OpenAI-compatible servers read.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        name: str = "openai",
        first_token_timeout: float = 10.0,
        total_timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,
        max_tokens_field: MaxTokensField = "max_completion_tokens",
    ) -> None:
        self.name = name
        self.first_token_timeout = first_token_timeout
        self.total_timeout = total_timeout
        self.max_tokens_field: MaxTokensField = max_tokens_field
        extra_headers = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        self._client = AsyncOpenAI(
            api_key=api_key or NO_API_KEY,
            base_url=base_url,
            max_retries=0,  # the pipeline decides about retries (ProviderError.retryable)
            timeout=total_timeout,
            default_headers=extra_headers or None,
            # One connection pool for every call's turns, on aiohttp (see http_pool).
            http_client=shared_client(timeout=total_timeout),  # type: ignore[arg-type]
        )

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    def request_params(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = (), options: LlmOptions
    ) -> dict[str, Any]:
        """The request body (less ``stream``) as sent; ``options.extra`` is merged into it last, as
        ``chat.completions.create(..., extra_body=...)`` would."""
        params: dict[str, Any] = {
            "model": options.model or DEFAULT_MODEL,
            "messages": [m.to_openai() for m in messages],
            "stream_options": {"include_usage": True},
        }
        if options.temperature is not None:
            params["temperature"] = options.temperature
        if options.max_tokens is not None:
            params[self.max_tokens_field] = options.max_tokens
        if tools:
            params["tools"] = [_tool_param(t) for t in tools]
        # One streamed choice is what this provider reads; extra may not turn either off.
        params.update({k: v for k, v in options.extra.items() if k not in ("stream", "n")})
        return params

    async def stream(
        self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = (), options: LlmOptions
    ) -> AsyncGenerator[LlmEvent, None]:
        """Text deltas as they arrive, then at most one :class:`ToolCallsDone`, then :class:`LlmDone`.

        The first token (content or a tool call) must arrive within ``first_token_timeout`` and the whole
        reply within ``total_timeout``, else ``ProviderError(kind="timeout")``. Closing the iterator or
        cancelling its task closes the HTTP response."""
        body = self.request_params(messages, tools=tools, options=options)
        body["stream"] = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        total_deadline = started + self.total_timeout
        deadline = min(started + self.first_token_timeout, total_deadline)
        response: _ChunkStream | None = None
        reply = _ReplyAssembler()
        scope = Deadline(deadline)  # moved twice per text chunk: lazily re-armed, not a timer each time
        try:
            try:
                async with scope:
                    response = await self._client.post(
                        "/chat/completions",
                        body=body,
                        cast_to=dict,
                        stream=True,
                        stream_cls=_ChunkStream,
                        options=_REQUEST_OPTIONS,
                    )
                    chunks: AsyncIterator[dict[str, Any]] = response
                    while reply.finish_reason is None:
                        try:
                            chunk = await anext(chunks)
                        except StopAsyncIteration:
                            # A stream that stops before a finish_reason is cut short, [DONE] or not.
                            raise ProviderError(
                                self.name, "protocol", "stream ended without a finish_reason"
                            ) from None
                        waiting_for_first = reply.first_token_at is None
                        try:
                            text = reply.add(chunk, loop.time())
                        except (AttributeError, KeyError, TypeError, ValueError) as exc:
                            raise ProviderError(self.name, "protocol", f"unreadable chunk: {exc}") from None
                        if waiting_for_first and reply.first_token_at is not None:
                            deadline = total_deadline
                            scope.reschedule(deadline)
                        if text:
                            scope.reschedule(None)  # the consumer's time is not ours to cancel
                            yield TextDelta(text=text)
                            scope.reschedule(deadline)
            except TimeoutError:
                if not scope.expired():
                    raise
                if response is None:
                    what = "no first token (no response)"
                else:
                    what = "no first token" if reply.first_token_at is None else "reply not finished"
                raise self._timeout(what, started) from None
            if reply.calls:
                yield ToolCallsDone(calls=reply.tool_calls())
            yield LlmDone(finish_reason=reply.finish_reason)
            await _drain(chunks, min(loop.time() + DRAIN_TIMEOUT, total_deadline))
        except openai.OpenAIError as exc:
            raise _provider_error(self.name, exc) from exc
        except json.JSONDecodeError as exc:
            raise ProviderError(self.name, "protocol", f"non-JSON event in the stream: {exc}") from None
        finally:
            scope.close()
            if response is not None:
                await response.close()

    def _timeout(self, what: str, started: float) -> ProviderError:
        elapsed = asyncio.get_running_loop().time() - started
        return ProviderError(self.name, "timeout", f"{what} after {elapsed:.1f}s")


def custom_llm(
    url: str,
    api_key: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    first_token_timeout: float = CUSTOM_LLM_FIRST_TOKEN_TIMEOUT,
    total_timeout: float = 60.0,
) -> OpenAiLlm:
    """Vapi's ``model.provider: custom-llm``: ``model.url`` is the OpenAI client's base URL (requests go
    to :func:`custom_llm_endpoint`), ``model.headers`` ride along, the key may be absent, and
    ``maxTokens`` is sent as ``max_tokens``, the field OpenAI-compatible servers read."""
    return OpenAiLlm(
        api_key or "",
        url.rstrip("/"),
        name="custom-llm",
        first_token_timeout=first_token_timeout,
        total_timeout=total_timeout,
        headers=headers,
        max_tokens_field="max_tokens",
    )


# The request options chat.completions.create passes: the API key is the credential (bearer auth only; the
# client's default also admits the admin key, which chat completions do not use).
_REQUEST_OPTIONS: RequestOptions = {"security": {"bearer_auth": True}}


def _tool_param(tool: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


class _ChunkStream(openai.AsyncStream[dict[str, Any]]):
    """The SDK's stream (its SSE decoding, ``[DONE]``, in-stream ``error`` events, transport errors mapped to
    its exception classes), yielding each chunk as its parsed JSON object instead of building a
    ``ChatCompletionChunk`` model per token: the assembler reads a handful of keys from it."""

    async def __stream__(self) -> AsyncIterator[dict[str, Any]]:
        response = self.response
        try:
            async for sse in self._iter_events():
                if sse.data.startswith("[DONE]"):
                    if response.http_version == "HTTP/1.1":  # the rest of the body, for the connection's reuse
                        await drain_response_async(response)
                    break
                data = sse.json()
                if not isinstance(data, dict):
                    raise openai.APIError(message=f"a chunk that is not a JSON object: {sse.data[:80]!r}",
                                          request=response.request, body=data)
                error = data.get("error")
                if error:
                    message = error.get("message") if isinstance(error, Mapping) else None
                    raise openai.APIError(
                        message=message if isinstance(message, str) and message else "An error occurred during streaming",
                        request=response.request, body=error,
                    )
                yield data
        finally:
            await response.aclose()


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _ReplyAssembler:
    """Folds chunks into the reply: text out as it comes, tool-call fragments gathered by index."""

    calls: dict[int, _PartialCall] = field(default_factory=dict)
    finish_reason: str | None = None
    first_token_at: float | None = None

    def add(self, chunk: Mapping[str, Any], now: float) -> str:
        """Take one chunk (the event's JSON object); return its new text ("" if none)."""
        text = ""
        for choice in chunk.get("choices") or ():  # empty on the include_usage chunk
            if choice.get("index", 0) != 0:  # we ask for one choice (n=1)
                continue
            delta = choice.get("delta")
            if delta is not None:
                text += delta.get("content") or ""
                text += delta.get("refusal") or ""  # a refusal is what the model says instead
                fragments = delta.get("tool_calls")
                for fragment in fragments or ():
                    self._add_fragment(fragment)
                if text or fragments:
                    self.first_token_at = self.first_token_at if self.first_token_at is not None else now
            finish_reason = choice.get("finish_reason")
            if finish_reason is not None:
                self.finish_reason = str(finish_reason)
                self.first_token_at = self.first_token_at if self.first_token_at is not None else now
        return text

    def _add_fragment(self, fragment: Mapping[str, Any]) -> None:
        call = self.calls.setdefault(int(fragment["index"]), _PartialCall())
        if fragment.get("id") and not call.id:
            call.id = str(fragment["id"])
        function = fragment.get("function")
        if function is not None:
            if function.get("name") and not call.name:
                call.name = str(function["name"])
            if function.get("arguments"):
                call.arguments.append(str(function["arguments"]))

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(id=c.id or f"call_{i}", name=c.name, arguments="".join(c.arguments) or "{}")
            for i, c in sorted(self.calls.items())
        )


async def _drain(chunks: AsyncIterator[dict[str, Any]], deadline: float) -> None:
    """Read what follows the finish_reason (the usage chunk, ``[DONE]``) so the connection can be reused;
    the reply is complete, so a failure here is not the caller's concern."""
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                await anext(chunks)
    except StopAsyncIteration:
        pass
    except (TimeoutError, openai.OpenAIError, json.JSONDecodeError):
        pass


def _error_message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return exc.message


def _provider_error(name: str, exc: openai.OpenAIError) -> ProviderError:
    # Order matters: APITimeoutError is an APIConnectionError; the status errors are APIErrors.
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(name, "timeout", "the request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(name, "connection", f"{exc.message} ({exc.__cause__ or 'no detail'})")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = _error_message(exc)
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return ProviderError(name, "auth", message, status=status)
        if isinstance(exc, openai.RateLimitError):
            return ProviderError(name, "rate_limit", message, status=status)
        if status >= 500:
            return ProviderError(name, "server", message, status=status)
        return ProviderError(name, "bad_request", message, status=status)
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderError(name, "protocol", exc.message)
    if isinstance(exc, openai.APIError):
        # An {"error": ...} event in the middle of the stream: the vendor failed after it started.
        return ProviderError(name, "server", _error_message(exc))
    return ProviderError(name, "protocol", str(exc))
