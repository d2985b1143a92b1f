"""Caller audio goes to the STT stream in 100 ms messages while nobody speaks and 40 ms messages during speech
(one websocket message and one STT-task wake-up per chunk instead of per 20 ms frame), nothing is lost or
reordered, and the end of speech sends the chunk being gathered before ``finalize()`` so that endpointing
never waits for buffered audio."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.observability.metrics import Metrics
from gateway.pipeline.events import SessionEvent, SpeechUpdate
from gateway.pipeline.session import ConversationSession, Providers
from gateway.pipeline.settings import SessionSettings
from gateway.pipeline.turn import TurnOptions
from gateway.providers.base import SttOptions
from tests.helpers.conversation import ScriptedLlm, ScriptedStt, ScriptedSttStream, ToneTts, tone

FRAME = 320
SILENCE = bytes(FRAME)


class RecordingStream(ScriptedSttStream):
    def __init__(self, script: list[str], log: list[str]) -> None:
        super().__init__(script, log)
        self.ops: list[tuple[str, bytes]] = []

    async def send(self, audio: bytes) -> None:
        self.ops.append(("audio", audio))
        await super().send(audio)

    async def finalize(self) -> None:
        self.ops.append(("finalize", b""))
        await super().finalize()


class RecordingStt(ScriptedStt):
    async def connect(self, options: SttOptions) -> ScriptedSttStream:
        stream = RecordingStream(self.script, self.finals)
        self.streams.append(stream)
        return stream


def _settings() -> SessionSettings:
    return SessionSettings(turn=TurnOptions(wait_seconds=0.0, on_no_punctuation_seconds=5.0),
                           silence_timeout_seconds=30.0)


async def _feed(session: ConversationSession, frames: list[bytes], sent: bytearray, start: float) -> None:
    for i, pcm in enumerate(frames):
        now = start + 0.02 * i
        session.on_voice_frame(pcm, now)
        session.on_tick(None, "linear16", pcm, now)
        sent += pcm
        for _ in range(3):
            await asyncio.sleep(0)  # the STT task runs as it would between packets


def _run_caller(frames: list[bytes]) -> tuple[RecordingStream, bytes, int | None, Metrics]:
    """Feed ``frames`` (caller audio, also the jitter buffer's output) to a session; returns the stream,
    the audio fed and how much of it had been fed when the VAD said the speech ended."""
    stt = RecordingStt(["hello"])
    metrics = Metrics()
    sent = bytearray()
    ended_at: list[int] = []

    def on_event(event: SessionEvent) -> None:
        if isinstance(event, SpeechUpdate) and event.role == "user" and event.status == "stopped":
            ended_at.append(len(sent))  # frames through on_tick so far (this one follows it)

    async def go() -> RecordingStream:
        session = ConversationSession(_settings(), Providers(stt=stt, llm=ScriptedLlm(), tts=[ToneTts()]),
                                      on_event=on_event, metrics=metrics)
        async with asyncio.timeout(10):
            runner = asyncio.create_task(session.run())
            while session._stt is None:
                await asyncio.sleep(0)
            await _feed(session, frames, sent, asyncio.get_running_loop().time())
            stream = stt.streams[0]
            assert isinstance(stream, RecordingStream)
            session.stop()
            await runner
        return stream

    stream = asyncio.run(go())
    return stream, bytes(sent), ended_at[0] if ended_at else None, metrics


def _frames(pcm: bytes) -> list[bytes]:
    pcm += bytes(-len(pcm) % FRAME)
    return [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]


def test_audio_goes_up_in_100_ms_messages_in_silence_and_40_ms_in_speech_in_order_and_complete() -> None:
    frames = _frames(bytes(FRAME * 3) + tone(0.6) + bytes(FRAME * 40))
    stream, sent, ended, _ = _run_caller(frames)
    audio = [data for op, data in stream.ops if op == "audio"]
    assert b"".join(audio) == sent[: len(b"".join(audio))]  # in order, nothing dropped or duplicated
    assert len(sent) - len(b"".join(audio)) < 5 * FRAME  # only the chunk still being gathered is held back
    assert ended is not None
    finalize = [i for i, (op, _) in enumerate(stream.ops) if op == "finalize"]
    assert len(finalize) == 1
    # Silence before and after the speech goes up in 100 ms messages, the speech (from the VAD's onset,
    # 2 frames into the tone, to its end 0.3 s after the tone) in 40 ms ones; one message of the frames
    # gathered when the phase changed may be shorter.
    sizes = [len(data) for op, data in stream.ops if op == "audio"]
    assert set(sizes) <= {FRAME, 2 * FRAME, 3 * FRAME, 4 * FRAME, 5 * FRAME}
    assert 30 <= 2 * sizes.count(2 * FRAME) <= 50  # the 0.6 s tone and its hangover, in frames
    assert sizes.count(5 * FRAME) >= (3 + 40 - 16) // 5 - 2


@pytest.mark.parametrize("lead_frames", [0, 1, 2, 3, 4])
def test_the_end_of_speech_sends_the_gathered_audio_before_finalize(lead_frames: int) -> None:
    """Whatever the phase of the 100 ms chunking, the STT has every frame up to the end of speech when it is
    asked to finalize (else its final would miss the utterance's tail, or wait for the next chunk)."""
    frames = _frames(bytes(FRAME * (3 + lead_frames)) + tone(0.5) + bytes(FRAME * 30))
    stream, sent, ended, _ = _run_caller(frames)
    assert ended is not None
    before = b"".join(data for op, data in stream.ops[: [op for op, _ in stream.ops].index("finalize")]
                      if op == "audio")
    assert before == sent[:ended]


def test_a_full_queue_drops_the_oldest_audio_and_counts_frames() -> None:
    """While no stream is open, the bounded queue keeps the latest 2 s and counts every dropped 20 ms frame."""
    metrics = Metrics()

    async def go() -> list[bytes]:
        session = ConversationSession(_settings(), Providers(stt=ScriptedStt(), llm=ScriptedLlm(),
                                                             tts=[ToneTts()]),
                                      on_event=lambda e: None, metrics=metrics)
        for i in range(150):  # 3 s of audio, no STT task running
            session.on_tick(None, "linear16", bytes([i]) * FRAME, 0.02 * i)
        out = []
        while not session._stt_queue.empty():
            out.append(session._stt_queue.get_nowait())
        return out

    chunks = asyncio.run(go())
    assert b"".join(chunks) == b"".join(bytes([i]) * FRAME for i in range(50, 150))
    assert _sample(metrics, "voicegw_pipeline_frames_dropped_total", reason="stt_queue_full") == 50


def _sample(metrics: Metrics, name: str, **labels: Any) -> float:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
