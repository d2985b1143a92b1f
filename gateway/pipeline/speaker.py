"""What the assistant says, queued for the RTP playout clock, and what the caller actually heard.

The speaker is read once per 20 ms tick by the call's playout (``next_frame``) and written by the
pipeline's TTS stage (``feed``). It is the one place that knows how much of each utterance went out,
so it decides what enters the conversation history: an utterance played to the end contributes its
whole text; one cut by a barge-in (``flush``) contributes only the words the caller heard (the played
share of the chunk being spoken, cut at a word boundary).

Sans-IO: no clock, ``now`` is the send time of the frame being prepared. Frames are 8 kHz 16-bit PCM,
320 bytes; a chunk whose audio is not complete yet and has less than a frame buffered makes the tick
silent (a TTS slower than real time), a finished chunk's tail is padded with silence.
"""

from __future__ import annotations

import audioop
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "FRAME_BYTES",
    "Heard",
    "Speaker",
    "SpeakerEvent",
    "UtteranceFinished",
    "UtteranceStarted",
]

FRAME_BYTES = 320  # 20 ms of 8 kHz 16-bit mono
VOICED_RMS = 200  # a frame above this RMS counts as voiced (first voiced packet out)

UtteranceKind = Literal[
    "first-message", "reply", "idle", "say", "end-call", "silence-timeout", "error", "tool-message"
]


@dataclass(frozen=True, slots=True, kw_only=True)
class UtteranceStarted:
    """The first frame of an utterance went out at ``at``; ``voiced_at`` is the first voiced one (or None)."""

    utterance_id: int
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class UtteranceVoiced:
    utterance_id: int
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Heard:
    """What the caller heard of one utterance."""

    utterance_id: int
    kind: UtteranceKind
    text: str  # the heard words (the whole text when complete)
    full_text: str
    complete: bool
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class UtteranceFinished:
    """An utterance ended at ``at``: played to the end or cut (``heard.complete`` tells which)."""

    at: float
    heard: Heard


SpeakerEvent = UtteranceStarted | UtteranceVoiced | UtteranceFinished


@dataclass(slots=True)
class _Chunk:
    text: str
    audio: bytearray = field(default_factory=bytearray)
    complete: bool = False
    played: int = 0  # bytes


@dataclass(slots=True)
class _Utterance:
    id: int
    kind: UtteranceKind
    interruptible: bool
    chunks: list[_Chunk] = field(default_factory=list)
    ended: bool = False  # no more chunks will come
    started: bool = False
    voiced: bool = False
    played_bytes: int = 0
    not_before: float = 0.0  # startSpeakingPlan.waitSeconds / barge-in backoff


