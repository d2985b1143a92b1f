"""Drive a ConversationSession the way a call's media does, on the real event loop: a caller "script" of
20 ms frames goes in at packet times, the assistant's frames come out and are recorded with their times.

Providers here are small scripted implementations of the provider Protocols (an STT that answers the
next scripted text when asked to finalize, a TTS making a tone whose length follows the text, an LLM
replying from a list), for tests of the session's own logic; the vendor protocols are tested against
the fake vendor servers in tests/fakes.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import struct
import subprocess
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from gateway.observability.metrics import Metrics
from gateway.pipeline.events import SessionEvent
from gateway.pipeline.session import ConversationSession, Providers
from gateway.pipeline.settings import SessionSettings
from gateway.providers.base import (
    AudioEncoding,
    ChatMessage,
    LlmDone,
    LlmEvent,
    LlmOptions,
    ProviderError,
    SttOptions,
    TextDelta,
    ToolCallsDone,
    ToolSpec,
    Transcript,
    TtsOptions,
)

FRAME = 320
SILENCE = bytes(FRAME)


def speech_pcm(text: str, tmp: Path) -> bytes:
    """8 kHz 16-bit PCM of ``text`` spoken by espeak-ng."""
    assert shutil.which("espeak-ng"), "espeak-ng is installed by make install"
    path = tmp / f"speech-{abs(hash(text))}.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    out = soxr.resample(data, rate, 8000).astype(np.int16).tobytes()
    return out[: len(out) // FRAME * FRAME]


def tone(seconds: float, freq: float = 440.0, amplitude: int = 6000) -> bytes:
    n = int(8000 * seconds)
    return struct.pack(f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)))


# -- scripted providers ---------------------------------------------------------------------------


class ScriptedSttStream:
    def __init__(self, script: list[str], log: list[str]) -> None:
        self._script = script
        self._queue: asyncio.Queue[Transcript | None] = asyncio.Queue()
        self._log = log
        self.audio = 0

    async def send(self, audio: bytes) -> None:
        self.audio += len(audio)

    async def results(self) -> AsyncIterator[Transcript]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def finalize(self) -> None:
        text = self._script.pop(0) if self._script else ""
        self._log.append(text)
        self._queue.put_nowait(Transcript(text=text, is_final=True, speech_final=True))

    async def close(self) -> None:
        self._queue.put_nowait(None)


class ScriptedStt:
    name = "scripted-stt"

    def __init__(self, script: Sequence[str] = (), *, fail: ProviderError | None = None) -> None:
        self.script = list(script)
        self.finals: list[str] = []
        self.streams: list[ScriptedSttStream] = []
        self.fail = fail

    def accepts(self, encoding: AudioEncoding) -> bool:
        return encoding == "linear16"

    async def connect(self, options: SttOptions) -> ScriptedSttStream:
        if self.fail is not None:
            raise self.fail
        stream = ScriptedSttStream(self.script, self.finals)
        self.streams.append(stream)
        return stream


@dataclass
class ScriptedLlm:
    """Replies in order; a reply is text, or a callable of the messages, or a ToolCallsDone."""

    replies: list[str | Callable[[Sequence[ChatMessage]], str] | ToolCallsDone | ProviderError] = field(
        default_factory=list)
    name: str = "scripted-llm"
    requests: list[list[ChatMessage]] = field(default_factory=list)
    delay: float = 0.0
    end_call: bool = False

    async def stream(self, messages: Sequence[ChatMessage], *, tools: Sequence[ToolSpec] = (),
                     options: LlmOptions) -> AsyncIterator[LlmEvent]:
        self.requests.append(list(messages))
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = self.replies.pop(0) if self.replies else "Okay."
        if isinstance(reply, ProviderError):
            raise reply
        if isinstance(reply, ToolCallsDone):
            yield reply
            yield LlmDone(finish_reason="tool_calls")
            return
        text = reply(messages) if callable(reply) else reply
        for i in range(0, len(text), 6):
            yield TextDelta(text=text[i : i + 6])
        yield LlmDone(end_call=self.end_call)


class ToneTts:
    """A tone, 50 ms per character of text (at least 100 ms)."""

    def __init__(self, name: str = "tone-tts", *, fail: ProviderError | None = None) -> None:
        self.name = name
        self.texts: list[str] = []
        self.fail = fail

    async def synthesize(self, text: str, options: TtsOptions) -> AsyncIterator[bytes]:
        if self.fail is not None:
            raise self.fail
        self.texts.append(text)
        audio = tone(max(0.1, 0.05 * len(text)))
        for i in range(0, len(audio), 1600):
            yield audio[i : i + 1600]
            await asyncio.sleep(0)


# -- the media driver -------------------------------------------------------------------------------


@dataclass
class Out:
    at: float
    voiced: bool


class MediaDriver:
    """Feeds caller frames every 20 ms and records what the session sends back. With ``ahead`` each assistant
    frame is asked for one tick before it is sent, as the playout scheduler does with a pacer, and the
    session may withdraw it until then (``withdrawn``: the send times of the frames taken back)."""

    def __init__(self, session: ConversationSession, *, ahead: bool = False) -> None:
        self.session = session
        self.caller: list[bytes] = []  # frames still to send (silence after)
        self.out: list[Out] = []
        self.sent_audio: list[tuple[float, bytes]] = []
        self.ahead = ahead
        self._prepared: tuple[float, bytes] | None = None
        self.withdrawn: list[float] = []
        if ahead:
            session.withdraw_audio = self._withdraw

    def say(self, pcm: bytes) -> None:
        pcm = pcm + bytes(-len(pcm) % FRAME)
        self.caller.extend(pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME))

    def _withdraw(self) -> bool:
        if self._prepared is None:
            return False
        self.withdrawn.append(self._prepared[0])
        self._prepared = None
        return True

    def _send(self, at: float, frame: bytes) -> None:
        self.out.append(Out(at, max(abs(x) for x in struct.unpack(f"<{len(frame) // 2}h", frame)) > 300))
        self.sent_audio.append((at, frame))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * 0.02 - loop.time()))
            now = loop.time()
            if self._prepared is not None:  # the frame due now leaves
                self._send(*self._prepared)
                self._prepared = None
            pcm = self.caller.pop(0) if self.caller else SILENCE
            if self.ahead:  # the next tick's frame is prepared before this caller frame is heard
                due = start + (tick + 1) * 0.02
                frame = self.session.next_frame(due)
                if frame is not None:
                    self._prepared = (due, frame)
            self.session.on_voice_frame(pcm, now)
            self.session.on_tick(None, "linear16", pcm, now)
            if self.ahead:
                continue
            frame = self.session.next_frame(now)
            if frame is not None:
                self._send(now, frame)

    def voiced_spans(self, gap: float = 0.1) -> list[tuple[float, float]]:
        spans: list[tuple[float, float]] = []
        for o in self.out:
            if not o.voiced:
                continue
            if spans and o.at - spans[-1][1] <= gap:
                spans[-1] = (spans[-1][0], o.at)
            else:
                spans.append((o.at, o.at))
        return spans


async def converse(
    settings: SessionSettings,
    providers: Providers,
    script: Callable[[ConversationSession, MediaDriver, list[SessionEvent]], object],
    *,
    timeout: float = 20.0,
    ahead: bool = False,
) -> tuple[str, list[SessionEvent], MediaDriver, ConversationSession]:
    """Run a session with a media driver until it ends (or ``timeout``); ``script`` is an async function
    run alongside that plays the caller's part."""
    events: list[SessionEvent] = []
    session = ConversationSession(settings, providers, on_event=events.append, metrics=Metrics())
    driver = MediaDriver(session, ahead=ahead)
    async with asyncio.timeout(timeout):
        async with asyncio.TaskGroup() as tg:
            media = tg.create_task(driver.run())
            caller = tg.create_task(script(session, driver, events))  # type: ignore[arg-type]
            reason = await session.run()
            media.cancel()
            caller.cancel()
    return reason, events, driver, session
