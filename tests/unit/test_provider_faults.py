"""Provider faults during a conversation, with the real vendor clients (Deepgram, OpenAI and ElevenLabs SDKs)
against the local fake services, each told to misbehave once (``fail_next``): the call goes on or ends
cleanly, and every failure is counted in ``voicegw_provider_errors{provider,kind}``. Plus the isolation of
one conversation's bug from another conversation on the same event loop. Each conversation runs in real
time (a few seconds): the variants of one fault are marked slow, one of each kind runs by default."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.observability.metrics import Metrics
from gateway.pipeline.events import EndCall, ProviderFailure
from gateway.pipeline.session import ConversationSession, Providers, ToolOutcome
from gateway.pipeline.settings import SessionSettings, ToolBehaviour
from gateway.pipeline.turn import TurnOptions
from gateway.providers.base import ChatMessage, LlmOptions, SttOptions, ToolCall, ToolCallsDone
from gateway.providers.deepgram import DeepgramStt
from gateway.providers.elevenlabs import ElevenLabsTts
from gateway.providers.openai_llm import OpenAiLlm
from tests.fakes._server import serve_app
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.elevenlabs_server import FakeElevenLabs
from tests.fakes.openai_server import FakeOpenAI, Faults
from tests.helpers.conversation import (
    MediaDriver,
    ScriptedLlm,
    ScriptedStt,
    ScriptedSttStream,
    ToneTts,
    converse,
    speech_pcm,
)

KEY = "k"
TURN = TurnOptions(wait_seconds=0.0, on_punctuation_seconds=0.05, on_no_punctuation_seconds=0.2,
                   voice_seconds=0.1, backoff_seconds=0.0)
SAID = "Hello there, I have a question."
ECHO = "Sure, go ahead."  # the fake model's answer to anything
SORRY = "Sorry, could you say that again?"


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return speech_pcm("hello there, I have a question", tmp_path_factory.mktemp("speech"))


async def wait_for(cond: Any, timeout: float = 8.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def errors(session: ConversationSession, provider: str, kind: str) -> float:
    value = session.metrics.registry.get_sample_value(
        "voicegw_provider_errors_total", {"provider": provider, "kind": kind})
    return value or 0.0


class Vendors:
    def __init__(self) -> None:
        self.deepgram = FakeDeepgram([SAID], api_key=KEY, default_transcript=SAID)
        self.openai = FakeOpenAI(lambda body: ECHO, api_key=KEY)
        self.eleven = FakeElevenLabs(api_key=KEY)
        self.local = ToneTts("local")

    def spoken(self) -> list[str]:
        return [r.text for r in self.eleven.requests if r.completed] + self.local.texts

    async def converse(self, settings: SessionSettings, caller: Any, *, llm_timeout: float = 10.0,
                       ) -> tuple[str, list[Any], ConversationSession]:
        async with (serve_app(self.deepgram.app) as dg, serve_app(self.openai.app) as oa,
                    serve_app(self.eleven.app) as el):
            providers = Providers(stt=DeepgramStt(KEY, dg), llm=OpenAiLlm(KEY, f"{oa}/v1",
                                                                          first_token_timeout=llm_timeout),
                                  tts=[ElevenLabsTts(KEY, el), self.local])
            reason, events, _media, session = await converse(settings, providers, caller, timeout=25)
        return reason, events, session


def settings(**kw: Any) -> SessionSettings:
    base: dict[str, Any] = {"turn": TURN, "messages": (ChatMessage(role="system", content="Be brief."),),
                            "llm_error_message": SORRY}
    base.update(kw)
    return SessionSettings(**base)


def quiet(session: ConversationSession) -> bool:
    return not session.speaker.speaking and session._responder_task is None


def test_stt_socket_dropped_mid_utterance_reconnects_and_the_next_utterance_is_answered(hello: bytes) -> None:
    v = Vendors()
    v.deepgram.fail_next("drop_mid_utterance")

    async def caller(session: Any, media: MediaDriver, events: list[Any]) -> None:
        media.say(hello)  # cut: the socket drops after its first interim result
        # The audio of the gap waited in the bounded queue and went to the new stream: the rest of the
        # utterance is still transcribed and answered.
        await wait_for(lambda: ECHO in v.spoken() and quiet(session))
        media.say(hello)  # the next utterance, on the new stream
        await wait_for(lambda: v.spoken().count(ECHO) == 2 and quiet(session))
        session.end("customer-ended-call")

    reason, events, session = asyncio.run(v.converse(settings(), caller))
    assert reason == "customer-ended-call"
    first, second = v.deepgram.connections
    assert first.closed == "dropped" and first.finals == 0
    assert second.finals == 2
    assert [r["messages"][-1]["content"] for r in v.openai.requests][-1] == SAID
    assert errors(session, "deepgram", "connection") == 1
    assert [e.stage for e in events if isinstance(e, ProviderFailure)] == ["stt"]


def test_llm_5xx_is_answered_by_the_fallback_model(hello: bytes) -> None:
    v = Vendors()
    v.openai.fail_next(Faults(status=500))

    async def caller(session: Any, media: MediaDriver, events: list[Any]) -> None:
        media.say(hello)
        await wait_for(lambda: ECHO in v.spoken() and quiet(session))
        session.end("customer-ended-call")

    reason, _, session = asyncio.run(v.converse(
        settings(llm=LlmOptions(model="gpt-4o"), llm_fallback_models=("gpt-4o-mini",)), caller))
    assert reason == "customer-ended-call"
    assert [r["model"] for r in v.openai.requests] == ["gpt-4o", "gpt-4o-mini"]
    assert SORRY not in v.spoken()
    assert errors(session, "openai", "server") == 1


@pytest.mark.parametrize(("faults", "kind"), [
    (Faults(status=503), "server"),
    pytest.param(Faults(first_chunk_delay=2.0), "timeout", marks=pytest.mark.slow),  # no first token in time
    pytest.param(Faults(garbage_after=0), "protocol", marks=pytest.mark.slow),  # a data: line that is not JSON
], ids=["5xx", "timeout", "garbage"])
def test_a_failed_reply_gets_an_apology_and_the_next_turn_is_answered(hello: bytes, faults: Faults,
                                                                      kind: str) -> None:
    v = Vendors()
    v.openai.fail_next(faults)

    async def caller(session: Any, media: MediaDriver, events: list[Any]) -> None:
        media.say(hello)
        await wait_for(lambda: SORRY in v.spoken() and quiet(session))
        media.say(hello)
        await wait_for(lambda: ECHO in v.spoken() and quiet(session))
        session.end("customer-ended-call")

    reason, _, session = asyncio.run(v.converse(settings(), caller, llm_timeout=0.5))
    assert reason == "customer-ended-call"
    assert v.spoken()[-2:] == [SORRY, ECHO]
    assert errors(session, "openai", kind) == 1
    # the model saw both user turns and the apology between them
    assert [m["content"] for m in v.openai.requests[-1]["messages"][-3:]] == [SAID, SORRY, SAID]


@pytest.mark.slow
def test_a_model_failing_on_every_reply_ends_the_call_with_vapis_reason(hello: bytes) -> None:
    v = Vendors()
    v.openai.fault_rule = lambda body: Faults(status=500)

    async def caller(session: Any, media: MediaDriver, events: list[Any]) -> None:
        media.say(hello)
        await wait_for(lambda: SORRY in v.spoken() and quiet(session))
        media.say(hello)

    reason, events, session = asyncio.run(v.converse(
        settings(apology="We have a problem, goodbye.", llm_failed_replies_to_end=2), caller))
    assert reason == "pipeline-error-openai-llm-failed"
    assert v.spoken() == [SORRY, "We have a problem, goodbye."]
    assert errors(session, "openai", "server") == 2
    assert [e.reason for e in events if isinstance(e, EndCall)] == [reason]


@pytest.mark.parametrize(("status", "abort", "kind"), [
    (500, None, "server"), pytest.param(None, 0, "connection", marks=pytest.mark.slow)],
                         ids=["5xx", "socket-drop"])
def test_a_failing_voice_is_replaced_by_the_local_voice(status: int | None, abort: int | None, kind: str) -> None:
    v = Vendors()
    v.eleven.fail_next(status, abort_after_bytes=abort)

    async def caller(session: Any, media: MediaDriver, events: list[Any]) -> None:
        await wait_for(lambda: len(v.local.texts) == 2 and quiet(session))
        session.end("customer-ended-call")

    async def first_then_say(session: Any, media: MediaDriver, events: list[Any]) -> None:
        await wait_for(lambda: v.local.texts and quiet(session))
        session.say("And one more thing.")
        await caller(session, media, events)

    reason, _, session = asyncio.run(v.converse(settings(first_message="Welcome to the line."), first_then_say))
    assert reason == "customer-ended-call"
    # the caller heard both, in the local voice: a failed voice is skipped for the rest of the call
    assert v.local.texts == ["Welcome to the line.", "And one more thing."]
    assert len(v.eleven.requests) == 1
    assert errors(session, "11labs", kind) == 1


# -- bugs: an exception that is not a ProviderError --------------------------------------------------


class BuggyStream(ScriptedSttStream):
    """An STT stream whose ``send`` has a bug after a few frames."""

    def __init__(self) -> None:
        super().__init__([], [])
        self.frames = 0

    async def send(self, audio: bytes) -> None:
        self.frames += 1
        if self.frames > 10:
            raise RuntimeError("bug in the transcriber client")


class BuggyStt(ScriptedStt):
    async def connect(self, options: SttOptions) -> ScriptedSttStream:
        return BuggyStream()


def test_a_bug_in_one_conversation_ends_it_and_a_concurrent_one_finishes(hello: bytes) -> None:
    async def scenario() -> tuple[str, str, list[Any], ToneTts]:
        broken_events: list[Any] = []
        broken_tts = ToneTts()
        broken = ConversationSession(
            settings(apology="Sorry, goodbye."),
            Providers(stt=BuggyStt(), llm=ScriptedLlm(name="openai"), tts=[broken_tts]),
            on_event=broken_events.append, metrics=Metrics())
        healthy_tts = ToneTts()
        healthy = ConversationSession(
            settings(first_message="Hi.", end_call_phrases=("goodbye",)),
            Providers(stt=ScriptedStt([SAID]), llm=ScriptedLlm(["Thanks, goodbye."]), tts=[healthy_tts]),
            on_event=lambda e: None, metrics=Metrics())
        media_a, media_b = MediaDriver(broken), MediaDriver(healthy)
        async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
            drivers = [tg.create_task(media_a.run()), tg.create_task(media_b.run())]
            run_a = tg.create_task(broken.run())
            run_b = tg.create_task(healthy.run())
            reason_a = await run_a
            assert not run_b.done()  # the healthy call did not notice
            await wait_for(lambda: not healthy.speaker.speaking)
            media_b.say(hello)
            reason_b = await run_b
            for d in drivers:
                d.cancel()
        return reason_a, reason_b, broken_events, healthy_tts

    reason_a, reason_b, events_a, healthy_tts = asyncio.run(scenario())
    assert reason_a == "pipeline-error-openai-llm-failed"
    assert [e.reason for e in events_a if isinstance(e, EndCall)] == [reason_a]
    assert reason_b == "assistant-said-end-call-phrase"
    assert healthy_tts.texts == ["Hi.", "Thanks, goodbye."]


def test_a_bug_in_a_tool_runner_fails_that_tool_and_the_model_is_told(hello: bytes) -> None:
    llm = ScriptedLlm([ToolCallsDone(calls=(ToolCall(id="c1", name="lookup", arguments="{}"),)),
                       "I could not look that up."])
    tts = ToneTts()

    async def tools(name: str, arguments: str, call_id: str) -> ToolOutcome:
        raise KeyError("bug in the tool handler")

    async def caller(session: Any, media: MediaDriver, events: list[Any]) -> None:
        media.say(hello)
        await wait_for(lambda: "I could not look that up." in tts.texts and quiet(session))
        session.end("customer-ended-call")

    behaviour = {"lookup": ToolBehaviour(name="lookup", kind="function")}
    reason, _, _, _ = asyncio.run(converse(settings(tool_behaviour=behaviour), Providers(
        stt=ScriptedStt([SAID]), llm=llm, tts=[tts], tools=tools), caller))
    assert reason == "customer-ended-call"
    tool_results = [m for m in llm.requests[-1] if m.role == "tool"]
    assert tool_results and "failed" in (tool_results[0].content or "")
