"""Per-frame CPU cost of one conversational call's pipeline, in process, no sockets.

One ``ConversationSession`` runs on an event loop with the caller's audio fed as the call's media does it,
once per 20 ms frame: ``on_voice_frame`` (VAD, turn detection, barge-in), ``on_tick`` (the frame for STT),
``next_frame`` (the speaker / playout side), then the loop runs what became ready (the STT task sending
audio up). The STT is the real ``DeepgramStream`` on the SDK's ``AsyncV1SocketClient`` over a real
``websockets`` client protocol whose transport discards the bytes, with ``permessage-deflate`` negotiated
as the fake (uvicorn) and the SDK's client do: the framing, masking and (where a tree still does it)
compression of every message is measured, the network is not. The assistant speaks a long
non-interruptible message (a local tone "TTS") while the caller alternates 1 s of silence and 2 s of a
voiced tone, so VAD, turn and speaker all do their steady-state work. LLM and transcripts are not
exercised (they cost per turn, not per frame); the event loop's own cost per wake-up is included.

The figure is CPU time (``time.process_time``) per frame, median of repeats.

A/B mode: ``--baseline DIR`` (a directory holding an older ``gateway/`` package, e.g. from
``git archive REV gateway | tar -x -C DIR``) measures that tree and this one in alternating subprocesses
and prints the ratio of medians: on a shared, noisy machine only figures taken side by side compare.

Usage: .venv/bin/python benchmarks/bench_pipeline_core.py [--frames N] [--repeats R]
       .venv/bin/python benchmarks/bench_pipeline_core.py --baseline DIR [--rounds K]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# --source DIR (used by the A/B mode) puts another tree's ``gateway`` package first on the path.
SOURCE = Path(sys.argv[sys.argv.index("--source") + 1]) if "--source" in sys.argv else REPO
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(SOURCE))

from ab import alternate  # noqa: E402 - benchmarks/ab.py
from deepgram.listen.v1.socket_client import AsyncV1SocketClient  # noqa: E402
from machine import git_revision  # noqa: E402 - benchmarks/machine.py
from websockets.extensions.permessage_deflate import PerMessageDeflate  # noqa: E402
from websockets.legacy.client import WebSocketClientProtocol  # noqa: E402

from gateway.observability.metrics import Metrics  # noqa: E402
from gateway.pipeline.session import ConversationSession, Providers  # noqa: E402
from gateway.pipeline.settings import SessionSettings  # noqa: E402
from gateway.providers.base import ChatMessage, SttOptions, TtsOptions  # noqa: E402
from gateway.providers.deepgram import DeepgramStream  # noqa: E402

MEASURED = ("gateway/pipeline", "gateway/providers", "benchmarks/bench_pipeline_core.py")
FRAME = 320
STEP = "conversation pipeline per 20 ms frame"


def _tone(seconds: float, amplitude: int, freq: float = 440.0) -> bytes:
    n = int(8000 * seconds)
    return struct.pack(f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)))


class _Sink(asyncio.Transport):
    """A transport that accepts every write and sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _SinkDeepgram:
    """An STT provider whose stream is a real DeepgramStream over a websocket that goes nowhere."""

    name = "deepgram"

    def __init__(self) -> None:
        self.transport = _Sink()

    def accepts(self, encoding: str) -> bool:
        return encoding in ("linear16", "mulaw", "alaw")

    async def connect(self, options: SttOptions) -> DeepgramStream:
        protocol = WebSocketClientProtocol(ping_interval=None)
        protocol.connection_made(self.transport)
        protocol.extensions = [PerMessageDeflate(False, False, 15, 15)]
        protocol.connection_open()
        socket = AsyncV1SocketClient(websocket=protocol)
        return DeepgramStream(socket, contextlib.AsyncExitStack(), language="en", keepalive_interval=3600.0,
                              send_timeout=5.0, close_timeout=0.1, log=_NullLog())


