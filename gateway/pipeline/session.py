"""One call's conversation: caller audio in, assistant audio out, Vapi assistant semantics in between.

Stages and who drives them::

    RTP arrival ─► on_voice_frame: VAD ─► TurnDetector ─────────────┐  (sync, in the packet callback)
    20 ms tick  ─► on_tick: caller frame → bounded queue → STT task │  next_frame ◄─ Speaker ◄─ TTS task
                   STT task: transcripts ─► TurnDetector ───────────┤                       ▲
                   EndOfTurn ─► responder task: LLM stream ─► Chunker/formatter ─► TTS queue
                   BargeIn   ─► direct cancel of the responder + Speaker.flush (this tick is silent)

- The VAD runs on each packet as it arrives (not after the jitter buffer), so barge-in sees the caller's
  voice onset as early as the gateway can; STT gets the jitter buffer's ordered, concealed audio.
- Barge-in is a direct cancel of the LLM/TTS task and a flush of queued audio, never a message that
  travels down the pipeline; what the caller heard of the cut message goes into the history.
- Every task lives in the session's TaskGroup, owned by the call; every queue is bounded and every drop
  is counted; every provider wait has a deadline (inside the providers).
- Timers (turn endpointing, idle, silence, max duration, keypad) are loop timers on absolute deadlines.

Faults (each counted in ``voicegw_provider_errors{provider,kind}`` and logged as ``provider_error``):

- Caller audio goes to STT in chunks: ``stt_chunk_frames`` frames (default 5 = 100 ms, within what Deepgram
  recommends per message) while the VAD hears no speech, ``stt_speech_chunk_frames`` (default 2 = 40 ms)
  during a speech run and its 0.3 s hangover, where the recognizer's interims and its own endpointing on the
  trailing silence are waited for: one websocket message and one wake-up of the STT task per chunk instead
  of per 20 ms frame. The chunk being gathered is sent at once when the VAD reports the end of speech,
  before ``finalize()``, so endpointing waits for no buffered audio.

- STT: a dropped stream is reconnected with back-off (``STT_RECONNECTS`` attempts in a row); caller audio
  of the gap waits in the bounded STT queue (``STT_QUEUE_FRAMES``, the latest 2 s) and is sent to the new
  stream, older frames are dropped and counted (``voicegw_pipeline_frames_dropped{reason="stt_queue_full"}``).
  The utterance cut by the drop is lost unless its audio is still queued; the next one is heard.
- LLM: fallback models first (responder); a reply failed on every model gets ``llm_error_message`` and the
  conversation goes on; ``llm_failed_replies_to_end`` failed replies in a row end the call with Vapi's
  ``pipeline-error-<provider>-llm-failed`` after the apology.
- TTS: the next voice of the chain (the local voice last) speaks for the rest of the call.
- A bug (an exception that is not a ``ProviderError``) in any of the session's tasks ends this call only,
  with the LLM stage's ``pipeline-error-*`` reason: the call owns the session, nothing else shares it.
"""

from __future__ import annotations

import asyncio
import audioop
import random
import re
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.observability.logging import get_logger
from gateway.observability.metrics import Metrics
from gateway.pipeline.events import (
    ConversationUpdate,
    EndCall,
    ProviderFailure,
    SessionEvent,
    SpeechUpdate,
    TranscriptEvent,
    TurnTiming,
    UserInterrupted,
)
from gateway.pipeline.responder import Responder, TtsChain, unexpected
from gateway.pipeline.settings import SessionSettings
from gateway.pipeline.speaker import (
    Heard,
    Speaker,
    UtteranceFinished,
    UtteranceKind,
    UtteranceStarted,
    UtteranceVoiced,
)
from gateway.pipeline.turn import BargeIn, EndOfTurn, TurnDetector, UserStartedSpeaking
from gateway.pipeline.vad import SpeechEnded, SpeechStarted, Vad
from gateway.providers.base import (
    ChatMessage,
    LlmProvider,
    ProviderError,
    SttProvider,
    SttStream,
    TtsProvider,
)

__all__ = ["ConversationSession", "Providers", "ToolOutcome", "ToolRunner"]

