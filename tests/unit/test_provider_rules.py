"""The rules responder: keyword → reply, whole words, first rule wins, end-call flag, streaming."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.providers.base import ChatMessage, LlmDone, LlmEvent, LlmOptions, TextDelta
from gateway.providers.rules import Rule, RulesResponder

HOURS = "We are open from nine to five, Monday to Friday."
RULES = (
    Rule(keywords=("opening hours", "open"), reply=HOURS),
    Rule(keywords=("book an appointment", "appointment"), reply="Which day suits you?"),
    Rule(keywords=("1",), reply="Sales, please hold."),
    Rule(keywords=("goodbye", "bye"), reply="Goodbye!", end_call=True),
    Rule(keywords=("hours",), reply="never reached for 'opening hours': the first rule wins"),
)
FALLBACK = "Sorry, I did not catch that."


def events(responder: RulesResponder, messages: Sequence[ChatMessage]) -> list[LlmEvent]:
    async def go() -> list[LlmEvent]:
        return [e async for e in responder.stream(messages, options=LlmOptions())]

    return asyncio.run(go())


def answer(said: str) -> tuple[str, bool]:
    out = events(RulesResponder(RULES, FALLBACK), [ChatMessage(role="user", content=said)])
    text = "".join(e.text for e in out if isinstance(e, TextDelta))
    done = out[-1]
    assert isinstance(done, LlmDone)
    return text, done.end_call


@pytest.mark.parametrize(
    ("said", "reply"),
    [
        ("What are your OPENING HOURS?", HOURS),  # case and punctuation ignored
        ("opening,   hours!", HOURS),  # a multi-word keyword across punctuation and spacing
        ("are you open?", HOURS),
        ("the opener is broken", FALLBACK),  # "open" is a whole word, not a prefix of "opener"
        ("reopen the ticket", FALLBACK),  # nor a suffix
        ("I'd like to book an appointment", "Which day suits you?"),
        ("your hours please", "never reached for 'opening hours': the first rule wins"),
        ("opening hours and appointments", HOURS),  # the first rule that matches wins
        ("1", "Sales, please hold."),  # keypad input arrives as digits
        ("one", "Sales, please hold."),  # and a recognizer writes the word
        ("12", FALLBACK),  # the digit string 12 is not the keyword 1
        ("someone called", FALLBACK),
        ("", FALLBACK),
    ],
)
def test_matching_table(said: str, reply: str) -> None:
    assert answer(said) == (reply, False)


def test_a_rule_can_end_the_call() -> None:
    assert answer("OK, bye.") == ("Goodbye!", True)
    assert answer("goodbye") == ("Goodbye!", True)


def test_reply_streams_as_several_pieces_that_reassemble_exactly() -> None:
    out = events(RulesResponder(RULES, FALLBACK), [ChatMessage(role="user", content="open?")])
    deltas = [e for e in out if isinstance(e, TextDelta)]
    assert len(deltas) > 1
    assert "".join(d.text for d in deltas) == HOURS
    assert out[-1] == LlmDone(finish_reason="stop", end_call=False)
    assert sum(isinstance(e, LlmDone) for e in out) == 1


def test_only_the_last_user_message_counts() -> None:
    history = [
        ChatMessage(role="user", content="goodbye"),
        ChatMessage(role="assistant", content="Goodbye!"),
        ChatMessage(role="user", content="wait, are you open?"),
    ]
    text = "".join(e.text for e in events(RulesResponder(RULES, FALLBACK), history) if isinstance(e, TextDelta))
    assert text == HOURS


@pytest.mark.parametrize("greeting", ["Welcome to the clinic.", None])
def test_when_the_model_speaks_first_it_greets_or_falls_back(greeting: str | None) -> None:
    responder = RulesResponder(RULES, FALLBACK, greeting=greeting)
    for messages in ([], [ChatMessage(role="system", content="You are a receptionist.")]):
        out = events(responder, messages)
        assert "".join(e.text for e in out if isinstance(e, TextDelta)) == (greeting or FALLBACK)
        assert out[-1] == LlmDone(end_call=False)


def test_expected_phrases_are_all_keywords_in_rule_order() -> None:
    assert RulesResponder(RULES, FALLBACK).expected_phrases() == (
        "opening hours", "open", "book an appointment", "appointment", "1", "goodbye", "bye", "hours",
    )
