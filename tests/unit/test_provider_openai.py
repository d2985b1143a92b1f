"""OpenAiLlm (gateway/providers/openai_llm.py) through the real openai SDK against the local fake of
OpenAI's streaming chat completions (tests/fakes/openai_server.py) on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest

from gateway.providers.base import (
    ChatMessage,
    LlmDone,
    LlmEvent,
    LlmOptions,
    LlmProvider,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolCallsDone,
    ToolSpec,
)
from gateway.providers.openai_llm import (
    DEFAULT_MODEL,
    NO_API_KEY,
    OpenAiLlm,
    custom_llm,
    custom_llm_endpoint,
)
from tests.fakes._server import serve_app
from tests.fakes.openai_server import (
    FakeOpenAI,
    FakeToolCall,
    Faults,
    TextReply,
    ToolCallsReply,
    build_app,
)

T = TypeVar("T")
KEY = "sk-test-key"
SYSTEM = ChatMessage(role="system", content="You are the front desk of Acme Dental.")
USER = ChatMessage(role="user", content="Can I book a cleaning on Tuesday?")
WAIT = 5.0  # a generous bound on waits for the fake's side, never a performance threshold


def run(scenario: Callable[[str], Awaitable[T]], fake: FakeOpenAI) -> T:
    """Serve ``fake`` and run ``scenario(base_url)`` in a fresh event loop."""

    async def main() -> T:
        async with serve_app(fake.app) as base_url:
            return await scenario(base_url)

    return asyncio.run(main())


async def collect(
    llm: OpenAiLlm,
    messages: Sequence[ChatMessage] = (SYSTEM, USER),
    *,
    tools: Sequence[ToolSpec] = (),
    options: LlmOptions | None = None,
) -> list[LlmEvent]:
    return [e async for e in llm.stream(messages, tools=tools, options=options or LlmOptions())]


async def failure(llm: OpenAiLlm, options: LlmOptions | None = None) -> tuple[ProviderError, list[LlmEvent]]:
    events: list[LlmEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in llm.stream((SYSTEM, USER), options=options or LlmOptions()):
            events.append(event)
    return info.value, events


def text_of(events: Sequence[LlmEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# -- text --------------------------------------------------------------------------------------------


def test_text_deltas_reassemble_to_the_reply_then_done() -> None:
    reply = "Sure, Tuesday at ten works. Shall I book it?"
    fake = FakeOpenAI([TextReply(text=reply, chunk_size=3)], api_key=KEY)

    events = run(lambda url: collect(OpenAiLlm(KEY, f"{url}/v1")), fake)

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == len(range(0, len(reply), 3))  # streamed piece by piece, not buffered
    assert text_of(events) == reply
    assert events[-1] == LlmDone(finish_reason="stop")
    assert not any(isinstance(e, ToolCallsDone) for e in events)


def test_default_rule_echoes_the_last_user_message() -> None:
    events = run(lambda url: collect(OpenAiLlm(KEY, f"{url}/v1")), FakeOpenAI())

    assert text_of(events) == "You said: Can I book a cleaning on Tuesday?."


def test_request_carries_messages_options_and_usage_request() -> None:
    fake = FakeOpenAI(api_key=KEY)
    options = LlmOptions(model="gpt-4.1-nano", temperature=0.3, max_tokens=120, extra={"user": "call-7"})

    run(lambda url: collect(OpenAiLlm(KEY, f"{url}/v1"), options=options), fake)

    (body,) = fake.requests
    assert body["messages"] == [
        {"role": "system", "content": "You are the front desk of Acme Dental."},
        {"role": "user", "content": "Can I book a cleaning on Tuesday?"},
    ]
    assert body["model"] == "gpt-4.1-nano"
    assert body["temperature"] == 0.3
    assert body["max_completion_tokens"] == 120 and "max_tokens" not in body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["user"] == "call-7"
    assert "tools" not in body  # only sent when there are tools
    assert fake.headers[0]["authorization"] == f"Bearer {KEY}"
    assert fake.paths == ["/v1/chat/completions"]


def test_defaults_when_no_options_are_given() -> None:
    fake = FakeOpenAI()

    run(lambda url: collect(OpenAiLlm(KEY, f"{url}/v1")), fake)

    (body,) = fake.requests
    assert body["model"] == DEFAULT_MODEL
    assert "temperature" not in body and "max_completion_tokens" not in body and "max_tokens" not in body


def test_usage_only_last_chunk_is_not_an_event_and_stream_runs_to_done() -> None:
    fake = FakeOpenAI(["Hello."])

    events = run(lambda url: collect(OpenAiLlm(KEY, f"{url}/v1")), fake)

    assert events == [TextDelta(text="Hell"), TextDelta(text="o."), LlmDone(finish_reason="stop")]
    assert fake.completed == 1 and fake.aborted == 0  # read through the usage chunk and [DONE]


def test_finish_reason_length_is_reported() -> None:
    fake = FakeOpenAI([TextReply(text="I can offer", finish_reason="length")])

    events = run(lambda url: collect(OpenAiLlm(KEY, f"{url}/v1")), fake)

    assert events[-1] == LlmDone(finish_reason="length")


# -- tool calls -------------------------------------------------------------------------------------

BOOK = ToolSpec(
    name="book_appointment",
    description="Book a dental appointment",
    parameters={
        "type": "object",
        "properties": {"day": {"type": "string"}, "time": {"type": "string"}},
        "required": ["day"],
    },
)
WEATHER = ToolSpec(name="get_weather")


def test_tool_call_with_split_arguments_gives_one_tool_calls_done() -> None:
    args = json.dumps({"day": "Tuesday", "time": "10:00", "note": "first visit, \"nervous\" patient"})
    reply = ToolCallsReply(calls=(FakeToolCall(id="call_abc", name="book_appointment", arguments=args),))
    fake = FakeOpenAI([reply], chunk_size=5)

    events = run(lambda url: collect(OpenAiLlm(KEY, f"{url}/v1"), tools=[BOOK]), fake)

    done = [e for e in events if isinstance(e, ToolCallsDone)]
    assert done == [ToolCallsDone(calls=(ToolCall(id="call_abc", name="book_appointment", arguments=args),))]
    assert json.loads(done[0].calls[0].arguments)["note"] == 'first visit, "nervous" patient'
    assert events[-1] == LlmDone(finish_reason="tool_calls")
    assert events.index(done[0]) == len(events) - 2
    assert fake.requests[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "book_appointment",
                "description": "Book a dental appointment",
                "parameters": BOOK.parameters,
            },
        }
    ]


def test_two_parallel_tool_calls_come_back_in_index_order() -> None:
    calls = (
        FakeToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
        FakeToolCall(id="call_2", name="get_weather", arguments='{"city": "Lyon"}'),
    )
    fake = FakeOpenAI([ToolCallsReply(calls=calls, text="Let me check. ")], chunk_size=2)

    events = run(lambda url: collect(OpenAiLlm(KEY, f"{url}/v1"), tools=[WEATHER]), fake)

    assert text_of(events) == "Let me check. "
    (done,) = [e for e in events if isinstance(e, ToolCallsDone)]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in done.calls] == [
        ("call_1", "get_weather", {"city": "Paris"}),
        ("call_2", "get_weather", {"city": "Lyon"}),
    ]
    assert fake.requests[0]["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
    ]


def test_tool_results_round_trip_into_the_next_request() -> None:
    call = ToolCall(id="call_abc", name="book_appointment", arguments='{"day": "Tuesday"}')
    history = (
        SYSTEM,
        USER,
        ChatMessage(role="assistant", content=None, tool_calls=(call,)),
        ChatMessage(role="tool", content='{"booked": true, "time": "10:00"}', tool_call_id="call_abc"),
    )
    fake = FakeOpenAI(["You're booked for Tuesday at ten."])

    events = run(lambda url: collect(OpenAiLlm(KEY, f"{url}/v1"), history, tools=[BOOK]), fake)

    assert text_of(events) == "You're booked for Tuesday at ten."
    sent = fake.requests[0]["messages"]
    assert sent[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "book_appointment", "arguments": '{"day": "Tuesday"}'},
            }
        ],
    }
    assert sent[3] == {"role": "tool", "content": '{"booked": true, "time": "10:00"}', "tool_call_id": "call_abc"}


# -- errors -----------------------------------------------------------------------------------------


def test_wrong_key_is_auth_error() -> None:
    fake = FakeOpenAI(api_key=KEY)

    err, events = run(lambda url: failure(OpenAiLlm("sk-wrong", f"{url}/v1")), fake)

    assert (err.kind, err.status, err.provider) == ("auth", 401, "openai")
    assert err.message == "Incorrect API key provided."
    assert not err.retryable and events == []


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [(429, "rate_limit", True), (500, "server", True), (503, "server", True), (404, "bad_request", False)],
)
def test_http_errors_map_to_kinds(status: int, kind: str, retryable: bool) -> None:
    fake = FakeOpenAI(faults=Faults(status=status))

    err, events = run(lambda url: failure(OpenAiLlm(KEY, f"{url}/v1")), fake)

    assert (err.kind, err.status, err.retryable) == (kind, status, retryable)
    assert events == []


def test_rejected_request_is_bad_request_with_the_servers_message() -> None:
    orphan = ChatMessage(role="tool", content="{}", tool_call_id="call_missing")
    fake = FakeOpenAI()

    async def scenario(url: str) -> ProviderError:
        with pytest.raises(ProviderError) as info:
            await collect(OpenAiLlm(KEY, f"{url}/v1"), (SYSTEM, USER, orphan))
        return info.value

    err = run(scenario, fake)

    assert (err.kind, err.status) == ("bad_request", 400)
    assert "role 'tool' must be a response" in err.message


def test_nothing_listening_is_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the request: connection refused

    async def scenario() -> ProviderError:
        err, _ = await failure(OpenAiLlm(KEY, f"http://127.0.0.1:{port}/v1"))
        return err

    err = asyncio.run(scenario())

    assert err.kind == "connection" and err.retryable


def test_no_first_token_in_time_is_timeout() -> None:
    fake = FakeOpenAI(faults=Faults(first_chunk_delay=2.0))

    err, events = run(lambda url: failure(OpenAiLlm(KEY, f"{url}/v1", first_token_timeout=0.2)), fake)

    assert err.kind == "timeout" and "first token" in err.message
    assert events == []


def test_a_role_only_chunk_is_not_the_first_token() -> None:
    fake = FakeOpenAI(faults=Faults(chunk_delay=2.0))  # the role chunk comes at once, the text does not

    err, events = run(lambda url: failure(OpenAiLlm(KEY, f"{url}/v1", first_token_timeout=0.2)), fake)

    assert err.kind == "timeout" and "first token" in err.message
    assert events == []


def test_reply_not_finished_in_time_is_timeout_after_the_text_so_far() -> None:
    fake = FakeOpenAI([TextReply(text="a" * 40, chunk_size=1)], faults=Faults(chunk_delay=0.1))

    err, events = run(
        lambda url: failure(OpenAiLlm(KEY, f"{url}/v1", first_token_timeout=5.0, total_timeout=0.3)), fake
    )

    assert err.kind == "timeout" and "not finished" in err.message
    assert 0 < len(events) < 40 and all(isinstance(e, TextDelta) for e in events)


def test_garbage_in_the_stream_is_protocol_error() -> None:
    fake = FakeOpenAI(["Hello there, how can I help?"], faults=Faults(garbage_after=2))

    err, events = run(lambda url: failure(OpenAiLlm(KEY, f"{url}/v1")), fake)

    assert err.kind == "protocol" and not err.retryable
    assert text_of(events) == "Hell"  # what came before the garbage was delivered


def test_stream_cut_before_finish_reason_is_protocol_error() -> None:
    fake = FakeOpenAI(["Hello there, how can I help?"], faults=Faults(drop_after=3))

    err, events = run(lambda url: failure(OpenAiLlm(KEY, f"{url}/v1")), fake)

    assert err.kind == "protocol" and "finish_reason" in err.message
    assert not any(isinstance(e, LlmDone) for e in events)


def test_error_event_mid_stream_is_server_error() -> None:
    fake = FakeOpenAI(["Hello there, how can I help?"], faults=Faults(error_after=2))

    err, _ = run(lambda url: failure(OpenAiLlm(KEY, f"{url}/v1")), fake)

    assert err.kind == "server" and "server had an error" in err.message


# -- cancellation -----------------------------------------------------------------------------------

LONG = TextReply(text="x" * 400, chunk_size=1)


def test_cancelling_the_consuming_task_closes_the_http_response() -> None:
    fake = FakeOpenAI([LONG], faults=Faults(chunk_delay=0.02))

    async def scenario(url: str) -> list[LlmEvent]:
        llm = OpenAiLlm(KEY, f"{url}/v1")
        seen: list[LlmEvent] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for event in llm.stream((SYSTEM, USER), options=LlmOptions()):
                seen.append(event)
                first.set()

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(consume())
            async with asyncio.timeout(WAIT):
                await first.wait()
            task.cancel()
        assert task.cancelled()
        async with asyncio.timeout(WAIT):
            await fake.stream_ended.wait()
        return seen

    seen = run(scenario, fake)

    assert (fake.aborted, fake.completed) == (1, 0)  # the fake saw the client hang up mid-reply
    assert 0 < len(seen) < 400


def test_closing_the_iterator_closes_the_http_response() -> None:
    fake = FakeOpenAI([LONG, "Still here."], faults=Faults(chunk_delay=0.02))

    async def scenario(url: str) -> list[LlmEvent]:
        llm = OpenAiLlm(KEY, f"{url}/v1")
        events = llm.stream((SYSTEM, USER), options=LlmOptions())
        await anext(events)
        await events.aclose()
        async with asyncio.timeout(WAIT):
            await fake.stream_ended.wait()
        fake.faults = Faults()
        return await collect(llm)  # the provider is still usable for the next turn

    after = run(scenario, fake)

    assert (fake.aborted, fake.completed) == (1, 1)
    assert text_of(after) == "Still here."


def test_provider_satisfies_the_llm_protocol() -> None:
    provider: LlmProvider = OpenAiLlm(KEY, "http://127.0.0.1:9/v1")  # checked by mypy

    assert provider.name == "openai"


def test_fake_as_a_process_answers_every_request_with_the_fixed_reply() -> None:
    app = build_app(argparse.Namespace(reply="Fixed answer.", api_key=None, chunk_size=4))

    async def scenario() -> list[str]:
        async with serve_app(app) as url:
            llm = OpenAiLlm(KEY, f"{url}/v1")
            return [text_of(await collect(llm)) for _ in range(2)]

    assert asyncio.run(scenario()) == ["Fixed answer.", "Fixed answer."]


# -- custom-llm -------------------------------------------------------------------------------------


def test_custom_llm_posts_to_url_plus_chat_completions() -> None:
    assert custom_llm_endpoint("https://openrouter.ai/api/v1") == "https://openrouter.ai/api/v1/chat/completions"
    assert custom_llm_endpoint("http://10.0.0.5:8080/custom/") == "http://10.0.0.5:8080/custom/chat/completions"


def test_custom_llm_against_its_own_prefix_without_a_key() -> None:
    fake = FakeOpenAI(["Custom hello."])
    headers = {"X-Tenant": "acme", "Authorization": "Bearer smuggled"}

    async def scenario(url: str) -> list[LlmEvent]:
        llm = custom_llm(f"{url}/custom", headers=headers)
        assert llm.name == "custom-llm"
        return await collect(llm, options=LlmOptions(model="my-model", max_tokens=250))

    events = run(scenario, fake)

    assert text_of(events) == "Custom hello."
    assert fake.paths == ["/custom/chat/completions"]
    assert fake.headers[0]["authorization"] == f"Bearer {NO_API_KEY}"  # Authorization is the key's, not a header's
    assert fake.headers[0]["x-tenant"] == "acme"
    body = fake.requests[0]
    assert body["model"] == "my-model"
    assert body["max_tokens"] == 250 and "max_completion_tokens" not in body


def test_custom_llm_key_is_sent_as_bearer_and_errors_name_custom_llm() -> None:
    fake = FakeOpenAI(api_key="secret")

    async def scenario(url: str) -> tuple[list[LlmEvent], ProviderError]:
        good = await collect(custom_llm(f"{url}/custom", "secret"))
        bad, _ = await failure(custom_llm(f"{url}/custom"))
        return good, bad

    good, bad = run(scenario, fake)

    assert isinstance(good[-1], LlmDone)
    assert (bad.provider, bad.kind) == ("custom-llm", "auth")