T = TypeVar("T")

STT_QUEUE_FRAMES = 100  # 2 s of caller audio may wait for a (re)connecting STT; older frames are dropped
STT_CHUNK_FRAMES = 5  # 100 ms of caller audio per STT message while nobody speaks
STT_SPEECH_CHUNK_FRAMES = 2  # 40 ms per message during speech (interims, the recognizer's endpointing)
STT_RECONNECTS = 3
ULAW_SILENCE = b"\xff" * 160
ALAW_SILENCE = b"\xd5" * 160
PCM_SILENCE = bytes(320)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutcome:
    """A tool's result as the model sees it; ``end_call`` asks the session to end after speaking."""

    content: str
    end_call: bool = False
    failed: bool = False


class ToolRunner(Protocol):
    async def __call__(self, name: str, arguments: str, call_id: str) -> ToolOutcome: ...


@dataclass(slots=True, kw_only=True)
class Providers:
    stt: SttProvider
    llm: LlmProvider
    tts: Sequence[TtsProvider]  # the voice, its fallbackPlan voices, then the local voice
    tools: ToolRunner | None = None


def _ignore_event(event: SessionEvent) -> None:
    """The event sink of a released session."""


class ConversationSession:
    """See module doc. Built by the call when an assistant call is answered; ``run()`` lives in the call's
    TaskGroup. Sync entry points (``on_voice_frame``, ``on_tick``, ``next_frame``, ``on_dtmf``) are called
    from the media path on the loop thread."""

    def __init__(
        self,
        settings: SessionSettings,
        providers: Providers,
        *,
        on_event: Callable[[SessionEvent], None],
        metrics: Metrics,
        loop: asyncio.AbstractEventLoop | None = None,
        encoding: str = "linear16",
        log: Any = None,
        rng: random.Random | None = None,
        stt_chunk_frames: int = STT_CHUNK_FRAMES,
        stt_speech_chunk_frames: int = STT_SPEECH_CHUNK_FRAMES,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self._emit_event = on_event
        self.metrics = metrics
        self._loop = loop or asyncio.get_running_loop()
        self.log = log if log is not None else get_logger("conversation")
        self._rng = rng or random.Random()
        self.vad = Vad(settings.vad)
        self.turn = TurnDetector(settings.turn)
        self.speaker = Speaker()
        self.history: list[ChatMessage] = list(settings.messages)
        stt_encoding = encoding if providers.stt.accepts(encoding) else "linear16"  # type: ignore[arg-type]
        self._stt_encoding = stt_encoding
        if min(stt_chunk_frames, stt_speech_chunk_frames) < 1:
            raise ValueError("STT chunks are at least one frame")
        self._stt_chunk_frames = stt_chunk_frames
        self._stt_speech_chunk_frames = min(stt_speech_chunk_frames, stt_chunk_frames)
        self._stt_chunk = bytearray()  # frames of the chunk being gathered
        self._stt_chunk_count = 0
        # Chunks waiting for the STT stream; the bound is the same 2 s of audio whatever the chunk size.
        self._stt_queue: asyncio.Queue[bytes] = asyncio.Queue(max(1, STT_QUEUE_FRAMES // stt_chunk_frames))
        self._stt: SttStream | None = None
        self._stt_ready = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._responder_task: asyncio.Task[None] | None = None
        self._responder: Responder | None = None
        self._turn_handle: asyncio.TimerHandle | None = None
        self._turn_deadline: float | None = None
        self._done = asyncio.Event()
        self._ending: str | None = None  # endedReason once the end is decided
        self._end_after: int | None = None  # utterance whose end ends the call
        self._started_at = self._loop.time()
        self._last_activity = self._started_at  # caller speech or assistant speech ended
        self._idle_spoken = 0
        self._in_tool = 0
        self.running = asyncio.Event()  # set once run() has started (controls may act from then on)
        self._assistant_speaking = False
        self._user_speaking = False
        self._turns = 0
        self._pending_timing: dict[int, dict[str, Any]] = {}  # utterance id -> partial TurnTiming fields
        self._last_out_at: float | None = None  # send time of the last assistant frame handed out
        self._prev_out_at: float | None = None  # ... and of the one before it
        # Set by the call's media: takes back the assistant frame prepared ahead of its send time, if it has
        # not left (True when it did). A barge-in calls it, so the caller hears nothing prepared before.
        self.withdraw_audio: Callable[[], bool] | None = None
        self._barge_onset: float | None = None
        self._keypad: list[str] = []
        self._keypad_handle: asyncio.TimerHandle | None = None
        self._muted = False
        self.tts = TtsChain(providers.tts, settings.tts, on_failure=self._tts_failed, log=self.log)
        self._last_speech_ended: float | None = None
        self._last_final_at: float | None = None
        self._llm_failed_replies = 0  # replies in a row that failed on every model

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> str:
        """Converse until the end; returns the ended reason (the call hangs up on ``EndCall`` too)."""
        tg = asyncio.TaskGroup()
        try:
            async with tg:
                self._tasks = tg
                tg.create_task(self._stt_loop())
                tg.create_task(self._pump())
                tg.create_task(self._timers_loop())
                self._start_conversation()
                self.running.set()
                await self._done.wait()
                raise _Stop
        except* _Stop as stopped:
            # The group that TaskGroup.__aexit__ raised is held by its own frame through its traceback (on
            # Python 3.11), and that frame holds the group's tasks and this session: cleared, not collected.
            traceback.clear_frames(stopped.__traceback__)
        except* Exception as group:
            self._tasks = None  # the group is finished: nothing more can be spawned in it
            # A bug in one of this call's tasks (not a provider failure, those are handled where they
            # happen): this conversation ends, with a reason the end-of-call report can carry.
            self.internal_error("session", group.exceptions[0])
            traceback.clear_frames(group.__traceback__)
        finally:
            # The group keeps its errors (the _Stop above), whose traceback holds this frame, which holds the
            # group: a reference cycle that would wait for a full collection.
            del tg
            self._tasks = None
            for handle in (self._turn_handle, self._keypad_handle):
                if handle is not None:
                    handle.cancel()
            if self._stt is not None:
                try:
                    await asyncio.wait_for(self._stt.close(), 2.0)
                except (ProviderError, TimeoutError, OSError):
                    pass
        return self._ending or "customer-ended-call"

    def release(self) -> None:
        """The conversation is over and reported: drop the links back to the call (its tools, its event sink,
        its media) and the session's own cycle with its voice chain, so that reference counting frees an
        ended call at once instead of a full collection, which under load comes minutes apart (a soak at
        90 conversational calls held ~50 MB of ended calls). The history stays readable."""
        self._emit_event = _ignore_event
        self.withdraw_audio = None
        self.providers.tools = None
        self.tts.release()

    def stop(self, reason: str = "customer-ended-call") -> None:
        """The call ended from outside (caller hung up): stop everything now."""
        if self._ending is None:
            self._ending = reason
        self._done.set()

    def _start_conversation(self) -> None:
        s = self.settings
        if s.first_message_mode == "assistant-speaks-first":
            if s.first_message:
                self.say(s.first_message, kind="first-message", interruptible=s.first_message_interruptible)
        elif s.first_message_mode == "assistant-speaks-first-with-model-generated-message":
            self._start_responder(None, kind="first-message", interruptible=s.first_message_interruptible)

    # ------------------------------------------------------------------ media entry points (sync)

    def on_voice_frame(self, pcm: bytes, now: float) -> None:
        """A caller frame as it arrives (decoded PCM, 320 bytes): VAD and barge-in."""
        event = self.vad.process(pcm, now)
        turn = self.turn
        if event is not None:
            match event:
                case SpeechStarted():
                    self._user_speaking = True
                    self._emit(SpeechUpdate(role="user", status="started"))
                case SpeechEnded():
                    self._user_speaking = False
                    self._last_speech_ended = event.at
                    self._last_activity = now
                    self._emit(SpeechUpdate(role="user", status="stopped"))
                    stt = self._stt
                    if stt is not None and self._tasks is not None:
                        self._flush_stt_chunk()  # the speech's last audio goes up before the Finalize
                        self._tasks.create_task(self._finalize(stt))
            turn.on_vad(event, now)
        turn.on_voice(now, self.vad.voiced_seconds)
        self._after_turn_input(now)

    def on_tick(self, encoded: bytes | None, encoding: str, pcm: bytes | None, now: float) -> None:
        """The jitter buffer's frame for this tick, for STT: ``pcm`` (None: nothing to play) and, when it
        was received as is, the wire bytes ``encoded`` in ``encoding``. The STT stream keeps the encoding
        it was opened with: after a codec change (re-INVITE) the frame is re-encoded from ``pcm``."""
        stt = self._stt_encoding
        if stt == "linear16":
            data = pcm if pcm is not None else PCM_SILENCE
        elif pcm is None:
            data = ULAW_SILENCE if stt == "mulaw" else ALAW_SILENCE
        elif encoded is not None and encoding == stt:
            data = encoded
        else:
            data = audioop.lin2ulaw(pcm, 2) if stt == "mulaw" else audioop.lin2alaw(pcm, 2)
        self._stt_chunk += data
        self._stt_chunk_count += 1
        limit = self._stt_speech_chunk_frames if self.vad.speaking else self._stt_chunk_frames
        if self._stt_chunk_count >= limit:
            self._flush_stt_chunk()

    def _flush_stt_chunk(self) -> None:
        """The gathered frames, as one message, into the STT queue (the oldest chunk dropped when full)."""
        count = self._stt_chunk_count
        if not count:
            return
        data = bytes(self._stt_chunk)
        self._stt_chunk.clear()
        self._stt_chunk_count = 0
        q = self._stt_queue
        if q.full():
            dropped = q.get_nowait()
            frame = 160 if self._stt_encoding != "linear16" else 320
            self.metrics.pipeline_frames_dropped.labels("stt_queue_full").inc(max(1, len(dropped) // frame))
        q.put_nowait(data)

    def next_frame(self, now: float) -> bytes | None:
        """Assistant audio for the packet sent at ``now`` (None: send nothing)."""
        frame = None if self._muted else self.speaker.next_frame(now)
        if frame is not None:
            self._prev_out_at = self._last_out_at
            self._last_out_at = now
        self._speaker_events(now)
        return frame

    def on_dtmf(self, digit: str, now: float) -> None:
        """A digit from the caller (RFC 4733 or SIP INFO)."""
        keypad = self.settings.keypad
        self._last_activity = now
        if not keypad.enabled:
            self.log.info("dtmf_ignored", digit=digit, reason="keypadInputPlan disabled")
            return
        if digit in keypad.delimiters:
            self._flush_keypad()
            return
        self._keypad.append(digit)
        if self._keypad_handle is not None:
            self._keypad_handle.cancel()
        self._keypad_handle = self._loop.call_later(keypad.timeout_seconds, self._flush_keypad)

    def _flush_keypad(self) -> None:
        self._keypad_handle = None
        if not self._keypad:
            return
        digits = "".join(self._keypad)
        self._keypad.clear()
        self._emit(TranscriptEvent(role="user", text=digits, final=True))
        self._barge_in(self._loop.time(), reason="keypad", onset=None)
        self._start_responder(digits, kind="reply", interruptible=True)

    # ------------------------------------------------------------------ controls (API / tools)

    def say(self, text: str, *, kind: UtteranceKind = "say", interruptible: bool = True) -> int:
        """Speak ``text`` (after whatever is queued); returns the utterance id."""
        utt = self.speaker.start(kind, interruptible=interruptible)
        if self._tasks is not None:
            self._tasks.create_task(self._speak_text(utt, text))
        return utt

    def add_message(self, role: str, content: str) -> None:
        """Vapi ``add-message``: into the history without speaking."""
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"role must be system, user or assistant, not {role!r}")
        self.history.append(ChatMessage(role=role, content=content))  # type: ignore[arg-type]
        self._emit(ConversationUpdate(messages=tuple(self.history)))

    def respond(self) -> bool:
        """Ask the model for a reply now, on the history as it is (Vapi ``add-message`` with
        ``triggerResponseEnabled``). Not while the assistant is already answering or the caller is speaking:
        that reply, or the caller's turn, will see the history. True when a reply was started."""
        if (self._tasks is None or self._responder_task is not None or self._user_speaking
                or self._ending is not None):
            return False
        self._start_responder(None, kind="reply", interruptible=True)
        return True

    def mute(self, muted: bool) -> None:
        self._muted = muted

    def end(self, reason: str, message: str | None = None) -> None:
        """End the call, after saying ``message`` (not interruptible) when given."""
        if self._ending is not None:
            return
        self._ending = reason
        self._cancel_responder()
        if message:
            self.speaker.flush(self._loop.time())
            utt = self.speaker.start("end-call", interruptible=False)
            self._end_after = utt
            if self._tasks is not None:
                self._tasks.create_task(self._speak_text(utt, message))
                return
        self._finish()

    def end_after(self, utt: int, reason: str) -> None:
        """End the call once utterance ``utt`` has been heard (or cut)."""
        if self._ending is None:
            self._ending = reason
            self._end_after = utt

    @property
    def ending(self) -> str | None:
        return self._ending

    def _finish(self) -> None:
        assert self._ending is not None
        self._emit(EndCall(reason=self._ending))
        self._done.set()

    # ------------------------------------------------------------------ turn-taking

    def _after_turn_input(self, now: float) -> None:
        for event in self.turn.events():
            match event:
                case UserStartedSpeaking():
                    if self.settings.idle.reset_on_user_speech:
                        self._idle_spoken = 0
                case BargeIn():
                    self._barge_in(now, reason=event.reason, onset=event.onset_at)
                case EndOfTurn():
                    self._end_of_turn(event)
        timer = self.turn.get_timer()
        if timer == self._turn_deadline:
            return
        self._turn_deadline = timer
        if self._turn_handle is not None:
            self._turn_handle.cancel()
            self._turn_handle = None
        if timer is not None:
            self._turn_handle = self._loop.call_at(timer, self._on_turn_timer)

    def _on_turn_timer(self) -> None:
        self._turn_handle = None
        self._turn_deadline = None
        now = self._loop.time()
        self.turn.handle_timer(now)
        self._after_turn_input(now)

    def _barge_in(self, now: float, *, reason: str, onset: float | None) -> None:
        if not self.speaker.interruptible and self._responder_task is None:
            return
        heard = self.speaker.flush(now)
        self._cancel_responder()
        withdraw = self.withdraw_audio
        last_out = self._last_out_at
        if heard and withdraw is not None and last_out is not None and last_out > now and withdraw():
            self._last_out_at = self._prev_out_at  # the frame due after now never left
        if not heard and reason == "keypad":
            return
        self.metrics.barge_ins.labels(reason).inc()
        if onset is not None and self._last_out_at is not None and heard:
            stop = max(0.0, self._last_out_at - onset)
            self.metrics.barge_in_stop_seconds.observe(stop)
            self.log.info("barge_in", reason=reason, stop_ms=round(1000 * stop, 1))
        cut = next((h for h in heard if not h.complete), None)
        self._emit(UserInterrupted(reason=reason, heard=cut.text if cut else ""))
        self._speaker_events(now)

    def _end_of_turn(self, event: EndOfTurn) -> None:
        if self._ending is not None or not event.text.strip():
            return
        self._turns += 1
        self._emit(TranscriptEvent(role="user", text=event.text, final=True))
        # A new turn supersedes a reply still being generated or spoken.
        self.speaker.flush(event.at)
        self._cancel_responder()
        self._speaker_events(event.at)
        timing = {
            "turn": self._turns,
            "rule": event.rule,
            "speech_ended_at": event.speech_ended_at,
            "endpointed_at": event.at,
            "stt_final_at": event.transcript_final_at,
            "speak_not_before": event.speak_not_before,
        }
        self._start_responder(event.text, kind="reply", interruptible=True, timing=timing,
                              not_before=event.speak_not_before)

    # ------------------------------------------------------------------ responder

    def _start_responder(self, user_text: str | None, *, kind: UtteranceKind, interruptible: bool,
                         timing: dict[str, Any] | None = None, not_before: float = 0.0) -> None:
        if self._tasks is None or self._ending is not None:
            return
        if user_text is not None:
            self.history.append(ChatMessage(role="user", content=user_text))
            self._emit(ConversationUpdate(messages=tuple(self.history)))
        utt = self.speaker.start(kind, interruptible=interruptible, not_before=not_before)
        if timing is not None:
            self._pending_timing[utt] = timing
        responder = Responder(self, utt, timing)
        self._responder = responder
        self._responder_task = self._tasks.create_task(responder.run())

    def _cancel_responder(self) -> None:
        task = self._responder_task
        self._responder_task = None
        self._responder = None
        if task is not None and not task.done():
            task.cancel()

    def responder_done(self, responder: Responder) -> None:
        if self._responder is responder:
            self._responder = None
            self._responder_task = None

    def tool_started(self) -> None:
        self._in_tool += 1

    def tool_finished(self) -> None:
        self._in_tool -= 1
        self._last_activity = self._loop.time()

    async def _speak_text(self, utt: int, text: str) -> None:
        try:
            await self.tts.speak(self.speaker, utt, text, chunk=self.settings.chunk)
        finally:
            self.speaker.end(utt)

    # ------------------------------------------------------------------ what was heard

    def _speaker_events(self, now: float) -> None:
        for event in self.speaker.pop_events():
            match event:
                case UtteranceStarted():
                    if not self._assistant_speaking:
                        self._assistant_speaking = True
                        self._emit(SpeechUpdate(role="assistant", status="started"))
                    self.turn.assistant_speaking(True, now, interruptible=self.speaker.interruptible)
                case UtteranceVoiced():
                    timing = self._pending_timing.pop(event.utterance_id, None)
                    if timing is not None:
                        self._record_timing(timing, event.at)
                case UtteranceFinished():
                    self._heard(event.heard, event.at)
        if self._assistant_speaking and not self.speaker.speaking:
            self._assistant_speaking = False
            self._last_activity = now
            self._emit(SpeechUpdate(role="assistant", status="stopped"))
            last = next((m.content for m in reversed(self.history) if m.role == "assistant" and m.content), "")
            self.turn.assistant_speaking(False, now, last_assistant_text=last or "")
            self._after_turn_input(now)

    def _heard(self, heard: Heard, at: float) -> None:
        self._pending_timing.pop(heard.utterance_id, None)
        if heard.text:
            self.history.append(ChatMessage(role="assistant", content=heard.text))
            self._emit(TranscriptEvent(role="assistant", text=heard.text, final=True))
            self._emit(ConversationUpdate(messages=tuple(self.history)))
        if heard.utterance_id == self._end_after:
            self._end_after = None
            if self._ending is None:
                self._ending = "assistant-ended-call"
            self._finish()
            return
        if heard.complete and self._ending is None and heard.kind == "reply" and _says_end_phrase(
            heard.text, self.settings.end_call_phrases
        ):
            self._ending = "assistant-said-end-call-phrase"
            self._finish()

    def _record_timing(self, timing: dict[str, Any], voiced_at: float) -> None:
        t = TurnTiming(
            turn=timing["turn"],
            rule=timing["rule"],
            speech_ended_at=timing.get("speech_ended_at"),
            endpointed_at=timing["endpointed_at"],
            stt_final_at=timing.get("stt_final_at"),
            llm_request_at=timing.get("llm_request_at"),
            llm_first_token_at=timing.get("llm_first_token_at"),
            tts_request_at=timing.get("tts_request_at"),
            tts_first_byte_at=timing.get("tts_first_byte_at"),
            first_voiced_out_at=voiced_at,
            speak_not_before=timing.get("speak_not_before"),
        )
        h = self.metrics.turn_latency_seconds
        fields = t.log_fields()
        for stage, key in (("endpointing", "endpointing_ms"), ("stt_final", "stt_final_ms"),
                           ("llm_first_token", "llm_first_token_ms"), ("tts_first_byte", "tts_first_byte_ms"),
                           ("gateway_added", "gateway_added_ms"), ("voice_to_voice", "voice_to_voice_ms")):
            value = fields[key]
            if isinstance(value, float) and value >= 0:
                h.labels(stage).observe(value / 1000)
        self.log.info("turn_timing", **fields)
        self._emit(t)

    # ------------------------------------------------------------------ STT

    async def _stt_loop(self) -> None:
        provider = self.providers.stt
        options = self.settings.stt
        options = type(options)(
            encoding=self._stt_encoding,  # type: ignore[arg-type]
            sample_rate=options.sample_rate,
            language=options.language,
            model=options.model,
            keywords=options.keywords,
            extra=options.extra,
        )
        failures = 0
        while True:
            try:
                stream = await _stt_call(provider.name, provider.connect(options))
            except ProviderError as exc:
                failures += 1
                self.provider_failed("stt", exc)
                if failures > STT_RECONNECTS or not exc.retryable:
                    self.fail("stt", exc)
                    return
                await asyncio.sleep(min(2.0, 0.25 * 2**failures))
                continue
            self._stt = stream
            self._stt_ready.set()
            try:
                async for result in stream.results():
                    failures = 0
                    now = self._loop.time()
                    if result.text and not result.is_final:
                        # Finals reach the transcript once, as the turn's text (_end_of_turn).
                        self._emit(TranscriptEvent(role="user", text=result.text, final=False))
                    self.turn.on_transcript(result, now)
                    self._after_turn_input(now)
                return  # closed by us
            except Exception as exc:  # a dropped stream, or the provider's bug: reconnect either way
                failures += 1
                if not isinstance(exc, ProviderError):
                    exc = unexpected(provider.name, exc)
                self.provider_failed("stt", exc)
                if failures > STT_RECONNECTS:
                    self.fail("stt", exc)
                    return
                self.log.warning("stt_reconnecting", attempt=failures)
                await self._discard(stream)
            finally:
                self._stt = None
                self._stt_ready.clear()

    async def _discard(self, stream: SttStream) -> None:
        """Release a dropped stream's socket before the next one is opened."""
        try:
            await asyncio.wait_for(stream.close(), 2.0)
        except Exception as exc:  # it is broken already: nothing more to learn from it
            self.log.info("stt_close_failed", error=repr(exc))

    async def _pump(self) -> None:
        """Caller audio to the open STT stream; while (re)connecting, the bounded queue keeps the latest."""
        while True:
            await self._stt_ready.wait()
            data = await self._stt_queue.get()
            stream = self._stt
            if stream is None:
                continue
            try:
                await stream.send(data)
            except ProviderError as exc:
                # The results side sees the same failure and reconnects.
                self.log.info("stt_send_failed", error=str(exc))
                self._stt_ready.clear()

    async def _finalize(self, stream: SttStream) -> None:
        try:
            await stream.finalize()
        except ProviderError as exc:
            self.log.info("stt_finalize_failed", error=str(exc))

    # ------------------------------------------------------------------ timers

    async def _timers_loop(self) -> None:
        """Max duration, silence timeout and idle messages, checked on their deadlines."""
        s = self.settings
        while self._ending is None:
            now = self._loop.time()
            if now - self._started_at >= s.max_duration_seconds:
                self.log.info("max_duration_reached", seconds=s.max_duration_seconds)
                self.end("exceeded-max-duration", s.end_call_message)
                return
            quiet = not (self._user_speaking or self.speaker.speaking or self._responder_task or self._in_tool)
            idle_for = now - self._last_activity if quiet else 0.0
            if quiet and idle_for >= s.silence_timeout_seconds:
                self.log.info("silence_timeout", seconds=s.silence_timeout_seconds)
                self.end("silence-timed-out", s.silence_timeout_message)
                return
            idle = s.idle
            if (quiet and idle.messages and self._idle_spoken < idle.max_spoken_count
                    and idle_for >= idle.timeout_seconds):
                self._idle_spoken += 1
                self.say(self._rng.choice(idle.messages), kind="idle")
                self._last_activity = now
            deadlines = [self._started_at + s.max_duration_seconds]
            if quiet:
                deadlines.append(self._last_activity + s.silence_timeout_seconds)
                if idle.messages and self._idle_spoken < idle.max_spoken_count:
                    deadlines.append(self._last_activity + idle.timeout_seconds)
            wake = min(deadlines)
            # Activity changes the deadlines; re-check at least every 0.25 s.
            await asyncio.sleep(max(0.01, min(wake - now, 0.25)))

    # ------------------------------------------------------------------ failures

    def provider_failed(self, stage: str, exc: ProviderError) -> None:
        self.metrics.provider_errors.labels(exc.provider, exc.kind).inc()
        self.log.error("provider_error", stage=stage, provider=exc.provider, kind=exc.kind, error=exc.message)
        self._emit(ProviderFailure(provider=exc.provider, stage=stage, kind=exc.kind,  # type: ignore[arg-type]
                                   message=exc.message))

    def _tts_failed(self, exc: ProviderError) -> None:
        self.provider_failed("tts", exc)

    def internal_error(self, where: str, exc: BaseException) -> None:
        """Our own bug broke this conversation: log it and end this call (with the apology when the
        session can still speak)."""
        self.log.error("pipeline_internal_error", where=where, error=repr(exc), exc_info=exc)
        reason = ended_reason_for("llm", self.providers.llm.name)
        if self._tasks is not None:
            self.end(reason, self.settings.apology)
            return
        if self._ending is None:
            self._ending = reason
            self._emit(EndCall(reason=reason))
        self._done.set()

    def fail(self, stage: str, exc: ProviderError) -> None:
        """A stage cannot go on: apologise (the TTS chain ends with the local voice) and end the call."""
        self.end(ended_reason_for(stage, exc.provider), self.settings.apology)

    def llm_failed(self, exc: ProviderError) -> None:
        """A reply failed on every model: apologise and go on to the next turn, or end the call when
        ``llm_failed_replies_to_end`` replies in a row failed."""
        self.provider_failed("llm", exc)
        self._llm_failed_replies += 1
        if self._llm_failed_replies >= self.settings.llm_failed_replies_to_end:
            self.fail("llm", exc)
        elif self._ending is None:
            self.say(self.settings.llm_error_message, kind="error")

    def llm_succeeded(self) -> None:
        self._llm_failed_replies = 0

    # ------------------------------------------------------------------ helpers

    def _emit(self, event: SessionEvent) -> None:
        try:
            self._emit_event(event)
        except Exception:  # a listener's bug must not break the conversation
            self.log.exception("session_event_listener_failed", event=type(event).__name__)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def in_tool(self) -> bool:
        return self._in_tool > 0


class _Stop(Exception):
    pass


async def _stt_call(provider: str, call: Awaitable[T]) -> T:
    """``call``, with anything but a :class:`ProviderError` turned into the provider's ``protocol`` failure."""
    try:
        return await call
    except ProviderError:
        raise
    except Exception as exc:
        raise unexpected(provider, exc) from exc


def ended_reason_for(stage: str, provider: str) -> str:
    """Vapi's ``endedReason`` for a provider that failed for good."""
    match stage, provider:
        case "llm", "openai":
            return "pipeline-error-openai-llm-failed"
        case "llm", "custom-llm":
            return "pipeline-error-custom-llm-llm-failed"
        case "stt", "deepgram":
            return "pipeline-error-deepgram-transcriber-failed"
        case "tts", "11labs":
            return "pipeline-error-eleven-labs-voice-failed"
        case "stt", _:
            return "pipeline-error-custom-transcriber-failed"
        case "tts", _:
            return "pipeline-error-custom-voice-failed"
        case _:
            return "pipeline-error-custom-llm-llm-failed"


def _says_end_phrase(text: str, phrases: Sequence[str]) -> bool:
    """Vapi ``endCallPhrases``: the assistant said one of them (case and punctuation ignored)."""
    norm = " " + re.sub(r"[^\w\s']", " ", text.lower()) + " "
    norm = re.sub(r"\s+", " ", norm)
    for phrase in phrases:
        p = re.sub(r"\s+", " ", re.sub(r"[^\w\s']", " ", phrase.lower())).strip()
        if p and f" {p} " in norm:
            return True
    return False
