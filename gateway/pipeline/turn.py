"""Turn-taking: when the caller's turn ends (endpointing) and when the caller interrupts (barge-in).

Semantics follow Vapi's assistant plans (``startSpeakingPlan``, its ``transcriptionEndpointingPlan`` and
``customEndpointingRules``, and ``stopSpeakingPlan``); the pipeline maps an assistant's plans onto
:class:`TurnOptions`. The detector is sans-IO: VAD events, per-frame voicing, transcripts and the
assistant's speaking state go in with ``now``; :class:`TurnEvent` values come out of :meth:`events`;
``get_timer()``/``handle_timer(now)`` drive the endpointing deadline.

End of turn (transcription endpointing)
---------------------------------------
The turn's text is every non-empty final transcript since the last :class:`EndOfTurn`, joined with
spaces. Once the caller's speech has ended (VAD :class:`~gateway.pipeline.vad.SpeechEnded`) and a final
transcript covers it, the detector waits a delay chosen from that text, then emits ``EndOfTurn``:

- a matching custom rule wins, first match in order ("These rules have the highest precedence ... The
  rules are evaluated in order and the first one that matches will be used"): its ``timeout_seconds``,
  rule ``"custom:<regex>"``. A ``customer`` rule searches the turn's text, an ``assistant`` rule the last
  assistant message (``RegExp.test`` is a substring search: ``re.search`` here), a ``both`` rule needs
  both (rule ``"custom:<assistantRegex> && <customerRegex>"``);
- the text ends with a number, trailing punctuation ignored: ``on_number_seconds``, rule ``"number"``
  ("the transcriber will sometimes punctuate the transcription ending with a number, even though the
  customer hasn't uttered the full number");
- the text ends with ``. ? !`` (or the ellipsis and the CJK full stop, question and exclamation marks; closing quotes and brackets skipped; a comma is not an
  ending): ``on_punctuation_seconds``, rule ``"punctuation"`` ("the transcriber punctuates the
  transcription when it's more confident that customer has completed a thought");
- otherwise ``on_no_punctuation_seconds``, rule ``"no_punctuation"`` ("to catch the cases where the
  transcriber was not confident enough to punctuate the transcription, but the customer is done").

The delay counts from the arrival of the last final ("The minimum number of seconds to wait after
transcription ... before sending a request to the model"), and the turn never ends before the VAD has
said the speech ended: deadline = ``max(final_arrival + delay, time SpeechEnded was reported)``. So a
final arriving after the VAD ended starts the delay at its own arrival. A final counts as covering the
speech only if it arrived after the run's last voiced frame (``SpeechEnded.at``); finals arriving
earlier transcribe the middle of a longer utterance. An *empty* final that arrives after the speech
(what a recognizer answers to ``SttStream.finalize()`` when nothing is pending) confirms the text
gathered so far: the pipeline should call ``finalize()`` on ``SpeechEnded``. If no final arrives after
the speech ended, the turn ends anyway ``on_no_punctuation_seconds`` after the last voiced frame with
what it has (rule ``"no_final"``). If the caller starts speaking again before the deadline, the
deadline is cancelled and the text keeps accumulating. Without any final, or with empty text, there is
no turn. Speech the VAD never saw (no run at all) is endpointed on the transcript alone.

With ``stt_endpointing`` (Vapi uses "the transcriber's built-in endpointing capabilities if available"
when no smart endpointing plan is set), a final marked ``speech_final`` ends the turn at its arrival
(rule ``"stt_speech_final"``) unless a custom rule matches, which then sets the delay from that arrival.

``wait_seconds`` (``startSpeakingPlan.waitSeconds``: "how long assistant waits before speaking ... the
minimum it will wait but if there is latency is the pipeline, this minimum will be exceeded"): it does
not delay ``EndOfTurn`` (the request goes to the model at once); it is the minimum time between the
turn's end and the reply's first audio, carried as ``EndOfTurn.speak_not_before`` (also the end of any
barge-in backoff) and answered by :meth:`TurnDetector.may_speak`.

While the assistant is speaking, ``EndOfTurn`` is held: a deadline that passes during assistant speech
fires when the assistant stops (the caller's words spoken over a non-interruptible message, or too few
to interrupt, become the next turn).

Barge-in (stop speaking plan)
-----------------------------
Only while the assistant is speaking and interruptible (``firstMessageInterruptionsEnabled=false``
makes the pipeline pass ``interruptible=False`` for the first message); at most one ``BargeIn`` per
stretch of assistant speech. The caller's utterance is the finals since the assistant started speaking
plus the latest interim. Words are compared lower-case, apostrophes dropped ("don't" is "dont", "I'm"
is "im"), other non-letters as spaces ("uh-huh" is "uh huh"):

- an utterance containing an interruption phrase (whole words) interrupts at once, reason
  ``"interruption_phrase"`` ("phrases that will always interrupt the assistant immediately, regardless
  of numWords");
- an utterance made only of acknowledgement phrases never interrupts ("phrases that will never
  interrupt the assistant, even if numWords threshold is met"); its final is dropped rather than kept
  for the next turn when it arrives while the assistant is still speaking (the caller was
  backchanneling);
- ``num_words > 0``: an interim or final utterance of at least ``num_words`` words interrupts, reason
  ``"words"`` ("the number of words that the customer has to say before the assistant will stop
  talking");
- ``num_words == 0`` ("voiceSeconds is used in addition to the transcriptions"): a VAD speech run with
  ``voice_seconds`` of voiced audio interrupts, reason ``"voice"``, ``onset_at`` = the run's onset; a
  transcript with any word that is not an acknowledgement interrupts too (reason ``"words"``, or
  ``"voice"`` when the run already has ``voice_seconds``). Fast
  path by default: voice interrupts after ``voice_seconds`` unless the transcript already shows an
  acknowledgement. ``acknowledgement_wait_seconds > 0`` (not a Vapi setting; 1.0 suits) makes a voiced
  run shorter than that wait for a transcript before interrupting, so that "uh-huh" never interrupts.

After a barge-in the assistant may not speak for ``backoff_seconds`` ("the seconds to wait before the
assistant will start talking again after being interrupted").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, assert_never

from gateway.pipeline.vad import SpeechEnded, SpeechStarted, VadEvent
from gateway.providers.base import Transcript

__all__ = [
    "DEFAULT_ACKNOWLEDGEMENT_PHRASES",
    "DEFAULT_INTERRUPTION_PHRASES",
    "BargeIn",
    "BargeInReason",
    "CustomEndpointingRule",
    "EndOfTurn",
    "RegexMatch",
    "TurnDetector",
    "TurnEvent",
    "TurnOptions",
    "UserStartedSpeaking",
]

# stopSpeakingPlan.acknowledgementPhrases default
DEFAULT_ACKNOWLEDGEMENT_PHRASES: tuple[str, ...] = (
    "i understand", "i see", "i got it", "i hear you", "im listening", "im with you", "right", "okay",
    "ok", "sure", "alright", "got it", "understood", "yeah", "yes", "uh-huh", "mm-hmm", "gotcha", "mhmm",
    "ah", "yeah okay", "yeah sure",
)  # fmt: skip
# stopSpeakingPlan.interruptionPhrases default
DEFAULT_INTERRUPTION_PHRASES: tuple[str, ...] = (
    "stop", "shut", "up", "enough", "quiet", "silence", "but", "dont", "not", "no", "hold", "wait", "cut",
    "pause", "nope", "nah", "nevermind", "never", "bad", "actually",
)  # fmt: skip

BargeInReason = Literal["voice", "words", "interruption_phrase"]

_EPS = 1e-9
_WORD = re.compile(r"[^\W_]+")
_APOSTROPHES = str.maketrans("", "", "'\u2019`")
_SENTENCE_END = ".?!\u2026\u3002\uff1f\uff01"
_CLOSERS = "\"')]}\u201d\u2019\u00bb"


def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.lower().translate(_APOSTROPHES)))


# -- options ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RegexMatch:
    """A Vapi regex with its ``regexOptions`` (``ignore-case``, ``whole-word``, ``multi-line``)."""

    pattern: str
    ignore_case: bool = False
    whole_word: bool = False
    multi_line: bool = False

    def compile(self) -> re.Pattern[str]:
        flags = (re.IGNORECASE if self.ignore_case else 0) | (re.MULTILINE if self.multi_line else 0)
        pattern = rf"\b(?:{self.pattern})\b" if self.whole_word else self.pattern
        try:
            return re.compile(pattern, flags)
        except re.error as exc:
            raise ValueError(f"bad endpointing regex {self.pattern!r}: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomEndpointingRule:
    """``startSpeakingPlan.customEndpointingRules[]``: ``target`` is the rule's ``type``; ``customer``
    and/or ``assistant`` hold the regex(es) the type needs (``both`` needs both)."""

    target: Literal["customer", "assistant", "both"]
    timeout_seconds: float
    customer: RegexMatch | None = None
    assistant: RegexMatch | None = None

    def __post_init__(self) -> None:
        if self.target in ("customer", "both") and self.customer is None:
            raise ValueError(f"a {self.target!r} endpointing rule needs a customer regex")
        if self.target in ("assistant", "both") and self.assistant is None:
            raise ValueError(f"a {self.target!r} endpointing rule needs an assistant regex")
        if not self.timeout_seconds >= 0:
            raise ValueError(f"timeout_seconds must be >= 0, not {self.timeout_seconds!r}")

    @property
    def name(self) -> str:
        """The ``EndOfTurn.rule`` this rule reports."""
        if self.target == "customer":
            assert self.customer is not None
            return f"custom:{self.customer.pattern}"
        if self.target == "assistant":
            assert self.assistant is not None
            return f"custom:{self.assistant.pattern}"
        assert self.customer is not None and self.assistant is not None
        return f"custom:{self.assistant.pattern} && {self.customer.pattern}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnOptions:
    """Endpointing and barge-in settings, in seconds (Vapi's names in the comments)."""

    wait_seconds: float = 0.4  # startSpeakingPlan.waitSeconds
    on_punctuation_seconds: float = 0.1  # transcriptionEndpointingPlan.onPunctuationSeconds
    on_no_punctuation_seconds: float = 1.5  # .onNoPunctuationSeconds
    on_number_seconds: float = 0.5  # .onNumberSeconds
    custom_rules: tuple[CustomEndpointingRule, ...] = ()  # startSpeakingPlan.customEndpointingRules
    stt_endpointing: bool = False  # use the recognizer's speech_final verdict
    num_words: int = 0  # stopSpeakingPlan.numWords
    voice_seconds: float = 0.2  # stopSpeakingPlan.voiceSeconds
    backoff_seconds: float = 1.0  # stopSpeakingPlan.backoffSeconds
    acknowledgement_phrases: tuple[str, ...] = DEFAULT_ACKNOWLEDGEMENT_PHRASES
    interruption_phrases: tuple[str, ...] = DEFAULT_INTERRUPTION_PHRASES
    acknowledgement_wait_seconds: float = 0.0  # ours: see the module docstring

    def __post_init__(self) -> None:
        for name in ("wait_seconds", "on_punctuation_seconds", "on_no_punctuation_seconds",
                     "on_number_seconds", "voice_seconds", "backoff_seconds", "acknowledgement_wait_seconds"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.num_words < 0:
            raise ValueError(f"num_words must be >= 0, not {self.num_words!r}")


# -- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UserStartedSpeaking:
    """The VAD heard the caller start a speech run at ``at`` (its onset)."""

    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BargeIn:
    """Stop the assistant now: cancel the LLM/TTS scope and flush queued audio. ``at``: when the
    decision was taken; ``onset_at``: when the interrupting speech began (``at`` if the VAD saw none)."""

    at: float
    reason: BargeInReason
    onset_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfTurn:
    """The caller's turn is over: send ``text`` to the model. ``at``: when ``rule`` fired (the origin of
    the latency the gateway adds); ``speech_ended_at``: the last voiced frame of the turn's speech (None
    if the VAD saw none); ``transcript_final_at``: arrival of the last final; ``speak_not_before``: the
    reply's audio may not start before this (``wait_seconds`` after ``at``, or the barge-in backoff)."""

    text: str
    at: float
    rule: str
    speech_ended_at: float | None
    transcript_final_at: float | None
    speak_not_before: float


TurnEvent = UserStartedSpeaking | BargeIn | EndOfTurn


# -- the detector ----------------------------------------------------------------------------------


class TurnDetector:
    """One call's turn-taking decisions (see the module docstring for the rules).

    Per caller frame: ``event = vad.process(pcm, now)``; ``on_vad(event, now)`` if there is one; then
    ``on_voice(now, vad.voiced_seconds)``. Every input may produce events: drain :meth:`events` and
    re-read :meth:`get_timer` after each."""

    def __init__(self, options: TurnOptions | None = None) -> None:
        self.options = options if options is not None else TurnOptions()
        self._rules = [
            (rule, rule.customer.compile() if rule.customer else None,
             rule.assistant.compile() if rule.assistant else None)
            for rule in self.options.custom_rules
        ]  # fmt: skip
        self._ack = tuple(p for p in map(_words, self.options.acknowledgement_phrases) if p)
        self._interrupt = tuple(p for p in map(_words, self.options.interruption_phrases) if p)
        self._events: list[TurnEvent] = []
        # caller speech, from the VAD
        self._in_speech = False
        self._onset_at: float | None = None  # the current (or last) run's onset
        self._voiced_seconds = 0.0
        self._speech_ended_at: float | None = None  # last voiced frame of a run ended in this turn
        self._speech_end_known_at: float | None = None
        # transcripts
        self._finals: list[str] = []
        self._last_final_at: float | None = None
        self._stt_endpoint = False  # the last final carried speech_final
        self._interim = ""
        # the assistant
        self._speaking = False
        self._interruptible = True
        self._barged_in = False
        self._span_started_at = 0.0
        self._span_finals: list[str] = []
        self._last_assistant_text = ""
        self._backoff_until = -math.inf
        self._speak_not_before = -math.inf
        # the endpointing deadline
        self._deadline: float | None = None
        self._rule = ""

    # -- inputs ------------------------------------------------------------------------------------

    def on_vad(self, event: VadEvent, now: float) -> None:
        """A VAD event, reported at ``now`` (call before :meth:`on_voice` for the same frame)."""
        match event:
            case SpeechStarted(at=onset):
                self._fire_due(onset, now)  # a deadline before the onset has fired; a later one is void
                self._in_speech = True
                self._onset_at = onset
                self._stt_endpoint = False
                self._events.append(UserStartedSpeaking(at=onset))
            case SpeechEnded(at=last_voiced):
                self._fire_due(now, now)
                self._in_speech = False
                self._voiced_seconds = 0.0
                self._speech_ended_at = last_voiced
                self._speech_end_known_at = now
            case _:
                assert_never(event)
        self._arm()
        self._fire_due(now, now)

    def on_voice(self, now: float, voiced_seconds: float) -> None:
        """Every frame: the VAD's ``voiced_seconds`` for the current speech run after that frame."""
        self._fire_due(now, now)
        self._voiced_seconds = voiced_seconds
        if self._in_speech:
            self._check_barge_in(now)

    def on_transcript(self, transcript: Transcript, now: float) -> None:
        """An interim or final result from the recognizer, arrived at ``now``."""
        self._fire_due(now, now)
        text = transcript.text.strip()
        if not transcript.is_final:
            self._interim = text
            self._check_barge_in(now)
            return
        self._interim = ""
        self._last_final_at = now
        self._stt_endpoint = transcript.speech_final and self.options.stt_endpointing
        if text:
            backchannel = (self._speaking and self._interruptible and not self._barged_in
                           and self._only_acknowledgements(_words(" ".join([*self._span_finals, text]))))
            if not backchannel:
                self._finals.append(text)
                if self._speaking:
                    self._span_finals.append(text)
            self._check_barge_in(now)
        self._arm()
        self._fire_due(now, now)

    def assistant_speaking(
        self, speaking: bool, now: float, *, interruptible: bool = True, last_assistant_text: str = ""
    ) -> None:
        """The assistant's audio started (``True``) or stopped going out. ``last_assistant_text``, when
        given, is what assistant-side custom endpointing rules match against."""
        self._fire_due(now, now)
        if last_assistant_text:
            self._last_assistant_text = last_assistant_text
        if speaking and not self._speaking:
            self._barged_in = False
            self._span_started_at = now
            self._span_finals = []
            self._interim = ""
        self._speaking = speaking
        self._interruptible = interruptible
        if speaking and self._in_speech:
            self._check_barge_in(now)
        self._arm()  # an assistant-side custom rule may now match
        self._fire_due(now, now)

    # -- timers and outputs --------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next (None: nothing pending)."""
        return None if self._speaking else self._deadline

    def handle_timer(self, now: float) -> None:
        self._fire_due(now, now)

    def events(self) -> list[TurnEvent]:
        """The events produced since the last call, in order."""
        out, self._events = self._events, []
        return out

    def may_speak(self, now: float) -> bool:
        """Whether assistant audio may start now: ``wait_seconds`` after the last turn's end and
        ``backoff_seconds`` after the last barge-in have passed."""
        return now >= self._speak_not_before and now >= self._backoff_until

    @property
    def pending_text(self) -> str:
        """The finals gathered for the next turn so far."""
        return " ".join(self._finals)

    # -- endpointing -----------------------------------------------------------------------------------

    def _arm(self) -> None:
        """Recompute the end-of-turn deadline from the current state."""
        self._deadline = None
        if not self._finals or self._last_final_at is None:
            return
        text = " ".join(self._finals)
        final_at = self._last_final_at
        if self._stt_endpoint:
            custom = self._custom_rule(text)
            self._rule, delay = custom if custom else ("stt_speech_final", 0.0)
            self._deadline = final_at + delay
            return
        if self._in_speech:
            return
        known_at = self._speech_end_known_at if self._speech_ended_at is not None else None
        if self._speech_ended_at is not None and final_at < self._speech_ended_at:
            # the last final predates the end of the speech: its tail is not transcribed (yet)
            self._rule = "no_final"
            deadline = self._speech_ended_at + self.options.on_no_punctuation_seconds
        else:
            self._rule, delay = self._choose(text)
            deadline = final_at + delay
        self._deadline = deadline if known_at is None else max(deadline, known_at)

    def _custom_rule(self, text: str) -> tuple[str, float] | None:
        for rule, customer, assistant in self._rules:
            if customer is not None and not customer.search(text):
                continue
            if assistant is not None and not assistant.search(self._last_assistant_text):
                continue
            return rule.name, rule.timeout_seconds
        return None

    def _choose(self, text: str) -> tuple[str, float]:
        custom = self._custom_rule(text)
        if custom is not None:
            return custom
        ending = text.rstrip().rstrip(_CLOSERS)
        bare = ending.rstrip(_SENTENCE_END + ",;: ")
        if bare and bare[-1].isdigit():
            return "number", self.options.on_number_seconds
        if ending and ending[-1] in _SENTENCE_END:
            return "punctuation", self.options.on_punctuation_seconds
        return "no_punctuation", self.options.on_no_punctuation_seconds

    def _fire_due(self, due_by: float, now: float) -> None:
        """Emit the EndOfTurn whose deadline is at or before ``due_by`` (held while the assistant speaks)."""
        if self._deadline is None or self._speaking or self._deadline > due_by:
            return
        speak_not_before = max(now + self.options.wait_seconds, self._backoff_until)
        self._events.append(EndOfTurn(
            text=" ".join(self._finals), at=now, rule=self._rule, speech_ended_at=self._speech_ended_at,
            transcript_final_at=self._last_final_at, speak_not_before=speak_not_before,
        ))  # fmt: skip
        self._speak_not_before = speak_not_before
        self._finals = []
        self._last_final_at = None
        self._speech_ended_at = None
        self._speech_end_known_at = None
        self._stt_endpoint = False
        self._deadline = None

    # -- barge-in ----------------------------------------------------------------------------------------

    def _check_barge_in(self, now: float) -> None:
        if not (self._speaking and self._interruptible) or self._barged_in:
            return
        words = _words(" ".join([*self._span_finals, self._interim]))
        if self._contains_interruption(words):
            self._barge_in(now, "interruption_phrase")
            return
        acknowledgement = self._only_acknowledgements(words)
        num_words = self.options.num_words
        if num_words > 0:
            if len(words) >= num_words and not acknowledgement:
                self._barge_in(now, "words")
            return
        if words and not acknowledgement:
            self._barge_in(now, "voice" if self._voice_reached() else "words")
            return
        if acknowledgement or not self._voice_reached():
            return
        wait = self.options.acknowledgement_wait_seconds
        if self._ack and wait > 0 and self._voiced_seconds < wait - _EPS:
            return  # wait for the transcript to tell an acknowledgement from an interruption
        self._barge_in(now, "voice")

    def _voice_reached(self) -> bool:
        return self._in_speech and self._voiced_seconds >= self.options.voice_seconds - _EPS

    def _barge_in(self, now: float, reason: BargeInReason) -> None:
        onset = self._onset_at
        if onset is None or not (self._in_speech or onset >= self._span_started_at):
            onset = now
        self._events.append(BargeIn(at=now, reason=reason, onset_at=onset))
        self._barged_in = True
        self._backoff_until = now + self.options.backoff_seconds

    def _contains_interruption(self, words: tuple[str, ...]) -> bool:
        for phrase in self._interrupt:
            size = len(phrase)
            if any(words[i : i + size] == phrase for i in range(len(words) - size + 1)):
                return True
        return False

    def _only_acknowledgements(self, words: tuple[str, ...]) -> bool:
        """Whether ``words`` is a sequence of acknowledgement phrases (and not empty)."""
        if not words or not self._ack:
            return False
        reachable = [True] + [False] * len(words)
        for i in range(len(words)):
            if reachable[i]:
                for phrase in self._ack:
                    if words[i : i + len(phrase)] == phrase:
                        reachable[i + len(phrase)] = True
        return reachable[-1]
