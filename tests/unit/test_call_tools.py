"""Function tools of a call against a real tool server on loopback, through the conversation session: the
signed Vapi ``tool-calls`` message, the result reaching the model, and each way a tool server can fail
(error result, HTTP 500, garbage, no answer in time) ending in the tool's ``request-failed`` message spoken
and the model told; async tools; endCall's request-start as the last words; DTMF keys validated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import structlog

from gateway.assistants import Assistant, parse_assistant
from gateway.call_assistant import CallConversation
from gateway.call_tools import CallTools, dtmf_plan
from gateway.call_types import CallTarget
from gateway.observability.metrics import Metrics
from gateway.pipeline.events import SessionEvent
from gateway.pipeline.plan import settings_for
from gateway.pipeline.session import ConversationSession, Providers
from gateway.providers.base import ChatMessage, ToolCall, ToolCallsDone
from gateway.util.signing import verify
from tests.fakes._server import serve_app
from tests.fakes.tool_server import Answer, ToolServer
from tests.helpers.conversation import ScriptedLlm, ScriptedStt, ToneTts, converse

SECRET = "tool-secret"
START = "Let me look that up."
FAILED = "Sorry, the booking system is not answering."


@dataclass
class _Manager:
    http: httpx.AsyncClient
    metrics: Metrics = field(default_factory=Metrics)


class StubCall:
    """The parts of a Call the tools and the call record read."""

    def __init__(self, manager: _Manager, assistant: dict[str, Any]) -> None:
        self.manager = manager
        self.id = "3f1c0c2e-0000-4000-8000-000000000001"
        self.direction = "inbound"
        self.status = "in-progress"
        self.created_at = self.answered_at = time.time()
        self.ended_at: float | None = None
        self.ended_reason: str | None = None
        self.customer_number = "+15550001111"
        self.phone_number = "+15550002222"
        self.sip_call_id = "abc@127.0.0.1"
        self.target = CallTarget(kind="assistant", assistant=assistant)
        self.log = structlog.get_logger("test").bind(call_id=self.id)
        self.dialog = None
        self.conversation: CallConversation | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))


def assistant_json(tool_url: str, *, assistant_server: bool = False, **tool: Any) -> dict[str, Any]:
    function_tool = {
        "type": "function",
        "function": {"name": "book", "description": "Book a slot",
                     "parameters": {"type": "object", "properties": {"day": {"type": "string"}}}},
        "server": {"url": f"{tool_url}/tools", "secret": SECRET, "timeoutSeconds": 1},
        "messages": [{"type": "request-start", "content": START},
                     {"type": "request-failed", "content": FAILED}],
    }
    function_tool.update(tool)
    if function_tool["server"] is None:
        del function_tool["server"]
    extra = {"server": {"url": f"{tool_url}/assistant", "secret": "assistant-secret", "timeoutSeconds": 1}} \
        if assistant_server else {}
    return {
        **extra,
        "name": "booking",
        "firstMessageMode": "assistant-speaks-first-with-model-generated-message",
        "model": {"provider": "openai", "model": "gpt-4o-mini",
                  "messages": [{"role": "system", "content": "You book slots."}],
                  "tools": [function_tool, {"type": "endCall", "messages": [
                      {"type": "request-start", "content": "Goodbye, talk soon."}]}]},
        "voice": {"provider": "espeak"},
        "transcriber": {"provider": "pocketsphinx"},
    }


BOOK = ToolCallsDone(calls=(ToolCall(id="call_1", name="book", arguments='{"day": "monday"}'),))


@dataclass
class Outcome:
    reason: str
    texts: list[str]
    llm: ScriptedLlm
    history: list[ChatMessage]
    received: list[Any]
    call: StubCall
    metrics: Metrics
    events: list[SessionEvent]


def run_call(answer: Any, replies: list[Any], *, hang_up_after: float = 4.0, assistant_server: bool = False,
             **tool: Any) -> Outcome:
    server = ToolServer(answer)
    tts = ToneTts()
    llm = ScriptedLlm(list(replies))

    async def go() -> Outcome:
        async with serve_app(server.app) as url, httpx.AsyncClient() as http:
            data = assistant_json(url, assistant_server=assistant_server, **tool)
            assistant: Assistant = parse_assistant(data)
            manager = _Manager(http)
            call = StubCall(manager, data)
            call.conversation = CallConversation(call, assistant)  # type: ignore[arg-type]
            tools = CallTools(call, assistant)  # type: ignore[arg-type]
            settings = settings_for(assistant)

            async def caller(session: ConversationSession, media: Any, events: list[Any]) -> None:
                await asyncio.sleep(hang_up_after)
                session.end("customer-ended-call")

            reason, events, _media, session = await converse(
                settings, Providers(stt=ScriptedStt(), llm=llm, tts=[tts], tools=tools), caller)
            for task in call.tasks:
                await asyncio.wait_for(task, 5)
            return Outcome(reason, tts.texts, llm, session.history, server.requests, call, manager.metrics, events)

    return asyncio.run(go())


def tool_messages(history: list[ChatMessage]) -> list[str | None]:
    return [m.content for m in history if m.role == "tool"]


def metric(metrics: Metrics, kind: str, result: str) -> float:
    return float(metrics.tool_calls.labels(kind, result)._value.get())


def test_result_goes_to_the_model_and_the_message_is_signed() -> None:
    out = run_call(lambda m: Answer(body={"results": [{"toolCallId": "call_1", "result": {"slot": "10:00"}}]}),
                   [BOOK, "You are booked at ten."], hang_up_after=3.0)
    assert out.texts == [START, "You are booked at ten."]
    # the model's second request carries the tool's result, as a JSON string
    second = out.llm.requests[1]
    assert second[-1] == ChatMessage(role="tool", tool_call_id="call_1", content='{"slot": "10:00"}')
    assert second[-2].tool_calls == BOOK.calls
    # one signed POST, Vapi's tool-calls shape
    (request,) = out.received
    assert request.path == "/tools"
    assert request.headers["x-vapi-secret"] == SECRET
    assert verify(SECRET, request.body, request.headers["x-voicegw-timestamp"],
                  request.headers["x-voicegw-signature"], time.time())
    assert not verify("other-secret", request.body, request.headers["x-voicegw-timestamp"],
                      request.headers["x-voicegw-signature"], time.time())
    message = request.message
    assert message["type"] == "tool-calls"
    assert message["toolCallList"] == [{"id": "call_1", "type": "function",
                                        "function": {"name": "book", "arguments": {"day": "monday"}}}]
    (with_call,) = message["toolWithToolCallList"]
    assert with_call["type"] == "function" and with_call["function"]["name"] == "book"
    assert with_call["toolCall"] == message["toolCallList"][0]
    assert message["call"]["id"] == out.call.id and message["customer"] == {"number": "+15550001111"}
    assert isinstance(message["timestamp"], int) and "artifact" in message
    # recorded for the end-of-call report
    assert out.call.conversation is not None
    roles = [(m["role"], m.get("toolCallId")) for m in out.call.conversation.messages]
    assert ("tool_calls", None) in roles and ("tool_call_result", "call_1") in roles
    result = next(m for m in out.call.conversation.messages if m["role"] == "tool_call_result")
    assert result["name"] == "book" and result["result"] == '{"slot": "10:00"}'
    assert metric(out.metrics, "function", "ok") == 1


@pytest.mark.parametrize(
    ("answer", "told", "label"),
    [
        (Answer(body={"results": [{"toolCallId": "call_1", "error": "no free slot"}]}), "no free slot", "failed"),
        (Answer(status=500, body={"detail": "boom"}), "HTTP 500", "failed"),
        (Answer(raw=b"<html>oops</html>"), "not JSON", "failed"),
        (Answer(body={"unexpected": True}), '"results"', "failed"),
        (Answer(delay=2.5, body={"results": []}), "did not answer within 1 s", "timeout"),
    ],
    ids=["error", "http-500", "garbage", "wrong-shape", "timeout"],
)
def test_failures_speak_request_failed_and_tell_the_model(answer: Answer, told: str, label: str) -> None:
    out = run_call(lambda m: answer, [BOOK, "This reply must not be asked for."], hang_up_after=3.0)
    # request-start, then the tool's request-failed message instead of a model reply (Vapi: exclusive or)
    assert out.texts == [START, FAILED]
    assert len(out.llm.requests) == 1
    (content,) = tool_messages(out.history)
    assert content is not None and content.startswith("Error") and told in content
    assert metric(out.metrics, "function", label) == 1


def test_failure_without_a_message_lets_the_model_answer_knowing_it_failed() -> None:
    out = run_call(lambda m: Answer(status=503), [BOOK, "I could not book that, sorry."],
                   hang_up_after=3.0, messages=[])
    # no request-start given: one of Vapi's default fillers; then the model, told the tool failed
    assert len(out.texts) == 2 and out.texts[1] == "I could not book that, sorry."
    assert out.texts[0] in ("Hold on a sec.", "One moment.", "Just a sec.", "Give me a moment.",
                            "This'll just take a sec.")
    second = out.llm.requests[1]
    assert second[-1].role == "tool" and "HTTP 503" in (second[-1].content or "")


def test_system_role_complete_message_is_a_hint_for_the_model() -> None:
    out = run_call(lambda m: Answer(body={"results": [{"toolCallId": "call_1", "result": "booked"}]}),
                   [BOOK, "All set for Monday."], hang_up_after=3.0,
                   messages=[{"type": "request-complete", "role": "system", "content": "Confirm the day."}])
    assert "Confirm the day." not in out.texts and out.texts[-1] == "All set for Monday."
    second = out.llm.requests[1]
    assert second[-1] == ChatMessage(role="system", content="Confirm the day.")
    assert second[-2].role == "tool" and second[-2].content == "booked"


def test_async_tool_does_not_wait_for_the_server() -> None:
    out = run_call(lambda m: Answer(delay=1.5, body={"results": [{"toolCallId": "call_1", "result": "later"}]}),
                   [BOOK, "I have sent your request."], hang_up_after=3.0, **{"async": True})
    # no request-start for an async tool; the model is told the request went out, without its result
    assert out.texts == ["I have sent your request."]
    (content,) = tool_messages(out.history)
    assert content is not None and "sent" in content and "later" not in content
    assert len(out.received) == 1 and out.received[0].message["toolCallList"][0]["id"] == "call_1"
    assert metric(out.metrics, "function", "ok") == 1


def test_end_call_speaks_its_request_start_last_and_ends_as_the_assistant() -> None:
    end = ToolCallsDone(calls=(ToolCall(id="call_9", name="endCall", arguments="{}"),))
    out = run_call(lambda m: Answer(), [end], hang_up_after=10.0)
    assert out.reason == "assistant-ended-call"
    assert out.texts == ["Goodbye, talk soon."]
    assert out.received == []
    assert metric(out.metrics, "endCall", "ok") == 1
    assert out.call.conversation is not None
    assert [m["role"] for m in out.call.conversation.messages].count("tool_call_result") == 1


def test_unknown_tool_and_bad_arguments_are_reported_to_the_model() -> None:
    calls = ToolCallsDone(calls=(ToolCall(id="c1", name="nope", arguments="{}"),
                                 ToolCall(id="c2", name="book", arguments="{not json")))
    out = run_call(lambda m: Answer(), [calls, "Sorry about that."], hang_up_after=3.0, messages=[])
    first, second = tool_messages(out.history)
    assert first is not None and "no tool named 'nope'" in first
    assert second is not None and "not a JSON object" in second
    assert out.received == []


@pytest.mark.parametrize(
    ("keys", "plan"),
    [("123#", ["123#"]), ("1 2-3", ["123"]), ("12w#", ["12", 0.5, "#"]), ("*a", ["*A"]), ("W9", [1.0, "9"])],
)
def test_dtmf_plan(keys: str, plan: list[object]) -> None:
    assert dtmf_plan(keys) == plan


@pytest.mark.parametrize("keys", ["", "w", "12x", "é"])
def test_dtmf_plan_rejects(keys: str) -> None:
    with pytest.raises(ValueError):
        dtmf_plan(keys)


def test_a_tool_without_a_server_posts_to_the_assistant_server_with_its_secret() -> None:
    out = run_call(lambda m: Answer(body={"results": [{"toolCallId": "call_1", "result": "done"}]}),
                   [BOOK, "Okay."], hang_up_after=2.5, server=None, assistant_server=True)
    (request,) = out.received
    assert request.path == "/assistant"
    assert request.headers["x-vapi-secret"] == "assistant-secret"
    assert verify("assistant-secret", request.body, request.headers["x-voicegw-timestamp"],
                  request.headers["x-voicegw-signature"], time.time())
    assert tool_messages(out.history) == ["done"]