class Speaker:
    """The outbound speech queue of one call (see module doc)."""

    def __init__(self) -> None:
        self._queue: deque[_Utterance] = deque()
        self._by_id: dict[int, _Utterance] = {}
        self._next_id = 1
        self._events: list[SpeakerEvent] = []

    # -- writer side (TTS) -----------------------------------------------------------------------

    def start(self, kind: UtteranceKind, *, interruptible: bool = True, not_before: float = 0.0) -> int:
        """Open a new utterance, played after the ones already queued and not before ``not_before``;
        returns its id."""
        utt = _Utterance(self._next_id, kind, interruptible, not_before=not_before)
        self._next_id += 1
        self._queue.append(utt)
        self._by_id[utt.id] = utt
        return utt.id

    def chunk(self, utterance_id: int, text: str) -> None:
        """A new chunk of text of the utterance; its audio follows with :meth:`feed`."""
        utt = self._by_id.get(utterance_id)
        if utt is None or utt.ended:
            return
        if utt.chunks and not utt.chunks[-1].complete:
            utt.chunks[-1].complete = True
        utt.chunks.append(_Chunk(text))

    def feed(self, utterance_id: int, pcm: bytes) -> None:
        """Audio of the utterance's current chunk (any length)."""
        utt = self._by_id.get(utterance_id)
        if utt is None or utt.ended:
            return
        if not utt.chunks:
            utt.chunks.append(_Chunk(""))
        utt.chunks[-1].audio += pcm

    def end(self, utterance_id: int) -> None:
        """No more chunks for this utterance: it finishes once its audio has been played."""
        utt = self._by_id.get(utterance_id)
        if utt is None:
            return
        for c in utt.chunks:
            c.complete = True
        utt.ended = True

    # -- reader side (playout tick) -------------------------------------------------------------

    def next_frame(self, now: float) -> bytes | None:
        """The next 20 ms frame to send at ``now``, or None (nothing to say or audio not there yet)."""
        while self._queue:
            utt = self._queue[0]
            if not utt.started and now < utt.not_before:
                return None
            frame = self._take(utt)
            if frame is not None:
                if not utt.started:
                    utt.started = True
                    self._events.append(UtteranceStarted(utterance_id=utt.id, at=now))
                if not utt.voiced and audioop.rms(frame, 2) >= VOICED_RMS:
                    utt.voiced = True
                    self._events.append(UtteranceVoiced(utterance_id=utt.id, at=now))
                return frame
            if utt.ended and all(c.complete and c.played >= len(c.audio) for c in utt.chunks):
                self._finish(utt, now, complete=True)
                continue
            return None  # waiting for audio
        return None

    def _take(self, utt: _Utterance) -> bytes | None:
        for c in utt.chunks:
            remaining = len(c.audio) - c.played
            if remaining <= 0:
                if c.complete:
                    continue
                return None
            if remaining >= FRAME_BYTES:
                frame = bytes(c.audio[c.played : c.played + FRAME_BYTES])
                c.played += FRAME_BYTES
            elif c.complete:
                frame = bytes(c.audio[c.played :]) + bytes(FRAME_BYTES - remaining)
                c.played = len(c.audio)
            else:
                return None
            utt.played_bytes += FRAME_BYTES
            return frame
        return None

    def _finish(self, utt: _Utterance, now: float, *, complete: bool) -> None:
        self._queue.remove(utt)
        del self._by_id[utt.id]
        full = _join(c.text for c in utt.chunks)
        if complete:
            heard = full
        else:
            parts: list[str] = []
            for c in utt.chunks:
                if c.played <= 0:
                    break
                if c.complete and c.played >= len(c.audio):
                    parts.append(c.text)
                    continue
                parts.append(_cut_words(c.text, c.played / len(c.audio) if c.audio else 0.0))
                break
            heard = _join(parts)
        self._events.append(
            UtteranceFinished(
                at=now,
                heard=Heard(
                    utterance_id=utt.id,
                    kind=utt.kind,
                    text=heard,
                    full_text=full,
                    complete=complete,
                    seconds=utt.played_bytes / (2 * 8000),
                ),
            )
        )

    # -- barge-in --------------------------------------------------------------------------------

    def flush(self, now: float, *, only_interruptible: bool = True) -> list[Heard]:
        """Drop queued audio (the next tick is silent); returns what was heard of each dropped utterance.
        Non-interruptible utterances survive unless ``only_interruptible`` is False."""
        dropped: list[Heard] = []
        for utt in list(self._queue):
            if only_interruptible and not utt.interruptible:
                continue
            self._finish(utt, now, complete=False)
            event = self._events[-1]
            assert isinstance(event, UtteranceFinished)
            dropped.append(event.heard)
        return dropped

    def cancel(self, utterance_id: int, now: float) -> None:
        """Drop one utterance (e.g. its TTS failed before anything was played)."""
        utt = self._by_id.get(utterance_id)
        if utt is not None:
            self._finish(utt, now, complete=False)

    # -- state ---------------------------------------------------------------------------------------

    def pop_events(self) -> list[SpeakerEvent]:
        events, self._events = self._events, []
        return events

    @property
    def speaking(self) -> bool:
        """Something is queued or being played."""
        return bool(self._queue)

    @property
    def interruptible(self) -> bool:
        """The utterance being played may be interrupted."""
        return bool(self._queue) and self._queue[0].interruptible

    def current(self) -> int | None:
        return self._queue[0].id if self._queue else None

    def pending(self, utterance_id: int) -> bool:
        return utterance_id in self._by_id


def _join(parts: Iterable[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


def _cut_words(text: str, fraction: float) -> str:
    """The words of ``text`` spoken in the first ``fraction`` of its audio (whole words only)."""
    words = text.split()
    if not words or fraction <= 0:
        return ""
    total = sum(len(w) + 1 for w in words)
    budget = fraction * total
    out: list[str] = []
    used = 0
    for w in words:
        used += len(w) + 1
        if used > budget + 0.5:
            break
        out.append(w)
    return " ".join(out)
