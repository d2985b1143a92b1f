"""The offline providers `make run` talks with: the rules responder, espeak-ng TTS, pocketsphinx STT."""

from __future__ import annotations

import asyncio
import audioop
from pathlib import Path

import pytest

from gateway.providers.base import (
    ChatMessage,
    LlmDone,
    LlmOptions,
    ProviderError,
    SttOptions,
    TextDelta,
    TtsOptions,
)
from gateway.providers.espeak import EspeakTts
from gateway.providers.pocketsphinx_stt import PocketsphinxStt, build_grammar
from gateway.providers.rules import Rule, RulesResponder
from tests.helpers.conversation import speech_pcm

RULES = [
    Rule(keywords=("opening hours", "open"), reply="We are open nine to five."),
    Rule(keywords=("1",), reply="You pressed one."),
    Rule(keywords=("goodbye", "bye"), reply="Goodbye!", end_call=True),
]


def reply(responder: RulesResponder, text: str) -> tuple[str, bool]:
    async def go() -> tuple[str, bool]:
        out, end = "", False
        async for event in responder.stream([ChatMessage(role="user", content=text)], options=LlmOptions()):
            if isinstance(event, TextDelta):
                out += event.text
            elif isinstance(event, LlmDone):
                end = event.end_call
        return out, end

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("said", "expected", "ends"),
    [
        ("What are your OPENING hours?", "We are open nine to five.", False),
        ("are you open today", "We are open nine to five.", False),
        ("the opener is broken", "Sorry.", False),  # "open" is a whole word, not a prefix
        ("1", "You pressed one.", False),
        ("ok, goodbye.", "Goodbye!", True),
        ("open? bye", "We are open nine to five.", False),  # the first rule that matches wins
        ("", "Sorry.", False),
    ],
)
def test_rules_responder_matches_whole_words(said: str, expected: str, ends: bool) -> None:
    assert reply(RulesResponder(RULES, "Sorry."), said) == (expected, ends)


def test_rules_greeting_when_the_model_speaks_first() -> None:
    responder = RulesResponder(RULES, "Sorry.", greeting="Welcome!")

    async def go() -> str:
        return "".join([e.text async for e in responder.stream(
            [ChatMessage(role="system", content="x")], options=LlmOptions()) if isinstance(e, TextDelta)])

    assert asyncio.run(go()) == "Welcome!"
    assert "opening hours" in responder.expected_phrases()


def test_espeak_speaks_8khz_pcm_in_chunks() -> None:
    async def go() -> list[bytes]:
        return [c async for c in EspeakTts().synthesize("Hello there, this is the local voice.", TtsOptions())]

    chunks = asyncio.run(go())
    audio = b"".join(chunks)
    assert len(chunks) > 1 and all(len(c) % 2 == 0 for c in chunks)
    seconds = len(audio) / 16000
    assert 1.0 < seconds < 5.0
    assert audioop.rms(audio, 2) > 500


def test_espeak_missing_is_a_clear_error() -> None:
    async def go() -> None:
        async for _ in EspeakTts(executable="no-such-espeak").synthesize("hi", TtsOptions()):
            pass

    with pytest.raises(ProviderError) as info:
        asyncio.run(go())
    assert info.value.kind == "unavailable" and "espeak" in info.value.message


def test_grammar_drops_unknown_words() -> None:
    grammar = build_grammar(("goodbye", "zzqxw blorf", "opening hours"), lambda w: w in {"goodbye", "opening", "hours"})
    assert grammar is not None
    assert "goodbye | opening hours" in grammar and "zzqxw" not in grammar
    assert build_grammar(("zzqxw",), lambda w: False) is None


@pytest.mark.parametrize("phrase", ["goodbye", "where are you located"])
def test_pocketsphinx_recognises_expected_phrases_on_phone_audio(phrase: str, tmp_path: Path) -> None:
    pcm = bytes(3200) + speech_pcm(phrase, tmp_path) + bytes(3200)

    async def go() -> str:
        stream = await PocketsphinxStt().connect(SttOptions(keywords=(
            "goodbye", "where are you located", "opening hours", "address", "operator")))
        for i in range(0, len(pcm) - 319, 320):
            await stream.send(pcm[i : i + 320])
        await stream.finalize()
        async for result in stream.results():
            await stream.close()
            return result.text
        return ""

    assert asyncio.run(go()) == phrase
