"""CPU cost per 20 ms frame of the receive-side playout: jitter buffer and G.711 concealment.

Jitter buffer: one ``push`` and one ``pop`` per frame, on a clean stream and on a stream
with 0..60 ms of random delay (reordering, growing and shrinking). Concealer: a good frame
(the common case: history kept, audio passed through), a concealed frame, and the first
good frame after a loss (overlap-add). Each figure is CPU time (``time.process_time``) per
frame, the median of several repeats.

Usage: .venv/bin/python benchmarks/bench_jitter.py [--frames N] [--repeats R] [--no-write]
Writes benchmarks/results/jitter_plc.md unless --no-write.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import git_revision  # noqa: E402 - benchmarks/machine.py

from gateway.codecs.plc import Concealer  # noqa: E402
from gateway.rtp.jitter import JitterBuffer  # noqa: E402
from gateway.rtp.packet import RtpPacket  # noqa: E402

FRAME = 160


def _jitter_case(frames: int, spread: float) -> Callable[[], int]:
    rng = random.Random(1)
    payload = bytes(range(FRAME))
    arrivals = [
        (
            n * 0.02 + 0.03 + rng.uniform(0.0, spread),
            RtpPacket(payload_type=0, sequence_number=n & 0xFFFF, timestamp=n * FRAME, ssrc=1, payload=payload),
        )
        for n in range(frames)
    ]
    arrivals.sort(key=lambda arrival: arrival[0])

    def run() -> int:
        buffer = JitterBuffer(silence_byte=0xFF)
        i = 0
        for k in range(frames):
            now = k * 0.02
            while i < len(arrivals) and arrivals[i][0] <= now:
                buffer.push(arrivals[i][1], arrivals[i][0])
                i += 1
            buffer.pop(now)
        return frames

    return run


def _tone(start: int) -> bytes:
    return b"".join(
        int(8000 * math.sin(2 * math.pi * 220 * (start + i) / 8000)).to_bytes(2, "little", signed=True)
        for i in range(FRAME)
    )


def _plc_good(frames: int) -> Callable[[], int]:
    audio = [_tone(k * FRAME) for k in range(50)]

    def run() -> int:
        concealer = Concealer()
        for k in range(frames):
            concealer.good_frame(audio[k % 50])
        return frames

    return run


def _plc_loss(frames: int) -> Callable[[], int]:
    """One frame lost in three: conceal + recover + a good frame; cost per concealed frame."""
    audio = [_tone(k * FRAME) for k in range(50)]

    def run() -> int:
        concealer = Concealer()
        for _ in range(10):
            concealer.good_frame(audio[0])
        for k in range(frames):
            concealer.conceal()
            concealer.good_frame(audio[k % 50])
            concealer.good_frame(audio[(k + 1) % 50])
        return frames

    return run


def _measure(case: Callable[[], int], repeats: int) -> tuple[float, float]:
    per_frame = []
    for _ in range(repeats):
        start = time.process_time()
        count = case()
        per_frame.append((time.process_time() - start) / count * 1e6)
    return statistics.median(per_frame), min(per_frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    cases = [
        ("jitter buffer push+pop, clean stream", _jitter_case(args.frames, 0.0)),
        ("jitter buffer push+pop, 0..60 ms random delay", _jitter_case(args.frames, 0.06)),
        ("Concealer.good_frame (no loss)", _plc_good(args.frames)),
        ("loss 1 in 3: conceal + merge + good, per loss", _plc_loss(args.frames // 3)),
    ]
    rows = []
    for name, case in cases:
        median, best = _measure(case, args.repeats)
        rows.append((name, median, best))
        print(f"{name:50s} {median:8.2f} µs (best {best:.2f})")

    lines = [
        "# Receive playout: per-frame CPU cost",
        "",
        f"- command: `.venv/bin/python benchmarks/bench_jitter.py --frames {args.frames} --repeats {args.repeats}`",
        f"- git rev: {git_revision()}",
        f"- python: {platform.python_implementation()} {platform.python_version()}",
        "- clock: `time.process_time`, median of repeats; µs per 20 ms frame (shared machine: a floor)",
        "",
        "| operation | median µs | best µs |",
        "|---|---:|---:|",
        *(f"| {name} | {median:.2f} | {best:.2f} |" for name, median, best in rows),
        "",
        "A call receives 50 frames per second, so 20 µs per frame is 0.1 % of one core.",
    ]
    if not args.no_write:
        out = REPO / "benchmarks" / "results" / "jitter_plc.md"
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
