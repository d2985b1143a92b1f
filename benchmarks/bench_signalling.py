"""Signalling load: a SIPp call-rate ramp (INVITE/200/ACK/BYE, no media) against one gateway, to the knee.

Per step (a fixed call rate for a fixed time): the achieved rate (successful calls over the step's wall time),
failed calls (SIPp's FailedCall counter: 503 shedding, timeouts), of which shed (INVITEs the gateway refused
with 503 + Retry-After because it was overloaded, from ``voicegw_sip_invites_total{outcome="overloaded"}``, with
the signals that started an episode from ``voicegw_overload_episodes_total``), setup time p50/p95/p99 (INVITE
sent to 200 OK received, per call from SIPp ``-trace_rtt``), and the gateway's CPU (utime+stime from /proc,
100 = one core). The knee is the highest step with no failed call that achieved 95 % of its offered rate. Scenario: tests/sipp/uac_signalling_only.xml.

Usage: .venv/bin/python benchmarks/bench_signalling.py [--rates 50 100 200 300 400] [--seconds 12]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (
    BENCH_CONFIG,
    RESULTS,
    CpuWindow,
    fmt,
    gateway,
    install_signal_handlers,
    markdown_table,
    metric_value,
    percentile,
    plot_cdf,
    plot_lines,
    repeated_caveat,
    scrape,
    sipp,
    write_result,
)
from tests.integration.harness import SIPP_DIR

SCENARIO = SIPP_DIR / "uac_signalling_only.xml"
OVERLOAD_SIGNALS = ("event_loop_lag", "playout_lateness", "sip_backlog")
HEADERS = ["offered cps", "achieved cps", "ok calls", "failed", "shed 503 (signal)", "setup p50 ms", "setup p95 ms",
           "setup p99 ms", "gateway CPU %", "status"]


@dataclass
class Step:
    rate: int
    seconds: float
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    shed: int = 0  # 503 + Retry-After for overload (part of failed)
    signals: str = ""  # the overload signals that started an episode in this step
    achieved_cps: float = math.nan
    cpu_pct: float = math.nan
    setup_ms: tuple[float, ...] = ()
    error: str = ""

    def row(self) -> list[str]:
        return [str(self.rate), fmt(self.achieved_cps), str(self.succeeded), str(self.failed),
                str(self.shed) + (f" ({self.signals})" if self.signals else ""), fmt(percentile(self.setup_ms, 0.5)), fmt(percentile(self.setup_ms, 0.95)),
                fmt(percentile(self.setup_ms, 0.99)), fmt(self.cpu_pct), self.error or "ok"]


def median_step(runs: list[Step]) -> Step:
    """One rate's figures over repeated runs: the median run by achieved rate for the counts (so that calls,
    failures and shedding stay one run's consistent set), the median CPU, setup times pooled, every error."""
    ordered = sorted(runs, key=lambda s: (s.achieved_cps if not math.isnan(s.achieved_cps) else -1.0))
    middle = ordered[(len(ordered) - 1) // 2]
    cpu = [s.cpu_pct for s in runs if not math.isnan(s.cpu_pct)]
    return Step(
        rate=middle.rate, seconds=middle.seconds, attempted=middle.attempted, succeeded=middle.succeeded,
        failed=middle.failed, shed=middle.shed, signals=",".join(sorted({x for s in runs for x in s.signals.split(",")
                                                                          if x})),
        achieved_cps=middle.achieved_cps, cpu_pct=statistics.median(cpu) if cpu else math.nan,
        setup_ms=tuple(ms for s in runs for ms in s.setup_ms),
        error="; ".join(sorted({s.error for s in runs if s.error})),
    )


def run_step(rate: int, seconds: float, work: Path, port: int | None = None) -> Step:
    step = Step(rate, seconds, attempted=int(rate * seconds))
    try:
        with gateway(work, BENCH_CONFIG, name=f"sig{rate}") as gw:
            cpu = CpuWindow(gw.proc.pid)
            # -l: in flight at once (each call lasts ~0.1 s); a slow gateway piles calls up to this limit.
            with sipp(SCENARIO, gw, work, service="echo", calls=step.attempted, rate=rate,
                      limit=max(50, rate * 2), timeout=seconds + 30) as run:
                cpu.start()
                rc = run.wait(seconds + 40)
                cpu.stop()
                step.succeeded, step.failed = run.succeeded(), run.failed()
                step.setup_ms = tuple(run.setup_times_ms())
                step.achieved_cps = step.succeeded / cpu.seconds
                step.cpu_pct = cpu.core_pct
                step.shed, step.signals = _shedding(gw.http_port)
                if rc is None:
                    step.error = "SIPp did not finish in time"
                    step.failed = max(step.failed, step.attempted - step.succeeded)
    except Exception as exc:  # a broken step is recorded, the ramp goes on
        step.error = f"{type(exc).__name__}: {exc}"[:200]
    return step


def _shedding(http_port: int) -> tuple[int, str]:
    """INVITEs refused as overloaded, and which signals started an episode (the gateway's own counters)."""
    text = scrape(http_port)
    shed = metric_value(text, "voicegw_sip_invites_total", {"outcome": "overloaded"})
    signals = [s for s in OVERLOAD_SIGNALS
               if (metric_value(text, "voicegw_overload_episodes_total", {"signal": s}) or 0) > 0]
    return (0 if math.isnan(shed) else int(shed)), ",".join(signals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 100, 200, 300, 400])
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each step")
    parser.add_argument("--out", type=Path, default=RESULTS / "signalling.md")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the whole ramp N times (fresh gateways) and report the median run per rate")
    args = parser.parse_args()
    install_signal_handlers()
    runs: list[Step] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.repeat):
            for rate in args.rates:
                step = run_step(rate, args.seconds, Path(tmp))
                print(f"run {run + 1}:", step.row(), flush=True)
                runs.append(step)
    steps = runs if args.repeat == 1 else [median_step([s for s in runs if s.rate == rate]) for rate in args.rates]
    # A step counts when no call failed AND the gateway kept up: at 95 % of the offered rate (a queue that grows
    # without a failure inside the step's time is not throughput).
    ok = [s for s in steps if s.failed == 0 and not s.error and s.succeeded > 0 and s.achieved_cps >= 0.95 * s.rate]
    knee = max((s.rate for s in ok), default=None)
    out: Path = args.out
    plots = [
        plot_cdf(out.with_name(out.stem + "_setup_cdf.png"),
                 {f"{s.rate} cps": s.setup_ms for s in steps}, title="Call setup time (INVITE to 200 OK)",
                 xlabel="ms"),
        plot_lines(out.with_name(out.stem + "_cpu.png"), [s.rate for s in steps],
                   {"gateway CPU % of a core": [s.cpu_pct for s in steps],
                    "achieved cps": [s.achieved_cps for s in steps]},
                   title="Signalling ramp", xlabel="offered calls per second", ylabel="value"),
    ]
    table = markdown_table(HEADERS, [s.row() for s in steps])
    notes = (
        f"Knee (highest step with 0 failed calls and at least 95 % of the offered rate achieved): **{knee if knee is not None else 'none'} cps**. "
        "Goal (issue 7): >= 300 call setups per second on one core with 0 failures. SIPp runs on the same "
        "cores as the gateway, so at high rates SIPp's own CPU competes with the gateway's."
    )
    sections = [table]
    if args.repeat > 1:
        sections.append(f"Every run (the table above shows, per rate, the run with the median achieved rate, the "
                        f"median CPU and the setup times of all {args.repeat} runs):")
        sections.append(markdown_table(["run", *HEADERS], [[str(i // len(args.rates) + 1), *s.row()]
                                                          for i, s in enumerate(runs)]))
    sections.append(notes)
    write_result(out, title="Signalling only: call-rate ramp", sections=sections, plots=plots,
                 caveat=repeated_caveat(args.repeat) if args.repeat > 1 else None)
    print(out.read_text())


if __name__ == "__main__":
    main()
