"""The rules responder (``model.provider: rules``): keyword → reply, an IVR-style model that needs no
network. The first rule one of whose keywords occurs in the caller's last message answers (whole words,
case and punctuation ignored, multi-word keywords allowed); no match → the fallback. A rule with
``end_call`` ends the call after its reply has been heard. Keypad input reaches it as the digits typed,
so ``keywords: ["1"]`` serves "press one"; a digit and its English word are the same word here ("one"
matches a keyword "1" and the reverse), because a recognizer writes the word where the keypad sends the
digit.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from gateway.providers.base import ChatMessage, LlmDone, LlmEvent, LlmOptions, TextDelta, ToolSpec

__all__ = ["Rule", "RulesResponder"]

_NON_WORD = re.compile(r"[^\w']+")
_NUMBER_WORDS = {
    w: str(i) for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))
}


def _normalise(text: str) -> str:
    """Lower case, punctuation to spaces, number words to digits, padded with a space at each end so a
    keyword found as `` k `` is found as whole words."""
    words = [w.strip("'") for w in _NON_WORD.sub(" ", text.lower().replace("\u2019", "'")).split()]
    return " " + " ".join(_NUMBER_WORDS.get(w, w) for w in words if w) + " "


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    keywords: tuple[str, ...]
    reply: str
    end_call: bool = False


class RulesResponder:
    """An :class:`~gateway.providers.base.LlmProvider` answering by keyword (see module doc)."""

    name = "rules"

    def __init__(self, rules: Sequence[Rule], fallback: str, *, greeting: str | None = None) -> None:
        self.rules = tuple(rules)
        self.fallback = fallback
        self.greeting = greeting
        self._patterns = [
            (rule, tuple(k for k in (_normalise(kw) for kw in rule.keywords) if k.strip())) for rule in self.rules
        ]

    def expected_phrases(self) -> tuple[str, ...]:
        """Every keyword, for a recognizer's grammar."""
        return tuple(kw for rule in self.rules for kw in rule.keywords)

    def answer(self, text: str) -> tuple[str, bool]:
        """The reply to ``text`` and whether the call ends after it."""
        said = _normalise(text)
        for rule, keywords in self._patterns:
            if any(k in said for k in keywords):
                return rule.reply, rule.end_call
        return self.fallback, False

    async def stream(self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = (),
                     options: LlmOptions) -> AsyncIterator[LlmEvent]:
        last = messages[-1] if messages else None
        if last is None or last.role != "user":
            reply, end_call = (self.greeting or self.fallback), False
        else:
            reply, end_call = self.answer(last.content or "")
        # A few deltas, like a model would stream them (the chunker downstream does not care).
        for piece in re.findall(r"\S+\s*", reply):
            yield TextDelta(text=piece)
        yield LlmDone(finish_reason="stop", end_call=end_call)
