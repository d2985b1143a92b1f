"""Conversational calls against instant fake providers: the latency the gateway adds to a turn, and how
fast a barge-in silences the assistant.

The gateway process runs an assistant on Deepgram/OpenAI/ElevenLabs, pointed at the local fakes of
tests/fakes (run in this process's background thread, a separate process from the gateway; they answer
at once). SIPp places N concurrent calls, each playing looped espeak-ng speech (1 s silence, a sentence,
3 s silence) with rtp_stream. The first message is long, so the caller's first sentence talks over it
(barge-in); each sentence then becomes a turn the assistant answers.

Figures, from the gateway's own log lines:
- gateway-added turn latency (``turn_timing.gateway_added_ms``): from the moment the endpointing rule
  fired to our first voiced RTP packet, less the time spent waiting for the providers (the LLM until
  its first speakable chunk, the TTS until its first byte) and any hold the assistant asks for
  (``waitSeconds`` is 0 here; the barge-in backoff of ``stopSpeakingPlan.backoffSeconds`` applies after a
  barge-in); ``endpoint_to_voice_ms`` is the raw interval, holds included;
- barge-in stop (``barge_in.stop_ms``): from the caller's voice onset at the gateway (arrival of the
  first voiced packet, VAD included) to the last assistant packet sent (stopSpeakingPlan voiceSeconds 0).

Usage: .venv/bin/python benchmarks/bench_conversation.py [--calls 10 40] [--seconds 30] [--out FILE]
       [--repeat N]   (the ramp N times; the tables take the median of each figure, every run's row below)
       [--profile SECONDS]   (py-spy samples each step after its CPU window; raw files next to --out)
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (
    RESULTS,
    CpuWindow,
    echo_scenario,
    fmt,
    gateway,
    install_signal_handlers,
    markdown_table,
    median_finite,
    metric_value,
    percentile,
    plot_cdf,
    repeated_caveat,
    scrape,
    sipp,
    speech_wav,
    write_result,
)
from benchmarks.pyspy import fold, record
from benchmarks.pyspy import markdown as profile_table

SENTENCE = "I would like to book an appointment for tomorrow morning please"

CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
security: {trusted_sources: ["127.0.0.0/8"], max_calls: 5000}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
log: {level: info}
assistants:
  bench:
    firstMessage: "Hello and welcome to the booking line of the voice gateway benchmark. How can I help you today?"
    model: {provider: openai, model: gpt-4o-mini, messages: [{role: system, content: "Be brief."}]}
    voice: {provider: 11labs, voiceId: bench}
    transcriber: {provider: deepgram, model: nova-3}
    startSpeakingPlan: {waitSeconds: 0}
    stopSpeakingPlan: {voiceSeconds: 0, numWords: 0}
numbers:
  - {number: "*", assistant: bench}
"""


STAGES = ("endpointing_ms", "stt_final_ms", "llm_first_token_ms", "tts_first_byte_ms", "gateway_added_ms",
          "endpoint_to_voice_ms", "voice_to_voice_ms")
RATE = 10  # calls per second while ramping up


def _values(lines: list[dict[str, object]], key: str) -> list[float]:
    out = []
    for line in lines:
        value = line.get(key)
        if isinstance(value, int | float) and value >= 0:
            out.append(float(value))
    return out


def run_step(calls: int, seconds: float, work: Path, wav: Path, profile: float = 0.0,
             profile_out: Path | None = None) -> dict[str, object]:
    """One fresh gateway with ``calls`` conversational calls; with ``profile`` > 0, ``profile`` seconds of
    py-spy sampling after the CPU window (so that it costs the gateway nothing inside it)."""
    from tests.helpers.fake_vendors import fake_vendors

    row: dict[str, object] = {"calls": calls, "error": ""}
    try:
        with fake_vendors(transcripts=[], openai_script=None) as vendors:
            vendors.deepgram.default_transcript = "I would like to book an appointment for tomorrow morning."
            scenario = echo_scenario(work, wav, seconds + profile, name=f"conv_{calls}")
            with gateway(work, CONFIG + vendors.providers_yaml(), name=f"conv{calls}",
                         rtp_ports=max(200, 2 * calls + 100)) as gw:
                with sipp(scenario, gw, work, service="+15550001111", calls=calls, rate=RATE,
                          timeout=seconds + 60) as run:
                    time.sleep(calls / RATE + 1.0)
                    cpu = CpuWindow(gw.proc.pid)
                    cpu.start()
                    time.sleep(max(1.0, seconds - calls / RATE - 3.0))
                    cpu.stop()
                    if profile > 0 and profile_out is not None:
                        record(gw.proc.pid, profile, profile_out)
                    if run.wait(seconds + profile + 90) is None:
                        row["error"] = "SIPp did not finish in time"
                    row["failed"] = run.failed()
                    row["setup_ms"] = run.setup_times_ms()
                    shed = metric_value(scrape(gw.http_port), "voicegw_sip_invites_total", {"outcome": "overloaded"})
                    row["shed"] = 0 if math.isnan(shed) else int(shed)
                row["cpu_per_call_pct"] = cpu.core_pct / calls
            timings = gw.logs("turn_timing")
            row["confirmed"] = len(gw.logs("call_confirmed"))
            row["turns"] = len(timings)
            for key in STAGES:
                row[key] = _values(timings, key)
            row["stop_ms"] = _values(gw.logs("barge_in"), "stop_ms")
            row["overload"] = sorted({str(line.get("signal")) for line in gw.logs("overload_started")})
    except Exception as exc:  # a broken step is recorded, the next one runs
        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
    return row


def _list(row: dict[str, object], key: str) -> list[float]:
    value = row.get(key)
    return [float(v) for v in value] if isinstance(value, list) else []


