"""Turn-taking on a fake clock: endpointing deadlines, custom rules, barge-in, backoff (Vapi semantics)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.pipeline.turn import (
    BargeIn,
    CustomEndpointingRule,
    EndOfTurn,
    RegexMatch,
    TurnDetector,
    TurnEvent,
    TurnOptions,
    UserStartedSpeaking,
)
from gateway.pipeline.vad import FRAME_SECONDS, SpeechEnded, SpeechStarted
from gateway.providers.base import Transcript

HANGOVER = 0.3  # the VAD reports SpeechEnded 0.3 s after the last voiced frame


class Caller:
    """Drives a TurnDetector the way the pipeline does, with explicit times."""

    def __init__(self, **options: Any) -> None:
        self.turn = TurnDetector(TurnOptions(**options))

    def starts(self, onset: float) -> None:
        """A speech run whose first voiced frame arrived at ``onset`` (reported one frame later)."""
        self.turn.on_vad(SpeechStarted(at=onset), onset + FRAME_SECONDS)
        self.turn.on_voice(onset + FRAME_SECONDS, 2 * FRAME_SECONDS)

    def voices(self, onset: float, frames: int) -> None:
        """Voiced frames 3..``frames`` of the run started at ``onset``."""
        for k in range(3, frames + 1):
            self.turn.on_voice(onset + (k - 1) * FRAME_SECONDS, k * FRAME_SECONDS)

    def ends(self, last_voiced: float) -> None:
        self.turn.on_vad(SpeechEnded(at=last_voiced), last_voiced + HANGOVER)

    def final(self, text: str, now: float, *, speech_final: bool = False) -> None:
        self.turn.on_transcript(Transcript(text=text, is_final=True, speech_final=speech_final), now)

    def interim(self, text: str, now: float) -> None:
        self.turn.on_transcript(Transcript(text=text, is_final=False), now)

    def says(self, text: str, onset: float, last_voiced: float, final_at: float) -> None:
        self.starts(onset)
        self.ends(last_voiced)
        self.final(text, final_at)

    def run_until(self, t: float) -> None:
        """Move the fake clock to ``t``, firing every timer on the way at its exact time."""
        while (timer := self.turn.get_timer()) is not None and timer <= t:
            self.turn.handle_timer(timer)
            assert self.turn.get_timer() != timer, "handle_timer left its own deadline pending"

    def events(self, *kinds: type) -> list[TurnEvent]:
        return [e for e in self.turn.events() if not kinds or isinstance(e, kinds)]

    def turns(self) -> list[EndOfTurn]:
        return [e for e in self.turn.events() if isinstance(e, EndOfTurn)]

    def barge_ins(self) -> list[BargeIn]:
        return [e for e in self.turn.events() if isinstance(e, BargeIn)]


# -- end of turn -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule", "delay"),
    [
        ("I'd like a table for tonight.", "punctuation", 0.1),
        ("Is it open on Sundays?", "punctuation", 0.1),
        ('He said "yes."', "punctuation", 0.1),
        ("I'd like a table for tonight", "no_punctuation", 1.5),
        ("well,", "no_punctuation", 1.5),
        ("my number is 555 1234", "number", 0.5),
        ("my number is 555 1234.", "number", 0.5),  # punctuated, but maybe only part of the number
        ("Room 12B", "no_punctuation", 1.5),
    ],
)
def test_endpointing_delay_follows_the_final_text(text: str, rule: str, delay: float) -> None:
    caller = Caller()
    caller.says(text, onset=1.0, last_voiced=2.0, final_at=2.4)
    deadline = 2.4 + delay
    assert caller.turn.get_timer() == deadline
    caller.turn.handle_timer(deadline - 0.001)
    assert caller.turns() == []
    caller.turn.handle_timer(deadline)
    assert caller.turns() == [
        EndOfTurn(text=text, at=deadline, rule=rule, speech_ended_at=2.0, transcript_final_at=2.4,
                  speak_not_before=deadline + 0.4)
    ]  # fmt: skip
    assert caller.turn.get_timer() is None


def test_configured_delays_are_used() -> None:
    caller = Caller(on_punctuation_seconds=0.3, on_no_punctuation_seconds=2.0, on_number_seconds=1.0)
    caller.says("It is 42", onset=1.0, last_voiced=2.0, final_at=2.4)
    assert caller.turn.get_timer() == 2.4 + 1.0
    caller.run_until(10)
    caller.says("Thanks.", onset=11.0, last_voiced=12.0, final_at=12.5)
    assert caller.turn.get_timer() == 12.5 + 0.3


def test_final_before_the_vad_end_waits_for_the_vad() -> None:
    """The final came 0.1 s after the last voiced frame; the VAD reports the end 0.3 s after it."""
    caller = Caller()
    caller.starts(1.0)
    caller.final("Two people.", 2.1)
    assert caller.turn.get_timer() is None  # still in speech as far as the VAD knows
    caller.ends(2.0)  # reported at 2.3, after 2.1 + 0.1: fires at once
    assert caller.turns() == [
        EndOfTurn(text="Two people.", at=2.3, rule="punctuation", speech_ended_at=2.0, transcript_final_at=2.1,
                  speak_not_before=2.3 + 0.4)
    ]  # fmt: skip


def test_a_final_from_the_middle_of_the_speech_does_not_end_the_turn_early() -> None:
    caller = Caller()
    caller.starts(1.0)
    caller.final("I would like to book a flight.", 1.5)  # the caller goes on speaking until 2.0
    caller.ends(2.0)
    assert caller.turn.get_timer() == 2.0 + 1.5  # no final covers the end yet: fallback
    caller.final("to Paris.", 2.45)
    assert caller.turn.get_timer() == 2.45 + 0.1
    caller.run_until(10)
    [turn] = caller.turns()
    assert (turn.text, turn.rule) == ("I would like to book a flight. to Paris.", "punctuation")
    assert turn.at == 2.45 + 0.1


def test_no_final_after_the_speech_ends_the_turn_after_the_no_punctuation_delay() -> None:
    caller = Caller()
    caller.starts(1.0)
    caller.final("Hello.", 1.5)
    caller.ends(2.0)
    caller.run_until(10)
    assert caller.turns() == [
        EndOfTurn(text="Hello.", at=3.5, rule="no_final", speech_ended_at=2.0, transcript_final_at=1.5,
                  speak_not_before=3.9)
    ]  # fmt: skip


def test_an_empty_final_after_the_speech_confirms_the_text() -> None:
    """What the recognizer answers to finalize() when everything was already final."""
    caller = Caller()
    caller.starts(1.0)
    caller.final("Hello.", 1.5)
    caller.ends(2.0)
    caller.final("", 2.4)
    assert caller.turn.get_timer() == 2.4 + 0.1
    caller.run_until(10)
    assert [(t.text, t.rule, t.transcript_final_at) for t in caller.turns()] == [("Hello.", "punctuation", 2.4)]


def test_final_arriving_after_the_vad_end_starts_the_delay_at_its_arrival() -> None:
    caller = Caller()
    caller.starts(1.0)
    caller.ends(2.0)
    assert caller.turn.get_timer() is None  # no transcript yet
    caller.interim("I need a", 2.5)
    assert caller.turn.get_timer() is None  # interims never end a turn
    caller.final("I need a taxi", 3.0)
    assert caller.turn.get_timer() == 3.0 + 1.5


def test_speech_resuming_before_the_deadline_cancels_it_and_the_text_accumulates() -> None:
    caller = Caller()
    caller.says("I need a table", onset=1.0, last_voiced=2.0, final_at=2.4)
    assert caller.turn.get_timer() == 3.9
    caller.starts(3.0)
    assert caller.turn.get_timer() is None
    caller.run_until(5.0)
    assert caller.turns() == []
    caller.ends(4.0)
    caller.final("for two.", 4.5)
    caller.run_until(10)
    assert [(t.text, t.at, t.speech_ended_at) for t in caller.turns()] == [
        ("I need a table for two.", 4.6, 4.0)
    ]


def test_speech_reported_after_the_deadline_but_begun_before_it_still_cancels() -> None:
    caller = Caller()
    caller.says("Yes.", onset=1.0, last_voiced=2.0, final_at=2.4)  # deadline 2.5
    caller.turn.on_vad(SpeechStarted(at=2.49), 2.51)  # onset before 2.5, reported after it
    assert caller.turns() == []
    other = Caller()
    other.says("Yes.", onset=1.0, last_voiced=2.0, final_at=2.4)
    other.turn.on_vad(SpeechStarted(at=2.5), 2.52)  # began at the deadline: the turn had ended
    assert [t.text for t in other.turns()] == ["Yes."]


def test_turn_text_is_only_the_finals_since_the_last_turn() -> None:
    caller = Caller()
    caller.says("Hi.", onset=1.0, last_voiced=1.5, final_at=1.9)
    caller.run_until(5)
    caller.says("Book a table.", onset=6.0, last_voiced=7.0, final_at=7.4)
    caller.run_until(10)
    assert [t.text for t in caller.turns()] == ["Hi.", "Book a table."]


@pytest.mark.parametrize("texts", [[""], ["   "], [], ["", ""]])
def test_empty_transcripts_never_make_a_turn(texts: list[str]) -> None:
    caller = Caller()
    caller.starts(1.0)
    caller.ends(2.0)
    for i, text in enumerate(texts):
        caller.final(text, 2.4 + i)
    caller.run_until(100)
    assert caller.turns() == []
    assert caller.turn.get_timer() is None


def test_transcript_without_any_vad_run_is_endpointed_on_the_text() -> None:
    caller = Caller()
    caller.final("Hello there.", 5.0)
    caller.run_until(10)
    assert [(t.text, t.at, t.speech_ended_at) for t in caller.turns()] == [("Hello there.", 5.1, None)]


def test_user_started_speaking_at_the_onset() -> None:
    caller = Caller()
    caller.starts(1.0)
    assert caller.events() == [UserStartedSpeaking(at=1.0)]


# -- custom endpointing rules -------------------------------------------------------------------------


def customer(pattern: str, timeout: float, **flags: bool) -> CustomEndpointingRule:
    return CustomEndpointingRule(target="customer", timeout_seconds=timeout,
                                 customer=RegexMatch(pattern=pattern, **flags))  # fmt: skip


def assistant(pattern: str, timeout: float, **flags: bool) -> CustomEndpointingRule:
    return CustomEndpointingRule(target="assistant", timeout_seconds=timeout,
                                 assistant=RegexMatch(pattern=pattern, **flags))  # fmt: skip


@pytest.mark.parametrize(
    ("rules", "assistant_said", "text", "rule", "delay"),
    [
        # a customer rule matches the caller's text, and overrides the number rule
        ((customer(r"\d{3}", 3.0),), "", "my card is 4111.", r"custom:\d{3}", 3.0),
        ((customer(r"\d{3}", 3.0),), "", "it is 42.", "number", 0.5),
        # an assistant rule matches the last assistant message
        ((assistant("account number", 2.0),), "What's your account number?", "It's 77.", "custom:account number", 2.0),
        ((assistant("account number", 2.0),), "Anything else?", "No.", "punctuation", 0.1),
        # yes/no question: answer quickly even without punctuation
        ((assistant(r"are you interested", 0.2, ignore_case=True),), "Are you interested in a loan?", "yes",
         "custom:are you interested", 0.2),
        # both: the two regexes must match
        ((CustomEndpointingRule(target="both", timeout_seconds=4.0, assistant=RegexMatch(pattern="phone"),
                                customer=RegexMatch(pattern=r"\d$")),),
         "What's your phone number?", "555 12", r"custom:phone && \d$", 4.0),
        ((CustomEndpointingRule(target="both", timeout_seconds=4.0, assistant=RegexMatch(pattern="phone"),
                                customer=RegexMatch(pattern=r"\d$")),),
         "What's your name?", "555 12", "number", 0.5),
        # the first matching rule wins
        ((customer("table", 1.0), customer("table for", 2.0)), "", "a table for two.", "custom:table", 1.0),
        # options: whole-word, ignore-case
        ((customer("cat", 2.5, whole_word=True),), "", "I love cats.", "punctuation", 0.1),
        ((customer("cat", 2.5, whole_word=True),), "", "my cat is lost.", "custom:cat", 2.5),
        ((customer("YES", 0.0),), "", "yes", "no_punctuation", 1.5),
        ((customer("YES", 0.0, ignore_case=True),), "", "yes", "custom:YES", 0.0),
    ],
)  # fmt: skip
def test_custom_rules(
    rules: tuple[CustomEndpointingRule, ...], assistant_said: str, text: str, rule: str, delay: float
) -> None:
    caller = Caller(custom_rules=rules)
    caller.turn.assistant_speaking(True, 0.0, last_assistant_text=assistant_said)
    caller.turn.assistant_speaking(False, 0.5)
    caller.says(text, onset=1.0, last_voiced=2.0, final_at=2.4)
    deadline = max(2.4 + delay, 2.0 + HANGOVER)
    if deadline > 2.4:
        assert caller.turn.get_timer() == deadline
    caller.run_until(20)
    assert [(t.rule, t.at) for t in caller.turns()] == [(rule, deadline)]


def test_bad_custom_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="customer regex"):
        CustomEndpointingRule(target="both", timeout_seconds=1.0, assistant=RegexMatch(pattern="x"))
    with pytest.raises(ValueError, match="bad endpointing regex"):
        TurnDetector(TurnOptions(custom_rules=(customer("(unclosed", 1.0),)))
    with pytest.raises(ValueError):
        TurnOptions(on_punctuation_seconds=-1)


# -- the recognizer's own endpointing ------------------------------------------------------------------


def test_stt_speech_final_ends_the_turn_at_once_when_enabled() -> None:
    caller = Caller(stt_endpointing=True)
    caller.starts(1.0)
    caller.final("I'd like a table", 2.1, speech_final=True)  # the VAD has not ended yet
    assert [(t.text, t.rule, t.at) for t in caller.turns()] == [("I'd like a table", "stt_speech_final", 2.1)]


def test_stt_speech_final_is_ignored_unless_enabled_and_custom_rules_still_win() -> None:
    plain = Caller()
    plain.says("I'd like a table", onset=1.0, last_voiced=2.0, final_at=2.4)
    plain.final("", 2.5, speech_final=True)
    assert plain.turns() == [] and plain.turn.get_timer() == 2.5 + 1.5
    ruled = Caller(stt_endpointing=True, custom_rules=(customer("table", 0.7),))
    ruled.starts(1.0)
    ruled.final("I'd like a table", 2.1, speech_final=True)
    assert ruled.turn.get_timer() == 2.1 + 0.7


# -- barge-in ------------------------------------------------------------------------------------------


def test_voice_interrupts_after_exactly_voice_seconds_of_voice() -> None:
    caller = Caller()
    caller.turn.assistant_speaking(True, 10.0)
    caller.starts(11.0)
    caller.voices(11.0, 9)  # 0.18 s of voice
    assert caller.events() == [UserStartedSpeaking(at=11.0)]
    caller.voices(11.0, 10)  # the 10th frame: 0.2 s
    assert caller.events() == [BargeIn(at=11.0 + 9 * FRAME_SECONDS, reason="voice", onset_at=11.0)]
    caller.voices(11.0, 50)
    assert caller.events() == []  # one barge-in per stretch of assistant speech


@pytest.mark.parametrize(("voice_seconds", "frames"), [(0.1, 5), (0.3, 15), (0.5, 25)])
def test_voice_seconds_is_configurable(voice_seconds: float, frames: int) -> None:
    caller = Caller(voice_seconds=voice_seconds)
    caller.turn.assistant_speaking(True, 10.0)
    caller.starts(11.0)
    caller.voices(11.0, frames - 1)
    assert caller.barge_ins() == []
    caller.voices(11.0, frames)
    assert [b.at for b in caller.barge_ins()] == [pytest.approx(11.0 + (frames - 1) * FRAME_SECONDS)]


def test_voice_does_not_interrupt_when_the_assistant_is_silent() -> None:
    caller = Caller()
    caller.starts(11.0)
    caller.voices(11.0, 50)
    assert caller.barge_ins() == []


def test_words_interrupt_once_num_words_are_heard() -> None:
    caller = Caller(num_words=3)
    caller.turn.assistant_speaking(True, 10.0)
    caller.starts(11.0)
    caller.voices(11.0, 50)  # voice alone never interrupts with num_words > 0
    caller.interim("I need", 11.6)
    assert caller.barge_ins() == []
    caller.interim("I need help", 11.8)
    assert caller.barge_ins() == [BargeIn(at=11.8, reason="words", onset_at=11.0)]


def test_finals_add_up_towards_num_words() -> None:
    caller = Caller(num_words=4)
    caller.turn.assistant_speaking(True, 10.0)
    caller.final("Hold on", 11.0)  # "hold" is an interruption phrase
    assert [b.reason for b in caller.barge_ins()] == ["interruption_phrase"]
    caller = Caller(num_words=4)
    caller.turn.assistant_speaking(True, 10.0)
    caller.final("The red", 11.0)
    caller.interim("one please", 11.5)
    assert [(b.reason, b.onset_at) for b in caller.barge_ins()] == [("words", 11.5)]  # no VAD run: at


@pytest.mark.parametrize(
    "said", ["yeah", "uh-huh", "Uh huh.", "mm-hmm", "Okay.", "yeah okay", "right, I see", "I'm listening", "sure sure"]
)
def test_acknowledgements_never_interrupt(said: str) -> None:
    caller = Caller(num_words=1)
    caller.turn.assistant_speaking(True, 10.0)
    caller.starts(11.0)
    caller.voices(11.0, 20)
    caller.interim(said, 11.5)
    caller.ends(11.4)
    caller.final(said, 11.8)
    assert caller.barge_ins() == []
    caller.turn.assistant_speaking(False, 15.0)
    caller.run_until(30)
    assert caller.turns() == []  # backchannel over the assistant: not a turn


def test_an_acknowledgement_heard_before_voice_seconds_holds_the_voice_barge_in() -> None:
    caller = Caller()
    caller.turn.assistant_speaking(True, 10.0)
    caller.starts(11.0)
    caller.interim("yeah", 11.05)
    caller.voices(11.0, 30)
    assert caller.barge_ins() == []
    caller.interim("yeah but", 11.7)
    assert caller.barge_ins() == [BargeIn(at=11.7, reason="interruption_phrase", onset_at=11.0)]


def test_acknowledgement_wait_lets_the_transcript_decide_short_runs() -> None:
    ack = Caller(acknowledgement_wait_seconds=1.0)
    ack.turn.assistant_speaking(True, 10.0)
    ack.starts(11.0)
    ack.voices(11.0, 20)  # 0.4 s: past voice_seconds, short of the wait
    assert ack.barge_ins() == []
    ack.interim("uh-huh", 11.5)
    ack.voices(11.0, 60)
    assert ack.barge_ins() == []

    words = Caller(acknowledgement_wait_seconds=1.0)
    words.turn.assistant_speaking(True, 10.0)
    words.starts(11.0)
    words.voices(11.0, 20)
    words.interim("can you", 11.45)
    assert words.barge_ins() == [BargeIn(at=11.45, reason="voice", onset_at=11.0)]

    silent_stt = Caller(acknowledgement_wait_seconds=1.0)
    silent_stt.turn.assistant_speaking(True, 10.0)
    silent_stt.starts(11.0)
    silent_stt.voices(11.0, 49)
    assert silent_stt.barge_ins() == []
    silent_stt.voices(11.0, 50)  # 1.0 s of voice and still no transcript
    assert [b.reason for b in silent_stt.barge_ins()] == ["voice"]


@pytest.mark.parametrize(
    "said", ["wait", "Stop!", "no", "I don't know", "actually", "yeah but", "hold on a second", "nevermind"]
)
def test_interruption_phrases_interrupt_at_once(said: str) -> None:
    caller = Caller(num_words=10)
    caller.turn.assistant_speaking(True, 10.0)
    caller.interim(said, 11.3)
    assert caller.barge_ins() == [BargeIn(at=11.3, reason="interruption_phrase", onset_at=11.3)]


def test_phrases_are_configurable() -> None:
    caller = Caller(num_words=1, acknowledgement_phrases=("si",), interruption_phrases=("para",))
    caller.turn.assistant_speaking(True, 10.0)
    caller.interim("yeah", 11.0)  # not an acknowledgement any more: one word interrupts
    assert [b.reason for b in caller.barge_ins()] == ["words"]
    caller = Caller(num_words=5, acknowledgement_phrases=("si",), interruption_phrases=("para",))
    caller.turn.assistant_speaking(True, 10.0)
    caller.interim("si si", 11.0)
    caller.interim("stop", 11.2)  # four words short, and no longer an interruption phrase
    assert caller.barge_ins() == []
    caller.interim("para", 11.4)
    assert [b.reason for b in caller.barge_ins()] == ["interruption_phrase"]


def test_non_interruptible_speech_is_kept_for_the_next_turn() -> None:
    """firstMessageInterruptionsEnabled=false: the caller talks over the greeting."""
    caller = Caller()
    caller.turn.assistant_speaking(True, 0.0, interruptible=False)
    caller.starts(1.0)
    caller.voices(1.0, 60)
    caller.interim("stop I need", 1.6)
    caller.ends(2.2)
    caller.final("Stop, I need a taxi.", 2.6)
    assert caller.barge_ins() == []
    assert caller.turn.get_timer() is None  # held while the assistant speaks
    caller.run_until(10)
    assert caller.turns() == []
    caller.turn.assistant_speaking(False, 4.0)
    assert caller.turns() == [
        EndOfTurn(text="Stop, I need a taxi.", at=4.0, rule="punctuation", speech_ended_at=2.2,
                  transcript_final_at=2.6, speak_not_before=4.4)
    ]  # fmt: skip


def test_words_short_of_num_words_become_the_next_turn() -> None:
    caller = Caller(num_words=3)
    caller.turn.assistant_speaking(True, 0.0)
    caller.says("Paris.", onset=1.0, last_voiced=1.5, final_at=1.9)
    caller.run_until(10)
    assert caller.barge_ins() == [] and caller.turns() == []
    caller.turn.assistant_speaking(False, 12.0)
    assert [(t.text, t.at) for t in caller.turns()] == [("Paris.", 12.0)]


def test_backoff_after_a_barge_in() -> None:
    caller = Caller()
    caller.turn.assistant_speaking(True, 10.0)
    caller.starts(11.0)
    caller.voices(11.0, 10)
    [barge_in] = caller.barge_ins()
    assert barge_in.at == pytest.approx(11.18)
    caller.turn.assistant_speaking(False, 11.2)  # the pipeline cancelled TTS and flushed playout
    assert not caller.turn.may_speak(barge_in.at + 0.999)
    assert caller.turn.may_speak(barge_in.at + 1.0)
    caller.ends(11.3)
    caller.final("Sorry, what?", 11.5)
    caller.run_until(20)
    [turn] = caller.turns()
    assert turn.at == pytest.approx(11.6)  # when the VAD reported the end
    assert turn.speak_not_before == barge_in.at + 1.0  # the backoff outlasts wait_seconds here
    # a new stretch of assistant speech may be interrupted again
    caller.turn.assistant_speaking(True, 13.0)
    caller.interim("wait", 13.5)
    assert [b.at for b in caller.barge_ins()] == [13.5]


@pytest.mark.parametrize(("backoff", "wait"), [(0.0, 0.4), (2.0, 0.4), (1.0, 0.0), (0.5, 1.5)])
def test_speak_not_before_is_wait_seconds_or_backoff(backoff: float, wait: float) -> None:
    caller = Caller(backoff_seconds=backoff, wait_seconds=wait)
    caller.turn.assistant_speaking(True, 0.0)
    caller.interim("stop", 1.0)
    caller.turn.assistant_speaking(False, 1.0)
    caller.final("stop.", 1.2)
    caller.run_until(10)
    [turn] = caller.turns()
    expected = max(1.3 + wait, 1.0 + backoff)
    assert turn.speak_not_before == pytest.approx(expected)
    assert not caller.turn.may_speak(expected - 0.001)
    assert caller.turn.may_speak(expected + 1e-9)


def test_with_num_words_zero_a_transcript_interrupts_too() -> None:
    """"When set to 0, voiceSeconds is used in addition to the transcriptions": a word the VAD missed."""
    caller = Caller()
    caller.turn.assistant_speaking(True, 10.0)
    caller.interim("excuse", 11.0)
    assert caller.barge_ins() == [BargeIn(at=11.0, reason="words", onset_at=11.0)]
