"""Per-packet CPU cost of the media cores (RTP parse/serialize, receiver stats, G.711).

Receive path per 20 ms G.711 packet: ``RtpPacket.parse`` + ``ReceiverStats.update`` +
G.711 decode of 160 bytes. Send path: G.711 encode of 320 bytes of PCM +
``RtpPacket.serialize``. Each figure is CPU time (``time.process_time``) per operation,
the median of several repeats of many iterations, so other load on the machine inflates
it less than wall-clock time would.

The echo path (``echo call: receive + prepare + send``) is one whole call's work per packet in the
gateway process, minus the event loop and the syscalls: ``RtpEndpoint.receive_datagram`` (parse,
latching, statistics, metrics, jitter buffer push) then ``CallMedia.prepare`` (jitter buffer pop, decode,
concealer, encode, serialize) and ``CallMedia.send`` into a transport that drops the datagram.

A/B mode: ``--baseline DIR`` (a copy of an older ``gateway/`` package's parent directory, e.g. from
``git archive REV gateway | tar -x -C DIR``) measures the echo path of that tree and of this one in
alternating subprocesses within one run, and prints the ratio of medians: on a shared, noisy machine only
figures taken side by side compare.

Usage: .venv/bin/python benchmarks/bench_media_core.py [--iterations N] [--repeats R] [--no-write]
       .venv/bin/python benchmarks/bench_media_core.py --baseline DIR [--rounds K]
       .venv/bin/python benchmarks/bench_media_core.py --native-ab [--rounds K]   (Python sources vs compiled)
Writes benchmarks/results/media_core.md unless --no-write (the A/B mode writes nothing).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# --source DIR (used by the A/B mode) puts another tree's ``gateway`` package first on the path.
SOURCE = Path(sys.argv[sys.argv.index("--source") + 1]) if "--source" in sys.argv else REPO
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(SOURCE))

from ab import alternate, alternate_env  # noqa: E402 - benchmarks/ab.py
from machine import cpu_model, git_revision  # noqa: E402 - benchmarks/machine.py

from gateway.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode  # noqa: E402
from gateway.codecs.resample import StreamResampler  # noqa: E402
from gateway.rtp.packet import RtpPacket  # noqa: E402
from gateway.rtp.stats import ReceiverStats  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "media_core.md"
MEASURED = (
    "gateway/rtp/packet.py",
    "gateway/rtp/stats.py",
    "gateway/codecs/g711.py",
    "gateway/codecs/resample.py",
    "benchmarks/bench_media_core.py",
    "gateway/call_media.py",
    "gateway/transport/rtp_endpoint.py",
    "gateway/rtp/jitter.py",
    "gateway/codecs/plc.py",
)
PEER = ("192.0.2.10", 40000)


def measure(step: Callable[[int], object], iterations: int, repeats: int) -> tuple[float, float]:
    """Median and minimum CPU µs per call of ``step(i)`` over ``repeats`` runs."""
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        for i in range(iterations):
            step(i)
        runs.append((time.process_time() - start) / iterations * 1e6)
    return statistics.median(runs), min(runs)


def tone_frame() -> bytes:
    """20 ms of a 440 Hz tone at 8 kHz, 16-bit LE PCM."""
    return struct.pack("<160h", *(int(8000 * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(160)))


def make_wire_packets(count: int) -> list[bytes]:
    payload = ulaw_encode(tone_frame())
    return [
        RtpPacket(
            payload_type=0, sequence_number=i & 0xFFFF, timestamp=i * 160, ssrc=0x1234, payload=payload
        ).serialize()
        for i in range(count)
    ]


class _NullTransport:
    """Takes datagrams and drops them (the syscall is not measured)."""

    def sendto(self, data: bytes, addr: Any = None) -> None:
        pass

    def close(self) -> None:
        pass


def echo_call() -> Callable[[int], None]:
    """One echo call's per-packet work: ``step(i)`` receives packet i, prepares and sends tick i."""
    import random

    from gateway.call_media import CallMedia
    from gateway.observability.metrics import Metrics
    from gateway.sdp import Direction, NegotiatedAudio

    media = CallMedia("127.0.0.1", 20000, echo=True, metrics=Metrics(), rng=random.Random(1),
                      wall_clock=lambda: 1_700_000_000.0, clock=lambda: 0.0)
    media.endpoint.attach(_NullTransport(), _NullTransport())  # type: ignore[arg-type]
    media.apply(NegotiatedAudio(
        payload_type=0, codec="PCMU", clock_rate=8000, ptime=20, dtmf_payload_type=101,
        remote_host=PEER[0], remote_port=PEER[1], remote_rtcp_port=PEER[1] + 1, direction=Direction.SENDRECV,
    ))
    payload = ulaw_encode(tone_frame())
    wire = [RtpPacket(payload_type=0, sequence_number=i & 0xFFFF, timestamp=(i * 160) & 0xFFFFFFFF,
                      ssrc=0x1234, payload=payload).serialize() for i in range(0x10000)]
    receive = media.endpoint.receive_datagram
    base = [0]

    def step(i: int) -> None:
        if i == 0:  # repeats go on in time and sequence space: one continuous call
            base[0] += 1_000_000
        n = base[0] + i
        now = n * 0.02
        receive(wire[n & 0xFFFF], PEER, now + 0.001)
        media.prepare(n, now + 0.015)
        media.send(n)

    return step


