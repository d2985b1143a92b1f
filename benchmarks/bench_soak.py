"""Soak: echo calls held at a steady concurrency (half the echo knee) for ``--minutes``, watching for leaks.

SIPp keeps ``--calls`` echo calls in flight, each ``--call-seconds`` long and replaced when it ends, so calls
start and end all the time. Every ``--interval`` seconds: the gateway's RSS and open fds (/proc) and its asyncio
task count (``voicegw_asyncio_tasks`` from /metrics), from the end of a warm-up of two call lengths (``--warmup``).
Reported: first-minute mean vs last-minute mean of each, and the growth. Goal (issue 7): RSS growth < 2 %, no fd or task growth.

``--conversational``: assistant calls instead of echo calls, bench_conversation.py's setup (Deepgram / OpenAI /
ElevenLabs through their SDKs against the local fakes, looped speech, a turn every few seconds), so the
providers' connection pools and streams are soaked too; results default to ``soak_conversation.md``.

``--repeat N`` soaks N times (a fresh gateway each) and reports the median of each figure, every run's row below.

Usage: .venv/bin/python benchmarks/bench_soak.py [--minutes 10] [--calls 100] [--interval 10] [--warmup SECONDS]
       [--conversational] [--repeat N]
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
    median_finite,
    metric_value,
    open_fds,
    plot_lines,
    rss_bytes,
    scrape,
    sipp,
    speech_wav,
    tcp_connections_to,
    write_result,
)


@dataclass(frozen=True)
class Sample:
    t: float
    rss_mb: float
    fds: int
    tasks: float
    calls: float
    pooled: int  # idle-or-busy keep-alive connections to the HTTP vendors (a pool that grows and shrinks)

    @property
    def fds_less_pool(self) -> int:
        return self.fds - self.pooled


def growth(samples: list[Sample], attr: str, window: float) -> tuple[float, float, float]:
    """Mean of ``attr`` over the first and the last ``window`` seconds, and the growth in percent."""
    if not samples:
        return math.nan, math.nan, math.nan
    end = samples[-1].t
    first = [float(getattr(s, attr)) for s in samples if s.t <= samples[0].t + window]
    last = [float(getattr(s, attr)) for s in samples if s.t >= end - window]
    a, b = sum(first) / len(first), sum(last) / len(last)
    return a, b, (100.0 * (b - a) / a if a else math.nan)


def soak_once(args: argparse.Namespace, duration: float, warmup: float) -> tuple[list[Sample], int, str]:
    """One soak on a fresh gateway: the samples, SIPp's failed calls (-1 on an error) and the error, if any."""
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
            http_ports = {int(vendors.urls[name].rsplit(":", 1)[1].split("/")[0]) for name in ("openai", "elevenlabs")}
            wav = speech_wav(work, SENTENCE, name="turn", pad=(1, 3))
        else:
            config, service = BENCH_CONFIG, "echo"
            http_ports = set()
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
                run.check_running()
                t0 = time.monotonic()
                while (now := time.monotonic()) - t0 < duration:
                    run.check_running()
                    text = scrape(gw.http_port)
                    samples.append(Sample(now - t0, rss_bytes(gw.proc.pid) / 2**20, open_fds(gw.proc.pid),
                                          metric_value(text, "voicegw_asyncio_tasks"),
                                          metric_value(text, "voicegw_calls_active", {"direction": "inbound"}),
                                          tcp_connections_to(gw.proc.pid, http_ports) if http_ports else 0))
                    print(samples[-1], flush=True)
                    time.sleep(args.interval)
                failed = run.failed()
        except Exception as exc:  # recorded in the results file
            error = f"{type(exc).__name__}: {exc}"[:200]
            failed = -1
    return samples, failed, error


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
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="soak N times (fresh gateways) and report the median of each figure")
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS / ("soak_conversation.md" if args.conversational else "soak.md")
    kind = "assistant" if args.conversational else "echo"
    install_signal_handlers()
    duration = args.minutes * 60
    warmup = 2 * args.call_seconds if args.warmup is None else args.warmup
    window = min(60.0, duration / 3)
    runs = []
    for n in range(args.repeat):
        if args.repeat > 1:
            print(f"run {n + 1} of {args.repeat}", flush=True)
        runs.append(soak_once(args, duration, warmup))
    samples, failed, error = runs[-1]
    rows = []
    quantities = [("RSS MB", "rss_mb"), ("open fds", "fds"), ("asyncio tasks", "tasks"), ("active calls", "calls")]
    if args.conversational:
        quantities[2:2] = [("pooled HTTP connections", "pooled"), ("open fds less the pool", "fds_less_pool")]
    for label, attr in quantities:
        figures = [growth(run_samples, attr, window) for run_samples, _, run_error in runs
                   if not run_error or all(run[2] for run in runs)]  # a run that broke off is listed, not counted
        first, last, pct = (median_finite([f[i] for f in figures]) for i in range(3))
        rows.append([label, fmt(first), fmt(last), fmt(pct, 2)])
    every = [[n + 1, *(fmt(growth(run_samples, attr, window)[2], 2) for _, attr in quantities), run_failed,
              run_error or "-"] for n, (run_samples, run_failed, run_error) in enumerate(runs)]
    out: Path = args.out
    plots = [
        plot_lines(out.with_name(out.stem + "_rss.png"), [s.t for s in samples],
                   {"RSS MB": [s.rss_mb for s in samples]}, title="Soak: gateway RSS", xlabel="s",
                   ylabel="MB"),
        plot_lines(out.with_name(out.stem + "_fds_tasks.png"), [s.t for s in samples],
                   {"open fds": [float(s.fds) for s in samples], "asyncio tasks": [s.tasks for s in samples],
                    **({"pooled HTTP connections": [float(s.pooled) for s in samples]} if args.conversational else {})},
                   title="Soak: fds and tasks", xlabel="s", ylabel="count"),
    ]
    median = "median over the runs of " if args.repeat > 1 else ""
    table = markdown_table([f"quantity ({median}the mean over {window:g} s)", "first", "last", "growth %"], rows)
    notes = (
        f"{args.calls} concurrent {kind} calls of {args.call_seconds:g} s, replaced as they end, for "
        f"{args.minutes:g} min after a {warmup:g} s warm-up (the calls ramp in, and the first generation ends and "
        f"is replaced), sampled every {args.interval:g} s ({len(samples)} samples); failed calls (SIPp): "
        f"{failed if args.repeat == 1 else max(run[1] for run in runs)}. Goal (issue 7): RSS growth < 2 %, no fd or "
        "task growth. "
        + ("Pooled HTTP connections: the gateway's TCP connections to the fake OpenAI and ElevenLabs, kept alive "
           "30 s after a request (`gateway/providers/http_pool.py`): the pool follows how many requests overlap "
           "and shrinks when idle, so the fds are also shown without it. " if args.conversational else "")
        + (f"Error: {error}" if error else "")
    )
    sections = [table, notes]
    if args.repeat > 1:
        sections += [f"Every run's growth in percent ({args.repeat} runs, a fresh gateway each; the plots show the "
                     "last run):",
                     markdown_table(["run", *(label for label, _ in quantities), "failed calls", "error"], every)]
    caveat = (f"**Median of {args.repeat} runs** (each a fresh gateway, one after another) on a 2-CPU machine with "
              "SIPp (the load) on the same cores; every run's row is below the medians, the load average when the "
              "first started is on the machine line.") if args.repeat > 1 else None
    write_result(out, title="Soak: RSS, fds and asyncio tasks over time", sections=sections, plots=plots,
                 caveat=caveat)
    print(out.read_text())


if __name__ == "__main__":
    main()
