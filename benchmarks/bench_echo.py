"""Echo-line load: a concurrency ramp of SIPp echo calls (rtp_stream, looped PCMU speech, 50 packets/s each
way per call), one fresh gateway per step.

Per step: CPU of the gateway per call (utime+stime from /proc over a window in which every call is up,
divided by the window's wall time and the calls; 100 = one core), RSS at the window's end, call setup time
p50/p95/p99 (SIPp ``-trace_rtt``: INVITE sent to 200 OK), failed calls (SIPp), send timing from the
gateway's ``playout_timing`` log lines (every 10 s: p50/p99 over those ticks of how late the send phase ran
after its 20 ms grid deadline, an upper bound for every packet of the tick; the worst 10 s window with all
calls up is reported), inbound loss (``media_stats`` at call end) and event-loop lag (bucket bound of the
p99 of ``voicegw_event_loop_lag_seconds`` observed during the window).

Usage: .venv/bin/python benchmarks/bench_echo.py [--calls 50 100 200 400] [--seconds 40] [--out FILE]
       [--profile SECONDS]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (
    BENCH_CONFIG,
    RESULTS,
    CpuWindow,
    bucket_delta,
    bucket_quantile,
    cpu_seconds,
    echo_scenario,
    fmt,
    gateway,
    histogram_buckets,
    install_signal_handlers,
    markdown_table,
    metric_value,
    percentile,
    plot_cdf,
    plot_lines,
    repeated_caveat,
    rss_bytes,
    scrape,
    sipp,
    speech_wav,
    write_result,
)
from benchmarks.pyspy import fold, record
from benchmarks.pyspy import markdown as profile_table
from benchmarks.wire import capture, rtp_port_range, send_interval_jitter

__all__ = ["cpu_seconds", "main", "run_step"]

SPEECH = ("Testing the echo line of the voice gateway under load, one two three four five six seven eight nine "
          "ten.")
RATE = 50  # calls per second while ramping up
LAG = "voicegw_event_loop_lag_seconds"
CAPTURE_SECONDS = 5.0  # of tcpdump on the gateway's RTP source ports, after the CPU window


@dataclass
class EchoStep:
    calls: int
    up: int = 0
    failed: int = 0
    shed: int = 0  # INVITEs the gateway refused with 503 + Retry-After (load shedding; counted in failed)
    cpu_core_pct: float = math.nan
    rss_mb: float = math.nan
    setup_ms: list[float] = field(default_factory=list)
    send_p50_ms: float = math.nan
    send_p99_ms: float = math.nan
    interval_p50_ms: float = math.nan
    interval_p99_ms: float = math.nan
    intervals: int = 0
    rx_loss_pct: float = math.nan
    lag_p99_ms: float = math.nan
    error: str = ""

    @property
    def cpu_per_call_pct(self) -> float:
        return self.cpu_core_pct / self.calls

    def row(self) -> list[str]:
        return [str(self.calls), str(self.up), str(self.failed), str(self.shed), fmt(self.cpu_core_pct),
                fmt(self.cpu_per_call_pct, 3), fmt(self.rss_mb), fmt(percentile(self.setup_ms, 0.5)),
                fmt(percentile(self.setup_ms, 0.95)), fmt(percentile(self.setup_ms, 0.99)),
                fmt(self.send_p50_ms, 2), fmt(self.send_p99_ms, 2), fmt(self.interval_p50_ms, 2),
                fmt(self.interval_p99_ms, 2), fmt(self.rx_loss_pct, 2),
                fmt(self.lag_p99_ms), self.error or "ok"]


HEADERS = ["calls", "up", "failed", "of which shed (503)", "CPU % of a core", "CPU % per call", "RSS MB", "setup p50 ms",
           "setup p95 ms", "setup p99 ms", "send p50 ms", "send p99 ms", "interval jitter p50 ms", "interval jitter p99 ms", "rx loss %", "loop lag p99 ms <=",
           "status"]


def run_step(calls: int, seconds: float, work: Path, wav: Path, profile: float = 0.0,
             profile_out: Path | None = None) -> EchoStep:
    """One fresh gateway with ``calls`` echo calls. After the CPU window (so that neither costs the gateway CPU
    inside it) the calls go on for CAPTURE_SECONDS of tcpdump capture (send-interval jitter on the wire) and,
    with ``profile`` > 0, ``profile`` seconds of py-spy sampling (``profile_out``: its raw file)."""
    step = EchoStep(calls)
    extra = CAPTURE_SECONDS + profile
    try:
        scenario = echo_scenario(work, wav, seconds + extra, name=f"echo_{calls}")
        with gateway(work, BENCH_CONFIG, name=f"echo{calls}", rtp_ports=max(200, 2 * calls + 100)) as gw:
            with sipp(scenario, gw, work, service="echo", calls=calls, rate=RATE, timeout=seconds + 60) as run:
                ramp = calls / RATE + 3.0
                time.sleep(ramp)
                step.up = len(gw.logs("call_confirmed"))
                log_mark = len(gw.logs())
                lag_before = histogram_buckets(scrape(gw.http_port), LAG)
                cpu = CpuWindow(gw.proc.pid)
                cpu.start()
                time.sleep(max(2.0, seconds - ramp - 3.0))
                cpu.stop()
                pcap = work / f"echo_{calls}.pcap"
                capture(rtp_port_range(gw.config_path), CAPTURE_SECONDS, pcap)
                jitter = send_interval_jitter(pcap)
                step.intervals = len(jitter)
                step.interval_p50_ms = 1000 * percentile(jitter, 0.5)
                step.interval_p99_ms = 1000 * percentile(jitter, 0.99)
                if profile > 0 and profile_out is not None:
                    record(gw.proc.pid, profile, profile_out)
                step.rss_mb = rss_bytes(gw.proc.pid) / 2**20
                lag = bucket_delta(histogram_buckets(scrape(gw.http_port), LAG), lag_before)
                step.lag_p99_ms = 1000 * bucket_quantile(lag, 0.99)
                step.cpu_core_pct = cpu.core_pct
                timing = [line for line in gw.logs()[log_mark:] if line.get("event") == "playout_timing"
                          and line.get("streams") == calls]
                step.send_p50_ms = max((float(str(t["p50_ms"])) for t in timing), default=math.nan)
                step.send_p99_ms = max((float(str(t["p99_ms"])) for t in timing), default=math.nan)
                if run.wait(seconds + extra + 90) is None:
                    step.error = "SIPp did not finish in time"
                step.failed = run.failed()
                step.setup_ms = run.setup_times_ms()
                shed = metric_value(scrape(gw.http_port), "voicegw_sip_invites_total", {"outcome": "overloaded"})
                step.shed = 0 if math.isnan(shed) else int(shed)
            ended = gw.logs("media_stats")
            received = sum(int(str(line.get("rx_packets_received", 0))) for line in ended)
            lost = sum(int(str(line.get("rx_cumulative_lost", 0))) for line in ended)
            step.rx_loss_pct = 100.0 * lost / max(1, received + lost)
    except Exception as exc:  # a broken step is recorded, the ramp goes on
        step.error = f"{type(exc).__name__}: {exc}"[:200]
    return step


def median_step(runs: list[EchoStep]) -> EchoStep:
    """One step's figures as the median over repeated runs (failed calls: the most of any run; calls up: the
    fewest; errors: all of them; setup times pooled)."""

    def med(values: list[float]) -> float:
        finite = [v for v in values if not math.isnan(v)]
        return statistics.median(finite) if finite else math.nan

    return EchoStep(
        calls=runs[0].calls,
        up=min(s.up for s in runs),
        failed=max(s.failed for s in runs),
        shed=max(s.shed for s in runs),
        cpu_core_pct=med([s.cpu_core_pct for s in runs]),
        rss_mb=med([s.rss_mb for s in runs]),
        setup_ms=[ms for s in runs for ms in s.setup_ms],
        send_p50_ms=med([s.send_p50_ms for s in runs]),
        send_p99_ms=med([s.send_p99_ms for s in runs]),
        interval_p50_ms=med([s.interval_p50_ms for s in runs]),
        interval_p99_ms=med([s.interval_p99_ms for s in runs]),
        intervals=sum(s.intervals for s in runs),
        rx_loss_pct=med([s.rx_loss_pct for s in runs]),
        lag_p99_ms=med([s.lag_p99_ms for s in runs]),
        error="; ".join(sorted({s.error for s in runs if s.error})),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--seconds", type=float, default=40.0, help="call length (the window is shorter)")
    parser.add_argument("--out", type=Path, default=RESULTS / "echo.md")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the whole ramp N times (fresh gateways) and report the median of each figure")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="also sample each step with py-spy for SECONDS after its CPU window and print the "
                             "folded table (raw files next to --out)")
    args = parser.parse_args()
    install_signal_handlers()
    steps = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wav = speech_wav(work, SPEECH)
        for run in range(args.repeat):
            for calls in args.calls:
                raw = args.out.with_name(f"{args.out.stem}_{calls}_pyspy.raw") if args.profile else None
                step = run_step(calls, args.seconds, work, wav, args.profile, raw)
                print(f"run {run + 1}:", step.row(), flush=True)
                if raw is not None and raw.exists():
                    total, shares = fold(raw)
                    print(f"py-spy, {calls} calls, {total} samples ({raw}):\n{profile_table(shares)}", flush=True)
                steps.append(step)
    out: Path = args.out
    runs = list(steps)
    if args.repeat > 1:
        steps = [median_step([s for s in runs if s.calls == calls]) for calls in args.calls]
    clean = [s for s in steps if s.failed == 0 and not s.error and s.up == s.calls]
    knee = max((s.calls for s in clean), default=None)
    plots = [
        plot_lines(out.with_name(out.stem + "_cpu_per_call.png"), [s.calls for s in steps],
                   {"CPU % of a core per call": [s.cpu_per_call_pct for s in steps]},
                   title="Echo calls: gateway CPU per call", xlabel="concurrent calls", ylabel="% of one core"),
        plot_cdf(out.with_name(out.stem + "_setup_cdf.png"), {f"{s.calls} calls": s.setup_ms for s in steps},
                 title="Echo calls: setup time (INVITE to 200 OK)", xlabel="ms"),
    ]
    notes = (
        f"Knee (most concurrent calls, all up, 0 failed): **{knee if knee is not None else 'none'}**; half of it "
        "is the soak load (`bench_soak.py --calls`). Goals (issue 7): >= 400 concurrent calls per core at 0 "
        "failed calls, p99 send-interval jitter <= 2 ms, <= 0.25 % of a core per call. Load: SIPp 3.6.1 UAC, "
        f"`tests/sipp/echo_rtp_stream.xml`, PCMU speech looped with `rtp_stream`, {RATE} calls/s ramp. "
        "Send timing is the gateway's own `playout_timing`: how late a 20 ms tick's sends ran behind its grid "
        "deadline (from a loop timer: the last sendto, an upper bound for every packet of the tick; with the RTP "
        "pacer of the compiled media path: the hand-over of the tick's batch, 0 when before the deadline); "
        "interval jitter is measured "
        f"on the wire (`benchmarks/wire.py`: tcpdump on lo for {CAPTURE_SECONDS:.0f} s after the CPU window, "
        "|departure interval - RTP timestamp interval| of consecutive packets of each stream), the quantity "
        "the goal names; loop lag is a histogram bucket bound (an upper bound)."
    )
    sections = [markdown_table(HEADERS, [s.row() for s in steps])]
    if args.repeat > 1:
        sections.append(f"Every run (the table above takes the median of each column over these {args.repeat}; "
                        "failed, shed and status are the worst run's):")
        sections.append(markdown_table(["run", *HEADERS], [[str(i // len(args.calls) + 1), *s.row()]
                                                          for i, s in enumerate(runs)]))
    sections.append(notes)
    write_result(out, title="Echo calls: concurrency ramp", sections=sections, plots=plots,
                 caveat=repeated_caveat(args.repeat) if args.repeat > 1 else None)
    print(out.read_text())


if __name__ == "__main__":
    main()