SUMMARY = ["calls", "up", "failed", "of which shed (503)", "turns", "added p50 ms", "added p95 ms",
           "endpoint->voice p50 ms", "endpoint->voice p95 ms", "barge-ins", "stop p50 ms", "stop p95 ms",
           "setup p95 ms", "CPU % per call", "status"]


def _pct(runs: list[dict[str, object]], key: str, q: float) -> str:
    """The median over ``runs`` of each run's ``q`` percentile of ``key``."""
    return fmt(median_finite([percentile(_list(r, key), q) for r in runs]))


def _int(row: dict[str, object], key: str) -> int | None:
    value = row.get(key)
    return value if isinstance(value, int) else None


def _summary(runs: list[dict[str, object]]) -> list[object]:
    """One step's row: each figure the median over ``runs`` (failed and shed the most, up the fewest)."""
    def worst(key: str, pick: Callable[[list[int]], int]) -> object:
        values = [v for r in runs if (v := _int(r, key)) is not None]
        return pick(values) if values else "n/a"

    statuses = [str(r["error"]) or ("ok" if not r.get("overload") else f"ok; overload: {', '.join(_strs(r, 'overload'))}")
                for r in runs]
    return [runs[0]["calls"], worst("confirmed", min), worst("failed", max), worst("shed", max),
            sum(_int(r, "turns") or 0 for r in runs), _pct(runs, "gateway_added_ms", 0.5),
            _pct(runs, "gateway_added_ms", 0.95), _pct(runs, "endpoint_to_voice_ms", 0.5),
            _pct(runs, "endpoint_to_voice_ms", 0.95), sum(len(_list(r, "stop_ms")) for r in runs),
            _pct(runs, "stop_ms", 0.5), _pct(runs, "stop_ms", 0.95), _pct(runs, "setup_ms", 0.95),
            fmt(median_finite([float(str(r.get("cpu_per_call_pct", math.nan))) for r in runs]), 2),
            "; ".join(sorted(set(statuses), key=lambda x: x != "ok"))]


def _breakdown(runs: list[dict[str, object]]) -> list[object]:
    return [runs[0]["calls"], *[f"{_pct(runs, k, 0.5)} / {_pct(runs, k, 0.95)}" for k in STAGES]]


def _strs(row: dict[str, object], key: str) -> list[str]:
    value = row.get(key)
    return [str(v) for v in value] if isinstance(value, list) else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "conversation.md")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the whole ramp N times (fresh gateways) and report the median of each figure")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="also sample each step with py-spy for SECONDS after its CPU window and print the "
                             "folded table (raw files next to --out)")
    args = parser.parse_args()
    install_signal_handlers()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wav = speech_wav(work, SENTENCE, name="turn", pad=(1, 3))
        for run in range(args.repeat):
            for calls in args.calls:
                raw = args.out.with_name(f"{args.out.stem}_{calls}_pyspy.raw") if args.profile else None
                row = run_step(calls, args.seconds, work, wav, args.profile, raw)
                row["run"] = run + 1
                print(f"run {run + 1}:", {k: v for k, v in row.items() if not isinstance(v, list)}, flush=True)
                if raw is not None and raw.exists():
                    total, shares = fold(raw)
                    print(f"py-spy, {calls} calls, {total} samples ({raw}):\n{profile_table(shares, 40)}", flush=True)
                rows.append(row)
    steps = [[r for r in rows if r["calls"] == calls] for calls in args.calls]
    sections = [markdown_table(SUMMARY, [_summary(runs) for runs in steps]),
                "Turn-latency breakdown by stage (the gateway's `turn_timing` lines):",
                markdown_table(["calls", *[f"{key.removesuffix('_ms')} p50 / p95 ms" for key in STAGES]],
                               [_breakdown(runs) for runs in steps])]
    if args.repeat > 1:
        sections += [f"Every run (the tables above take the median of each figure over these {args.repeat} runs; "
                     "failed, shed and status are the worst run's, calls up the fewest, turns and barge-ins the "
                     "sum):",
                     markdown_table(["run", *SUMMARY], [[str(r["run"]), *_summary([r])] for r in rows])]
    notes = (
        "Providers: local fakes of Deepgram / OpenAI / ElevenLabs answering at once (tests/fakes, in the "
        "benchmark's process, not the gateway's), reached through the vendors' SDKs. Goals (issue 7): >= 150 "
        "concurrent calls per core with gateway-added p95 <= 30 ms and barge-in stop p95 <= 40 ms."
    )
    out: Path = args.out
    def pooled(runs: list[dict[str, object]], key: str) -> list[float]:
        return [v for r in runs for v in _list(r, key)]

    plots = [
        plot_cdf(out.with_name(out.stem + "_turn_cdf.png"),
                 {f"{runs[0]['calls']} calls: gateway added": pooled(runs, "gateway_added_ms") for runs in steps}
                 | {f"{runs[0]['calls']} calls: endpoint->voice": pooled(runs, "endpoint_to_voice_ms")
                    for runs in steps},
                 title="Turn latency", xlabel="ms"),
        plot_cdf(out.with_name(out.stem + "_barge_in_cdf.png"),
                 {f"{runs[0]['calls']} calls": pooled(runs, "stop_ms") for runs in steps},
                 title="Barge-in stop time", xlabel="ms"),
    ]
    write_result(out, title="Conversational calls: gateway-added turn latency and barge-in stop time",
                 sections=[*sections, notes], plots=plots,
                 caveat=repeated_caveat(args.repeat) if args.repeat > 1 else None)
    print(out.read_text())


if __name__ == "__main__":
    main()
