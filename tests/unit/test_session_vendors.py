"""The session's Vapi semantics with the real vendor providers: Deepgram, OpenAI and ElevenLabs SDKs against
local servers speaking their wire protocols (tests/fakes), driven like a call's media. Flush and an end-call
phrase; barge-in, idle messages and the silence timeout; a model that fails mid-call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.pipeline.events import EndCall, UserInterrupted
from gateway.pipeline.session import Providers
from gateway.pipeline.settings import IdleSettings, SessionSettings
from gateway.pipeline.turn import TurnOptions
from gateway.providers.base import ChatMessage
from gateway.providers.deepgram import DeepgramStt
from gateway.providers.elevenlabs import ElevenLabsTts
from gateway.providers.espeak import EspeakTts
from gateway.providers.openai_llm import OpenAiLlm
from tests.fakes._server import serve_app
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.elevenlabs_server import FakeElevenLabs
from tests.fakes.openai_server import FakeOpenAI, Faults
from tests.helpers.conversation import converse, speech_pcm

KEY = "k"
TURN = TurnOptions(wait_seconds=0.0, on_punctuation_seconds=0.05, on_no_punctuation_seconds=0.2,
                   voice_seconds=0.1, backoff_seconds=0.0)


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return speech_pcm("hello there, I have a question", tmp_path_factory.mktemp("speech"))


async def wait_for(cond: Any, timeout: float = 8.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def with_vendors(transcripts: list[str], replies: list[str], settings: SessionSettings, caller: Any,
                       *, faults: Faults | None = None) -> tuple[str, list[Any], Any, FakeOpenAI, FakeElevenLabs]:
    deepgram = FakeDeepgram(transcripts, api_key=KEY)
    openai = FakeOpenAI(replies, api_key=KEY, faults=faults)
    eleven = FakeElevenLabs(api_key=KEY)
    async with serve_app(deepgram.app) as dg, serve_app(openai.app) as oa, serve_app(eleven.app) as el:
        providers = Providers(stt=DeepgramStt(KEY, dg), llm=OpenAiLlm(KEY, f"{oa}/v1"),
                              tts=[ElevenLabsTts(KEY, el), EspeakTts()])
        reason, events, _media, session = await converse(settings, providers, caller, timeout=25)
    return reason, events, session, openai, eleven


def test_flush_and_end_call_phrase_through_the_vendor_sdks(hello: bytes) -> None:
    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        media.say(hello)

    reason, events, _session, openai, eleven = asyncio.run(with_vendors(
        ["Hello there, I have a question."],
        ["One moment. <flush /> Thanks for calling, have a nice day!"],
        SessionSettings(turn=TURN, end_call_phrases=("have a nice day",),
                        messages=(ChatMessage(role="system", content="Be brief."),)),
        caller,
    ))
    assert reason == "assistant-said-end-call-phrase"
    assert [r.text for r in eleven.requests] == ["One moment.", "Thanks for calling, have a nice day!"]
    assert openai.requests[0]["messages"][-1] == {"role": "user", "content": "Hello there, I have a question."}
    assert any(isinstance(e, EndCall) for e in events)


def test_barge_in_idle_and_silence_timeout_through_the_vendor_sdks(hello: bytes) -> None:
    first = "Welcome to the test line. " * 6

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        await wait_for(lambda: session.speaker.speaking and len(media.out) > 60)
        media.say(hello)

    reason, events, session, _, eleven = asyncio.run(with_vendors(
        ["Hello there, I have a question."],
        ["Sure, go ahead."],
        SessionSettings(turn=TURN, first_message=first.strip(),
                        idle=IdleSettings(messages=("Are you still there?",), timeout_seconds=0.5, max_spoken_count=1),
                        silence_timeout_seconds=2.0),
        caller,
    ))
    assert reason == "silence-timed-out"
    interrupted = [e for e in events if isinstance(e, UserInterrupted)]
    assert interrupted and interrupted[0].heard and len(interrupted[0].heard) < len(first.strip())
    texts = [r.text for r in eleven.requests]
    assert texts[-2:] == ["Sure, go ahead.", "Are you still there?"]
    assistant = [m.content for m in session.history if m.role == "assistant"]
    assert assistant[0] == interrupted[0].heard  # the cut first message, as heard


def test_a_model_that_fails_mid_call_gets_an_apology_and_a_clean_end(hello: bytes) -> None:
    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        media.say(hello)

    reason, _, _, _, eleven = asyncio.run(with_vendors(
        ["Hello."], [], SessionSettings(turn=TURN, apology="Sorry, we have a problem.", llm_failed_replies_to_end=1), caller,
        faults=Faults(status=500),
    ))
    assert reason == "pipeline-error-openai-llm-failed"
    assert [r.text for r in eleven.requests] == ["Sorry, we have a problem."]

