"""Soak: echo calls held at a steady concurrency (half the echo knee) for ``--minutes``, watching for leaks.

SIPp keeps ``--calls`` echo calls in flight, each ``--call-seconds`` long and replaced when it ends, so calls
start and end all the time. Every ``--interval`` seconds: the gateway's RSS and open fds (/proc) and its asyncio
task count (``voicegw_asyncio_tasks`` from /metrics), from the end of a warm-up of two call lengths (``--warmup``).
Reported: first-minute mean vs last-minute mean of each, and the growth. Goal (issue 7): RSS growth < 2 %, no fd or task growth.

``--conversational``: assistant calls instead of echo calls, bench_conversation.py's setup (Deepgram / OpenAI /
ElevenLabs through their SDKs against the local fakes, looped speech, a turn every few seconds), so the
providers' connection pools and streams are soaked too; results default to ``soak_conversation.md``.

Usage: .venv/bin/python benchmarks/bench_soak.py [--minutes 10] [--calls 100] [--interval 10] [--warmup SECONDS]
       [--conversational]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_echo import SPEECH
from benchmarks.harness import (
    BENCH_CONFIG,
    RESULTS,
    echo_scenario,
    fmt,
    gateway,
    install_signal_handlers,
    markdown_table,
    metric_value,
    open_fds,
    plot_lines,
    rss_bytes,
    scrape,
    sipp,
    speech_wav,
    write_result,
)


@dataclass(frozen=True)
class Sample:
    t: float
    rss_mb: float
    fds: int
    tasks: float
    calls: float


def growth(samples: list[Sample], attr: str, window: float) -> tuple[float, float, float]:
    """Mean of ``attr`` over the first and the last ``window`` seconds, and the growth in percent."""
    if not samples:
        return math.nan, math.nan, math.nan
    end = samples[-1].t
    first = [float(getattr(s, attr)) for s in samples if s.t <= samples[0].t + window]
    last = [float(getattr(s, attr)) for s in samples if s.t >= end - window]
    a, b = sum(first) / len(first), sum(last) / len(last)
    return a, b, (100.0 * (b - a) / a if a else math.nan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=100, help="concurrent calls: half the echo knee")
    parser.add_argument("--call-seconds", type=float, default=60.0, help="length of each call")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None, metavar="SECONDS",
                        help="before sampling starts (default two call lengths: the calls ramp in, then the first "
                             "generation ends and is replaced, a one-off step in RSS)")
    parser.add_argument("--conversational", action="store_true",
                        help="assistant calls against the fake vendors (bench_conversation's setup), not echo calls")
    parser.add_argument("--out", type=Path, default=None, help="default: results/soak.md (soak_conversation.md)")
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS / ("soak_conversation.md" if args.conversational else "soak.md")
    kind = "assistant" if args.conversational else "echo"
    install_signal_handlers()
    duration = args.minutes * 60
    warmup = 2 * args.call_seconds if args.warmup is None else args.warmup
    window = min(60.0, duration / 3)
    samples: list[Sample] = []
    error = ""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as providers:
        work = Path(tmp)
        if args.conversational:
            from benchmarks.bench_conversation import CONFIG, SENTENCE
            from tests.helpers.fake_vendors import fake_vendors

            vendors = providers.enter_context(fake_vendors(transcripts=[], openai_script=None))
            vendors.deepgram.default_transcript = "I would like to book an appointment for tomorrow morning."
            config, service = CONFIG + vendors.providers_yaml(), "+15550001111"
            wav = speech_wav(work, SENTENCE, name="turn", pad=(1, 3))
        else:
            config, service = BENCH_CONFIG, "echo"
            wav = speech_wav(work, SPEECH)
        scenario = echo_scenario(work, wav, args.call_seconds, name="soak")
        rate = max(0.2, args.calls / args.call_seconds)
        total = int((duration + warmup) * rate) + args.calls * 2  # more than the run needs: SIPp is stopped by us
        try:
            with (
                gateway(work, config, name="soak", rtp_ports=max(200, 4 * args.calls + 100)) as gw,
                sipp(scenario, gw, work, service=service, calls=total, rate=rate, limit=args.calls,
                     timeout=duration + args.call_seconds + 60) as run,
            ):
                # Warm-up: the first calls ramp in at `rate` over one call length, then end and are replaced
                # over the next; the soak measures from there.
                time.sleep(warmup)
                t0 = time.monotonic()
                while (now := time.monotonic()) - t0 < duration:
                    text = scrape(gw.http_port)
                    samples.append(Sample(now - t0, rss_bytes(gw.proc.pid) / 2**20, open_fds(gw.proc.pid),
                                          metric_value(text, "voicegw_asyncio_tasks"),
                                          metric_value(text, "voicegw_calls_active", {"direction": "inbound"})))
                    print(samples[-1], flush=True)
                    time.sleep(args.interval)
                failed = run.failed()
        except Exception as exc:  # recorded in the results file
            error = f"{type(exc).__name__}: {exc}"[:200]
            failed = -1
    rows = []
    for label, attr in (("RSS MB", "rss_mb"), ("open fds", "fds"), ("asyncio tasks", "tasks"),
                        ("active calls", "calls")):
        first, last, pct = growth(samples, attr, window)
        rows.append([label, fmt(first), fmt(last), fmt(pct, 2)])
    out: Path = args.out
    plots = [
        plot_lines(out.with_name(out.stem + "_rss.png"), [s.t for s in samples],
                   {"RSS MB": [s.rss_mb for s in samples]}, title="Soak: gateway RSS", xlabel="s",
                   ylabel="MB"),
        plot_lines(out.with_name(out.stem + "_fds_tasks.png"), [s.t for s in samples],
                   {"open fds": [float(s.fds) for s in samples], "asyncio tasks": [s.tasks for s in samples]},
                   title="Soak: fds and tasks", xlabel="s", ylabel="count"),
    ]
    table = markdown_table([f"quantity (mean over {window:g} s)", "first", "last", "growth %"], rows)
    notes = (
        f"{args.calls} concurrent {kind} calls of {args.call_seconds:g} s, replaced as they end, for "
        f"{args.minutes:g} min after a {warmup:g} s warm-up (the calls ramp in, and the first generation ends and "
        f"is replaced), sampled every {args.interval:g} s ({len(samples)} samples); failed calls (SIPp): "
        f"{failed}. Goal (issue 7): RSS growth < 2 %, no fd or task growth. {('Error: ' + error) if error else ''}"
    )
    write_result(out, title="Soak: RSS, fds and asyncio tasks over time", sections=[table, notes], plots=plots)
    print(out.read_text())


if __name__ == "__main__":
    main()