ECHO_PATH = "echo call: receive + prepare + send (per packet)"


def bench_echo_path(iterations: int, repeats: int) -> tuple[float, float]:
    return measure(echo_call(), iterations, repeats)


def compare(baseline: Path, iterations: int, repeats: int, rounds: int) -> None:
    """Echo path of ``baseline`` and of this tree, alternating subprocesses; ratio of medians."""
    ab = alternate(Path(__file__), ["--echo-only", "--iterations", str(iterations), "--repeats", str(repeats)],
                   baseline, REPO, rounds)
    base, cur = statistics.median(ab.baseline), statistics.median(ab.current)
    print(f"{ECHO_PATH}: baseline {base:.2f} µs, current {cur:.2f} µs, current/baseline {ab.ratio:.3f} "
          f"({rounds} alternating rounds; baseline {baseline}, current {git_revision(MEASURED)} + working tree)")


def compare_native(iterations: int, repeats: int, rounds: int) -> None:
    """Echo path of this tree from its Python sources and compiled (build_native.py), alternating subprocesses."""
    ab = alternate_env(Path(__file__), ["--echo-only", "--iterations", str(iterations), "--repeats", str(repeats)],
                       {"VOICEGW_NATIVE": "0"}, {"VOICEGW_NATIVE": "1"}, rounds)
    base, cur = statistics.median(ab.baseline), statistics.median(ab.current)
    print(f"{ECHO_PATH}: Python {base:.2f} µs, compiled {cur:.2f} µs, compiled/Python {ab.ratio:.3f} "
          f"({rounds} alternating rounds; {git_revision(MEASURED)})")


