"""OpenAiLlm (gateway/providers/openai_llm.py): the request it posts is the one the SDK's
``chat.completions.create`` would send (same JSON body, same headers), and its deadline scope never
cancels the consumer's own work while the generator is suspended at a ``yield``. Against the local fake
of OpenAI's streaming chat completions (tests/fakes/openai_server.py) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from openai import AsyncOpenAI
from openai.resources.chat.completions import AsyncCompletions

from gateway.providers.base import (
    ChatMessage,
    LlmDone,
    LlmEvent,
    LlmOptions,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from gateway.providers.openai_llm import OpenAiLlm
from tests.fakes._server import serve_app
from tests.fakes.openai_server import FakeOpenAI, Faults, TextReply

T = TypeVar("T")
KEY = "sk-test-key"
CALL = ToolCall(id="call_abc", name="book_appointment", arguments='{"day": "Tuesday"}')
HISTORY = (
    ChatMessage(role="system", content="You are the front desk of Acme Dental."),
    ChatMessage(role="user", content="Can I book a cleaning on Tuesday? Ünïcode ✓ and \"quotes\"."),
    ChatMessage(role="assistant", content=None, tool_calls=(CALL,)),
    ChatMessage(role="tool", content='{"booked": true, "time": "10:00"}', tool_call_id="call_abc"),
    ChatMessage(role="assistant", content="You're booked for Tuesday at ten."),
    ChatMessage(role="user", content="Thanks.", name="caller"),
)
TOOLS = (
    ToolSpec(
        name="book_appointment",
        description="Book a slot.",
        parameters={"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]},
    ),
    ToolSpec(name="end_call"),
)
# Known SDK keywords (top_p, seed, user, tool_choice) and keys the SDK does not know (vendor extensions).
OPTIONS = LlmOptions(
    model="gpt-4.1-nano",
    temperature=0.3,
    max_tokens=120,
    extra={"user": "call-7", "top_p": 0.9, "seed": 7, "tool_choice": "auto", "vendor_knob": {"a": [1, 2]}},
)
# Headers that may differ between two requests for reasons other than what is sent.
PER_REQUEST_HEADERS = frozenset({"content-length"})


def run(scenario: Callable[[str], Awaitable[T]], fake: FakeOpenAI) -> T:
    async def main() -> T:
        async with serve_app(fake.app) as base_url:
            return await scenario(base_url)

    return asyncio.run(main())


async def through_create(url: str, llm: OpenAiLlm, headers: dict[str, str]) -> None:
    """The request as ``chat.completions.create`` sends it: the keywords it knows as keywords, the rest
    as ``extra_body``, from a client configured as the provider configures its own."""
    params = llm.request_params(HISTORY, tools=TOOLS, options=OPTIONS)
    known = set(inspect.signature(AsyncCompletions.create).parameters)
    extra_body = {k: params.pop(k) for k in list(params) if k not in known}
    client = AsyncOpenAI(api_key=KEY, base_url=f"{url}/v1", max_retries=0, timeout=llm.total_timeout,
                         default_headers=headers)
    try:
        stream = await client.chat.completions.create(**params, extra_body=extra_body or None, stream=True)
        async for _ in stream:
            pass
    finally:
        await client.close()


@pytest.mark.parametrize("custom", [False, True], ids=["openai", "custom-llm-max-tokens"])
def test_body_and_headers_are_what_chat_completions_create_sends(custom: bool) -> None:
    fake = FakeOpenAI(["Ok.", "Ok."], api_key=KEY)
    headers = {"X-Tenant": "acme"}

    async def scenario(url: str) -> list[LlmEvent]:
        llm = OpenAiLlm(KEY, f"{url}/v1", headers=headers,
                        max_tokens_field="max_tokens" if custom else "max_completion_tokens")
        await through_create(url, llm, headers)
        events = [e async for e in llm.stream(HISTORY, tools=TOOLS, options=OPTIONS)]
        await llm.aclose()
        return events

    events = run(scenario, fake)

    assert events[-1] == LlmDone(finish_reason="stop")
    by_create, by_provider = fake.requests
    assert by_provider == by_create
    assert by_provider["vendor_knob"] == {"a": [1, 2]} and by_provider["stream"] is True
    assert by_provider["max_tokens" if custom else "max_completion_tokens"] == 120
    assert fake.paths[0] == fake.paths[1] == "/v1/chat/completions"
    sent_by_create, sent_by_provider = ({k: v for k, v in h.items() if k not in PER_REQUEST_HEADERS}
                                        for h in fake.headers)
    assert sent_by_provider == sent_by_create
    assert sent_by_provider["authorization"] == f"Bearer {KEY}" and sent_by_provider["x-tenant"] == "acme"


def test_a_reply_slower_than_the_first_token_timeout_completes_within_the_total() -> None:
    # The first token moves the deadline from first_token_timeout to total_timeout.
    fake = FakeOpenAI([TextReply(text="abcdefgh", chunk_size=1)], faults=Faults(chunk_delay=0.1))

    async def scenario(url: str) -> list[LlmEvent]:
        llm = OpenAiLlm(KEY, f"{url}/v1", first_token_timeout=0.3, total_timeout=30.0)
        return [e async for e in llm.stream(HISTORY, options=LlmOptions())]

    events = run(scenario, fake)

    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "abcdefgh"
    assert events[-1] == LlmDone(finish_reason="stop")


def test_the_consumers_own_wait_past_the_deadline_is_not_cancelled() -> None:
    # The consumer holds the generator (here: waits on its own work) past the total deadline. That wait is
    # the consumer's, not the provider's: it must finish; only the provider's next read may time out.
    fake = FakeOpenAI([TextReply(text="abcdefgh", chunk_size=2)], faults=Faults(chunk_delay=0.1))

    async def scenario(url: str) -> dict[str, Any]:
        llm = OpenAiLlm(KEY, f"{url}/v1", first_token_timeout=5.0, total_timeout=0.3)
        outcome: dict[str, Any] = {"held": False, "events": []}
        try:
            async for event in llm.stream(HISTORY, options=LlmOptions()):
                outcome["events"].append(event)
                if not outcome["held"]:
                    await asyncio.sleep(0.6)  # the deadline passes while the generator is suspended here
                    outcome["held"] = True
        except ProviderError as exc:
            outcome["error"] = exc
        return outcome

    outcome = run(scenario, fake)

    assert outcome["held"]
    error = outcome.get("error")
    # Whether the rest was already buffered when the consumer came back decides between the two; never
    # a cancellation of the consumer.
    if error is None:
        assert outcome["events"][-1] == LlmDone(finish_reason="stop")
    else:
        assert error.kind == "timeout" and "not finished" in error.message
