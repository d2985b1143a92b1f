"""The conversation session's Vapi semantics, driven like a call's media on the real loop with scripted
providers: first message modes, a full turn, barge-in with history truncation, end-call phrases and rules,
idle messages, silence and max-duration timeouts, provider failures, keypad input, flush, add-message."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.pipeline.events import EndCall, ProviderFailure, TurnTiming, UserInterrupted
from gateway.pipeline.session import Providers, ToolOutcome
from gateway.pipeline.settings import IdleSettings, KeypadSettings, SessionSettings, ToolBehaviour
from gateway.pipeline.turn import TurnOptions
from gateway.providers.base import ChatMessage, ProviderError, ToolCall, ToolCallsDone, ToolSpec
from tests.helpers.conversation import ScriptedLlm, ScriptedStt, ToneTts, converse, speech_pcm

FAST_TURN = TurnOptions(wait_seconds=0.0, on_punctuation_seconds=0.05, on_no_punctuation_seconds=0.2,
                        on_number_seconds=0.1, voice_seconds=0.1, backoff_seconds=0.0)
SYSTEM = (ChatMessage(role="system", content="You are a test."),)


def settings(**kw: Any) -> SessionSettings:
    base: dict[str, Any] = {"turn": FAST_TURN, "messages": SYSTEM, "silence_timeout_seconds": 30.0}
    base.update(kw)
    return SessionSettings(**base)


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return speech_pcm("hello, what are your opening hours", tmp_path_factory.mktemp("speech"))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def test_first_message_then_a_turn_reaches_the_model_and_is_answered(hello: bytes) -> None:
    stt = ScriptedStt(["What are your opening hours?"])
    llm = ScriptedLlm(["We are open from nine to five."])
    tts = ToneTts()

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        await wait_for(lambda: tts.texts and not session.speaker.speaking)
        media.say(hello)
        await wait_for(lambda: len([e for e in events if isinstance(e, TurnTiming)]) == 1)
        await wait_for(lambda: not session.speaker.speaking)
        session.end("assistant-ended-call")

    reason, events, media, session = run(converse(
        settings(first_message="Hello, how can I help?"), Providers(stt=stt, llm=llm, tts=[tts]), caller))
    assert reason == "assistant-ended-call"
    assert tts.texts[0] == "Hello, how can I help?"
    assert llm.requests[0][-1] == ChatMessage(role="user", content="What are your opening hours?")
    assert llm.requests[0][1] == ChatMessage(role="assistant", content="Hello, how can I help?")
    assert [m.content for m in session.history if m.role == "assistant"] == [
        "Hello, how can I help?", "We are open from nine to five."]
    spans = media.voiced_spans()
    assert len(spans) == 2  # the first message, then the reply
    timing = next(e for e in events if isinstance(e, TurnTiming))
    assert timing.speech_ended_at is not None and timing.first_voiced_out_at is not None
    assert timing.speech_ended_at <= timing.endpointed_at <= timing.first_voiced_out_at
    # the reply's first voiced packet is the start of the second voiced span
    assert spans[1][0] == pytest.approx(timing.first_voiced_out_at)


def test_assistant_waits_for_user() -> None:
    llm = ScriptedLlm()
    tts = ToneTts()

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        await asyncio.sleep(0.5)
        session.end("customer-ended-call")

    _, _, media, _ = run(converse(settings(first_message="Hi", first_message_mode="assistant-waits-for-user"),
                                  Providers(stt=ScriptedStt(), llm=llm, tts=[tts]), caller))
    assert media.out == [] and tts.texts == [] and llm.requests == []


def test_model_generated_first_message() -> None:
    llm = ScriptedLlm(["Good morning from the model."])
    tts = ToneTts()

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        await wait_for(lambda: session.history[-1].role == "assistant")
        session.end("customer-ended-call")

    run(converse(settings(first_message_mode="assistant-speaks-first-with-model-generated-message"),
                 Providers(stt=ScriptedStt(), llm=llm, tts=[tts]), caller))
    assert llm.requests[0] == list(SYSTEM)
    assert tts.texts == ["Good morning from the model."]


LONG_REPLY = " ".join(f"word{i}" for i in range(60)) + "."


def talk_over_the_reply(hello: bytes, llm: ScriptedLlm) -> Any:
    """The caller's part: a question, then the same speech again over the (long) reply, then hang up once the
    next reply is done."""

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        media.say(hello)
        await wait_for(lambda: session.speaker.speaking and len(media.out) > 25)
        media.say(hello)  # talk over the reply
        await wait_for(lambda: any(isinstance(e, UserInterrupted) for e in events))
        await wait_for(lambda: len(llm.requests) == 2)
        await wait_for(lambda: not session.speaker.speaking)
        session.end("customer-ended-call")

    return caller


def test_barge_in_stops_audio_at_once_and_keeps_what_was_heard(hello: bytes) -> None:
    long_reply = LONG_REPLY
    stt = ScriptedStt(["first question", "stop please"])
    llm = ScriptedLlm([long_reply, "Sure."])
    tts = ToneTts()
    _, events, media, _session = run(converse(settings(), Providers(stt=stt, llm=llm, tts=[tts]),
                                              talk_over_the_reply(hello, llm)))
    interrupted = next(e for e in events if isinstance(e, UserInterrupted))
    assert interrupted.reason == "voice"
    heard = interrupted.heard
    assert heard and heard != long_reply and long_reply.startswith(heard)
    # the model's next request carries the truncated message, not the whole reply
    second = llm.requests[1]
    assert ChatMessage(role="assistant", content=heard) in second
    assert all(m.content != long_reply for m in second)
    # no assistant audio went out between the barge-in and the next reply
    spans = media.voiced_spans()
    assert len(spans) == 2


def test_a_barge_in_withdraws_the_frame_prepared_ahead(hello: bytes) -> None:
    """Frames are asked for a tick before they are sent (the pacer's lead): the one prepared when the caller
    barges in is taken back, so nothing of the cut reply leaves after the barge-in."""
    stt = ScriptedStt(["first question", "stop please"])
    llm = ScriptedLlm([LONG_REPLY, "Sure."])
    _, _events, media, session = run(converse(settings(), Providers(stt=stt, llm=llm, tts=[ToneTts()]),
                                              talk_over_the_reply(hello, llm), ahead=True))
    assert len(media.withdrawn) == 1
    cut_at = media.withdrawn[0]
    first_reply = media.voiced_spans()[0]
    assert first_reply[1] < cut_at  # the cut reply's last frame out is the one before the withdrawn one
    assert not [o for o in media.out if o.voiced and first_reply[1] < o.at < media.voiced_spans()[1][0]]
    stops = session.metrics.barge_in_stop_seconds.collect()[0].samples
    assert next(s.value for s in stops if s.name.endswith("_count")) == 1


def test_non_interruptible_first_message_is_not_cut(hello: bytes) -> None:
    tts = ToneTts()
    first = "This message cannot be interrupted, please listen to all of it."

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        await wait_for(lambda: len(media.out) > 5)
        media.say(hello)
        await wait_for(lambda: session.history[-1].content == first)
        await asyncio.sleep(0.3)
        session.end("customer-ended-call")

    _, events, media, _session = run(converse(
        settings(first_message=first, first_message_interruptible=False),
        Providers(stt=ScriptedStt([""]), llm=ScriptedLlm(), tts=[tts]), caller))
    assert not any(isinstance(e, UserInterrupted) for e in events)
    expected_frames = int(0.05 * len(first) / 0.02)
    assert abs(len([o for o in media.out if o.voiced]) - expected_frames) <= 2


def test_end_call_phrase_hangs_up_after_the_reply_is_heard(hello: bytes) -> None:
    tts = ToneTts()

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        media.say(hello)

    reason, events, _media, session = run(converse(
        settings(end_call_phrases=("have a nice day",)),
        Providers(stt=ScriptedStt(["bye"]), llm=ScriptedLlm(["Thanks for calling, have a nice day!"]), tts=[tts]),
        caller))
    assert reason == "assistant-said-end-call-phrase"
    assert [e.reason for e in events if isinstance(e, EndCall)] == ["assistant-said-end-call-phrase"]
    assert session.history[-1].content == "Thanks for calling, have a nice day!"
    assert not session.speaker.speaking


def test_rules_end_call_says_end_call_message(hello: bytes) -> None:
    tts = ToneTts()
    llm = ScriptedLlm(["Goodbye."], end_call=True)

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        media.say(hello)

    reason, _, _, _ = run(converse(settings(end_call_message="Ending the call now."),
                                   Providers(stt=ScriptedStt(["bye"]), llm=llm, tts=[tts]), caller))
    assert reason == "assistant-ended-call"
    assert tts.texts[-2:] == ["Goodbye.", "Ending the call now."]


def test_idle_messages_then_silence_timeout() -> None:
    tts = ToneTts()

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        pass

    reason, _, _, session = run(converse(
        settings(idle=IdleSettings(messages=("Are you there?",), timeout_seconds=0.3, max_spoken_count=2),
                 silence_timeout_seconds=1.5, silence_timeout_message="No answer, goodbye."),
        Providers(stt=ScriptedStt(), llm=ScriptedLlm(), tts=[tts]), caller))
    assert reason == "silence-timed-out"
    assert tts.texts == ["Are you there?", "Are you there?", "No answer, goodbye."]
    assert [m.content for m in session.history if m.role == "assistant"] == tts.texts


def test_max_duration() -> None:
    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        pass

    reason, _, _, _ = run(converse(settings(max_duration_seconds=0.5), Providers(
        stt=ScriptedStt(), llm=ScriptedLlm(), tts=[ToneTts()]), caller))
    assert reason == "exceeded-max-duration"


def test_llm_failure_apologises_and_ends(hello: bytes) -> None:
    tts = ToneTts()
    llm = ScriptedLlm([ProviderError("openai", "server", "500 Internal Server Error", status=500)], name="openai")

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        media.say(hello)

    reason, events, media, _ = run(converse(settings(apology="Sorry, technical trouble.", llm_failed_replies_to_end=1),
                                            Providers(stt=ScriptedStt(["hi"]), llm=llm, tts=[tts]), caller))
    assert reason == "pipeline-error-openai-llm-failed"
    assert tts.texts == ["Sorry, technical trouble."]
    assert any(isinstance(e, ProviderFailure) and e.stage == "llm" for e in events)
    assert media.voiced_spans()  # the apology was heard


def test_tts_failure_falls_back_to_the_next_voice() -> None:
    broken = ToneTts("11labs", fail=ProviderError("11labs", "auth", "invalid api key", status=401))
    local = ToneTts("espeak")

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        await wait_for(lambda: session.history[-1].role == "assistant")
        session.end("customer-ended-call")

    _, events, media, _ = run(converse(settings(first_message="Welcome."), Providers(
        stt=ScriptedStt(), llm=ScriptedLlm(), tts=[broken, local]), caller))
    assert local.texts == ["Welcome."]
    assert any(isinstance(e, ProviderFailure) and e.provider == "11labs" for e in events)
    assert media.voiced_spans()


def test_stt_that_cannot_connect_ends_the_call_with_an_apology() -> None:
    stt = ScriptedStt(fail=ProviderError("deepgram", "auth", "invalid credentials", status=401))
    tts = ToneTts()

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        pass

    reason, _, _, _ = run(converse(settings(apology="Sorry."), Providers(stt=stt, llm=ScriptedLlm(), tts=[tts]),
                                   caller))
    assert reason == "pipeline-error-deepgram-transcriber-failed"
    assert tts.texts == ["Sorry."]


def test_keypad_digits_reach_the_model_as_user_input() -> None:
    llm = ScriptedLlm(["You pressed one two."])

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        now = session.loop.time()
        for d in "12#":
            session.on_dtmf(d, now)
        await wait_for(lambda: len(llm.requests) == 1)
        await wait_for(lambda: session.history[-1].role == "assistant")
        session.end("customer-ended-call")

    run(converse(settings(keypad=KeypadSettings(enabled=True, timeout_seconds=2.0, delimiters=("#",))),
                 Providers(stt=ScriptedStt(), llm=llm, tts=[ToneTts()]), caller))
    assert llm.requests[0][-1] == ChatMessage(role="user", content="12")


def test_flush_tag_sends_the_first_part_to_tts_at_once(hello: bytes) -> None:
    tts = ToneTts()

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        media.say(hello)
        await wait_for(lambda: len(tts.texts) == 2)
        await wait_for(lambda: not session.speaker.speaking)
        session.end("customer-ended-call")

    run(converse(settings(), Providers(stt=ScriptedStt(["q"]), llm=ScriptedLlm(
        ["Let me check. <flush /> Your order ships tomorrow morning by courier."]), tts=[tts]), caller))
    assert tts.texts == ["Let me check.", "Your order ships tomorrow morning by courier."]


def test_add_message_goes_into_history_without_speaking() -> None:
    tts = ToneTts()

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        session.add_message("system", "The caller is a premium customer.")
        await asyncio.sleep(0.2)
        session.end("customer-ended-call")

    _, _, media, session = run(converse(settings(), Providers(stt=ScriptedStt(), llm=ScriptedLlm(), tts=[tts]),
                                        caller))
    assert session.history[-1] == ChatMessage(role="system", content="The caller is a premium customer.")
    assert tts.texts == [] and media.out == []


def test_respond_asks_the_model_now_with_the_added_message() -> None:
    """Vapi add-message with triggerResponseEnabled: the assistant speaks without waiting for the caller."""
    tts = ToneTts()
    llm = ScriptedLlm(["Good news, your order has shipped."])

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        await session.running.wait()
        session.add_message("system", "Tell the caller their order has shipped.")
        assert session.respond()
        assert not session.respond()  # already answering: the running reply covers it
        await wait_for(lambda: "Good news, your order has shipped." in tts.texts)
        session.end("customer-ended-call")

    run(converse(settings(), Providers(stt=ScriptedStt(), llm=llm, tts=[tts]), caller))
    (request,) = llm.requests
    assert request[-1] == ChatMessage(role="system", content="Tell the caller their order has shipped.")


def _tool_call(hello: bytes, behaviour: ToolBehaviour, wait_text: str) -> tuple[list[Any], ScriptedLlm, ToneTts]:
    calls: list[tuple[str, str]] = []

    async def runner(name: str, arguments: str, call_id: str) -> ToolOutcome:
        calls.append((name, arguments))
        return ToolOutcome(content='{"slot": "10:00"}')

    llm = ScriptedLlm([
        ToolCallsDone(calls=(ToolCall(id="c1", name="book", arguments='{"day": "monday"}'),)),
        "You are booked at ten.",
    ])
    tts = ToneTts()

    async def caller(session: Any, media: Any, events: list[Any]) -> None:
        media.say(hello)
        await wait_for(lambda: wait_text in tts.texts)
        await wait_for(lambda: not session.speaker.speaking)
        session.end("customer-ended-call")

    run(converse(
        settings(tools=(ToolSpec(name="book"),), tool_behaviour={"book": behaviour}),
        Providers(stt=ScriptedStt(["book monday"]), llm=llm, tts=[tts], tools=runner), caller))
    return calls, llm, tts


def test_tool_call_round_trip_asks_the_model_again_with_the_result(hello: bytes) -> None:
    behaviour = ToolBehaviour(name="book", kind="function", request_start="One moment.")
    calls, llm, tts = _tool_call(hello, behaviour, "You are booked at ten.")
    assert calls == [("book", '{"day": "monday"}')]
    assert tts.texts == ["One moment.", "You are booked at ten."]
    second = llm.requests[1]
    assert second[-1] == ChatMessage(role="tool", tool_call_id="c1", content='{"slot": "10:00"}')
    assert second[-2].tool_calls[0].name == "book"


def test_a_request_complete_message_replaces_the_models_answer(hello: bytes) -> None:
    """Vapi: "If this message is provided, only this message will be spoken and the model will not be
    requested to come up with a response. It's an exclusive OR." """
    behaviour = ToolBehaviour(name="book", kind="function", request_start="One moment.", request_complete="Done.")
    calls, llm, tts = _tool_call(hello, behaviour, "Done.")
    assert calls == [("book", '{"day": "monday"}')]
    assert tts.texts == ["One moment.", "Done."]
    assert len(llm.requests) == 1


def test_stt_keeps_its_encoding_across_a_codec_change() -> None:
    """The STT stream was opened for mu-law (PCMU answered); after a re-INVITE to PCMA the wire bytes are
    A-law, so the frame must reach the STT re-encoded from PCM, not as A-law bytes labelled mu-law."""
    import audioop

    from gateway.observability.metrics import Metrics
    from gateway.pipeline.session import ConversationSession

    class MulawStt(ScriptedStt):
        def accepts(self, encoding: Any) -> bool:
            return True

    async def go() -> list[bytes]:
        session = ConversationSession(settings(), Providers(stt=MulawStt(), llm=ScriptedLlm(), tts=[ToneTts()]),
                                      on_event=lambda e: None, metrics=Metrics(), encoding="mulaw",
                                      stt_chunk_frames=1)
        pcm = bytes(range(256)) + bytes(64)
        session.on_tick(audioop.lin2ulaw(pcm, 2), "mulaw", pcm, 0.0)
        session.on_tick(audioop.lin2alaw(pcm, 2), "alaw", pcm, 0.02)
        session.on_tick(None, "mulaw", None, 0.04)
        return [session._stt_queue.get_nowait() for _ in range(3)]  # one frame per message

    pcm = bytes(range(256)) + bytes(64)
    same, changed, missing = asyncio.run(go())
    assert same == audioop.lin2ulaw(pcm, 2)
    assert changed == audioop.lin2ulaw(pcm, 2)
    assert missing == b"\xff" * 160