def bench(iterations: int, repeats: int) -> list[tuple[str, float, float]]:
    wire = make_wire_packets(iterations)
    pcm_frame = tone_frame()
    ulaw_frame = ulaw_encode(pcm_frame)
    alaw_frame = alaw_encode(pcm_frame)
    parsed = RtpPacket.parse(wire[0])
    results: list[tuple[str, float, float]] = []

    def add(name: str, step: Callable[[int], object], n: int = iterations) -> None:
        median, best = measure(step, n, repeats)
        results.append((name, median, best))

    holder: dict[str, ReceiverStats] = {}

    def receive(i: int) -> None:
        if i == 0:
            holder["stats"] = ReceiverStats(8000)
        packet = RtpPacket.parse(wire[i])
        holder["stats"].update(packet, i * 0.02)
        ulaw_decode(packet.payload)

    def send(i: int) -> None:
        RtpPacket(
            payload_type=0,
            sequence_number=i & 0xFFFF,
            timestamp=i * 160,
            ssrc=0x1234,
            payload=ulaw_encode(pcm_frame),
        ).serialize()

    median, best = bench_echo_path(iterations, repeats)
    results.append((ECHO_PATH, median, best))
    add("receive: parse + stats.update + PCMU decode (160 B)", receive)
    add("send: PCMU encode (320 B PCM) + RtpPacket.serialize", send)

    add("  RtpPacket.parse", lambda i: RtpPacket.parse(wire[i]))
    packets = [RtpPacket.parse(w) for w in wire]

    def update(i: int) -> None:
        if i == 0:  # a fresh stream each repeat, so no repeat sees only duplicates
            holder["stats"] = ReceiverStats(8000)
        holder["stats"].update(packets[i], i * 0.02)

    add("  ReceiverStats.update", update)
    add("  PCMU decode 160 B", lambda i: ulaw_decode(ulaw_frame))
    add("  PCMA decode 160 B", lambda i: alaw_decode(alaw_frame))
    add("  PCMU encode 320 B", lambda i: ulaw_encode(pcm_frame))
    add("  RtpPacket.serialize", lambda i: parsed.serialize())
    try:
        from aiortc.rtp import RtpPacket as AiortcRtpPacket
    except ImportError:
        pass
    else:
        add("  (reference) aiortc RtpPacket.parse", lambda i: AiortcRtpPacket.parse(wire[i]))

    chunks = max(200, iterations // 20)
    up = StreamResampler(8000, 16000)
    add("  resample 20 ms 8k->16k (soxr LQ)", lambda i: up.process(pcm_frame), chunks)
    down_frame = bytes(960)
    down = StreamResampler(24000, 8000)
    add("  resample 20 ms 24k->8k (soxr LQ)", lambda i: down.process(down_frame), chunks)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--baseline", type=Path, help="A/B: a directory holding an older gateway/ package")
    parser.add_argument("--rounds", type=int, default=5, help="A/B: alternating subprocess rounds")
    parser.add_argument("--native-ab", action="store_true",
                        help="A/B: this tree's media path as Python sources (VOICEGW_NATIVE=0) against compiled")
    parser.add_argument("--echo-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_only:
        print(f"{bench_echo_path(args.iterations, args.repeats)[0]:.4f}")
        return
    if args.baseline is not None:
        compare(args.baseline, args.iterations, args.repeats, args.rounds)
        return
    if args.native_ab:
        compare_native(args.iterations, args.repeats, args.rounds)
        return

    results = bench(args.iterations, args.repeats)
    width = max(len(name) for name, _, _ in results)
    table = [
        f"| {'operation':<{width}} | median µs | best µs |",
        f"|{'-' * (width + 2)}|----------:|--------:|",
    ]
    table += [f"| {name:<{width}} | {median:9.2f} | {best:7.2f} |" for name, median, best in results]
    print("\n".join(table))
    if args.no_write:
        return
    receive = results[1][1]
    send = results[2][1]
    per_call = receive * 50 + send * 50  # one call: 50 packets/s each way
    command = f".venv/bin/python benchmarks/bench_media_core.py --iterations {args.iterations} --repeats {args.repeats}"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "\n".join(
            [
                "# Media core: per-packet CPU cost",
                "",
                f"- command: `{command}`",
                f"- git rev: {git_revision(MEASURED)}",
                f"- python: {platform.python_implementation()} {platform.python_version()}",
                f"- CPU: {cpu_model()} ({platform.machine()}), {os.cpu_count()} logical CPUs, shared with other load",
                "- clock: `time.process_time` (CPU time of this process), median of repeats; µs per operation",
                "",
                *table,
                "",
                f"One G.711 call (50 packets/s in each direction) costs about {per_call / 1e4:.3f} % of one core",
                f"in these media cores ({per_call:.0f} µs of CPU per second of call), excluding sockets,",
                "the event loop, the jitter buffer and the pipeline.",
                "",
                "On this 2-CPU machine shared with other jobs, repeated runs of the same revision",
                "differ by up to ~1.6x (CPU time still grows under contention: caches, SMT);",
                "compare figures from one run, and prefer the best column across runs.",
                "",
            ]
        ),
        encoding="utf-8",
    )
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
