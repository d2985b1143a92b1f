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
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_echo import cpu_seconds  # noqa: E402
from benchmarks.machine import cpu_model, git_revision  # noqa: E402
from tests.integration.harness import SIPP_DIR, free_port, sipp_binary, start_gateway  # noqa: E402

SENTENCE = "I would like to book an appointment for tomorrow morning please"

CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: 42000, port_max: 42999}
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


def make_wav(directory: Path) -> Path:
    raw, out = directory / "speech.wav", directory / "turn_ulaw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), SENTENCE], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-e", "u-law", str(out), "pad", "1", "3"],
                   check=True, capture_output=True)
    return out


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def run(calls: int, seconds: float, work: Path, wav: Path) -> dict[str, float]:
    from tests.helpers.fake_vendors import fake_vendors

    with fake_vendors(transcripts=[], openai_script=None) as vendors:
        vendors.deepgram.default_transcript = "I would like to book an appointment for tomorrow morning."
        gateway = start_gateway(work, CONFIG + vendors.providers_yaml(), name=f"conv{calls}")
        try:
            scenario = work / f"conv_{calls}.xml"
            scenario.write_text(
                (SIPP_DIR / "echo_rtp_stream.xml").read_text().replace("{WAV}", str(wav)).replace("{LOOPS}", "-1")
                .replace("{PT}", "0").replace("{CODEC}", "PCMU").replace("{PAUSE_MS}", str(int(seconds * 1000)))
            )
            rate = 10
            cmd = [sipp_binary(), "-sf", str(scenario), f"127.0.0.1:{gateway.sip_port}", "-s", "+15550001111",
                   "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port(also_tcp=False) & ~1),
                   "-m", str(calls), "-l", str(calls), "-r", str(rate), "-nostdin",
                   "-timeout", f"{int(seconds + 60)}s"]
            sipp = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(calls / rate + 1.0)
            t0, c0 = time.monotonic(), cpu_seconds(gateway.proc.pid)
            time.sleep(max(1.0, seconds - calls / rate - 3.0))
            t1, c1 = time.monotonic(), cpu_seconds(gateway.proc.pid)
            sipp.wait(seconds + 90)
        finally:
            gateway.stop()
        timings = gateway.logs("turn_timing")
        added = [float(t["gateway_added_ms"]) for t in timings if t.get("gateway_added_ms") is not None]  # type: ignore[arg-type]
        e2v = [float(t["endpoint_to_voice_ms"]) for t in timings if t.get("endpoint_to_voice_ms") is not None]  # type: ignore[arg-type]
        stops = [float(b["stop_ms"]) for b in gateway.logs("barge_in") if b.get("stop_ms") is not None]  # type: ignore[arg-type]
        return {
            "calls": calls,
            "confirmed": len(gateway.logs("call_confirmed")),
            "turns": len(timings),
            "added_p50": quantile(added, 0.5),
            "added_p95": quantile(added, 0.95),
            "e2v_p50": quantile(e2v, 0.5),
            "e2v_p95": quantile(e2v, 0.95),
            "barge_ins": len(stops),
            "stop_p50": quantile(stops, 0.5),
            "stop_p95": quantile(stops, 0.95),
            "cpu_per_call_pct": 100.0 * (c1 - c0) / (t1 - t0) / calls,
            "sipp_rc": float(sipp.returncode if sipp.returncode is not None else -1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None, help="write the markdown results here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wav = make_wav(work)
        for calls in args.calls:
            row = run(calls, args.seconds, work, wav)
            print(row, flush=True)
            rows.append(row)
    lines = [
        "# Conversational calls: gateway-added turn latency and barge-in stop time",
        "",
        f"- command: `.venv/bin/python benchmarks/bench_conversation.py --calls {' '.join(map(str, args.calls))} "
        f"--seconds {args.seconds:g}`",
        f"- revision {git_revision(['gateway'])}; {cpu_model()}, {os.cpu_count()} logical CPUs (shared); "
        f"python {platform.python_version()}, uvloop",
        "- providers: local fakes of Deepgram / OpenAI / ElevenLabs answering at once (tests/fakes), via the "
        "vendors' SDKs; goals (issue): gateway-added p95 <= 30 ms, barge-in stop p95 <= 40 ms",
        "",
        "| calls | up | turns | added p50 ms | added p95 ms | endpoint->voice p50 ms | endpoint->voice p95 ms "
        "| barge-ins | stop p50 ms | stop p95 ms | CPU % per call |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['calls']:.0f} | {r['confirmed']:.0f} | {r['turns']:.0f} | {r['added_p50']:.1f} "
            f"| {r['added_p95']:.1f} | {r['e2v_p50']:.1f} | {r['e2v_p95']:.1f} | {r['barge_ins']:.0f} "
            f"| {r['stop_p50']:.1f} | {r['stop_p95']:.1f} | {r['cpu_per_call_pct']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