class _NullLog:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class _LlmUnused:
    name = "openai"

    async def stream(self, messages: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if False:  # pragma: no cover - never asked in this rig
            yield None


class _LongTts:
    """A "voice" that speaks any text as a quiet-to-loud tone of 60 s, in 100 ms chunks."""

    name = "tone"

    def __init__(self) -> None:
        self._chunk = _tone(0.1, 3000)

    async def synthesize(self, text: str, options: TtsOptions) -> AsyncIterator[bytes]:
        for _ in range(600):
            yield self._chunk
            await asyncio.sleep(0)


def caller_frames(seconds: float) -> list[bytes]:
    """1 s of silence, 2 s of a voiced tone, repeated."""
    pattern = bytes(8000 * 2) + _tone(2.0, 6000, 300.0)
    audio = (pattern * math.ceil(seconds / 3.0))[: int(seconds * 8000) * 2]
    return [audio[i : i + FRAME] for i in range(0, len(audio) - FRAME + 1, FRAME)]


async def _measure(frames: int, repeats: int) -> list[float]:
    stt = _SinkDeepgram()
    settings = SessionSettings(first_message="Welcome. " * 50, first_message_interruptible=False,
                               messages=(ChatMessage(role="system", content="Be brief."),),
                               silence_timeout_seconds=3600.0, max_duration_seconds=36000.0)
    session = ConversationSession(settings, Providers(stt=stt, llm=_LlmUnused(), tts=[_LongTts()]),  # type: ignore[arg-type]
                                  on_event=lambda e: None, metrics=Metrics(), encoding="mulaw", log=_NullLog())
    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(session.run())
    while session._stt is None:
        await asyncio.sleep(0)
    for _ in range(50):  # the first message's audio starts arriving
        await asyncio.sleep(0)
    audio = caller_frames(frames * 0.02)
    import audioop

    encoded = [audioop.lin2ulaw(f, 2) for f in audio]
    runs: list[float] = []
    now = loop.time()
    for _ in range(repeats):
        start = time.process_time()
        for pcm, wire in zip(audio, encoded, strict=True):
            now += 0.02
            session.on_voice_frame(pcm, now)
            session.on_tick(wire, "mulaw", pcm, now)
            session.next_frame(now)
            await asyncio.sleep(0)  # the loop runs what the frame made ready (the STT task)
        runs.append((time.process_time() - start) / len(audio) * 1e6)
    session.stop()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await runner
    return runs


def bench(frames: int, repeats: int) -> tuple[float, float]:
    runs = asyncio.run(_measure(frames, repeats))
    return statistics.median(runs), min(runs)


def compare(baseline: Path, frames: int, repeats: int, rounds: int) -> None:
    """``baseline`` and this tree in alternating subprocesses; ratio of medians."""
    ab = alternate(Path(__file__), ["--one", "--frames", str(frames), "--repeats", str(repeats)], baseline, REPO,
                   rounds)
    base, cur = statistics.median(ab.baseline), statistics.median(ab.current)
    print(f"{STEP}: baseline {base:.1f} µs, current {cur:.1f} µs, current/baseline {ab.ratio:.3f} "
          f"({rounds} alternating rounds; baseline {baseline}, current {git_revision(MEASURED)} + working tree)")
    print(f"  baseline runs: {', '.join(f'{v:.1f}' for v in ab.baseline)}")
    print(f"  current runs:  {', '.join(f'{v:.1f}' for v in ab.current)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500, help="frames per repeat (1500 = 30 s of call)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="A/B: a directory holding an older gateway/ package")
    parser.add_argument("--rounds", type=int, default=5, help="A/B: alternating subprocess rounds")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(f"{bench(args.frames, args.repeats)[0]:.4f}")
        return
    if args.baseline is not None:
        compare(args.baseline, args.frames, args.repeats, args.rounds)
        return
    median, best = bench(args.frames, args.repeats)
    print(f"{STEP}: median {median:.1f} µs, best {best:.1f} µs ({median * 50 / 1e4:.3f} % of a core per call "
          f"at 50 frames/s; revision {git_revision(MEASURED)})")


if __name__ == "__main__":
    main()
