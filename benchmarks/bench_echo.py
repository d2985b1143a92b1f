"""Echo-line load: CPU of the gateway process per concurrent echo call, and the playout scheduler's
send-time lateness, at 50/100/200 concurrent calls driven by SIPp with RTP (rtp_stream, looped speech).

CPU: utime+stime of the gateway process from /proc/<pid>/stat over a window in which every call is up
and streaming, divided by the window's wall time and the number of calls (percent of one core per call).
Send timing: the gateway's ``playout_timing`` log lines (every 10 s: p50/p99/max over those ticks of how
late the send phase ran after its 20 ms grid deadline, the last sendto of the tick, so an upper bound for
every packet of that tick); the figures reported are the worst 10 s window seen with all calls up.

Usage: .venv/bin/python benchmarks/bench_echo.py [--calls 50 100 200] [--seconds 40] [--out FILE]
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

from tests.integration.harness import (  # noqa: E402
    BASE_CONFIG,
    SIPP_DIR,
    free_port,
    sipp_binary,
    start_gateway,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def make_wav(directory: Path) -> Path:
    raw, out = directory / "speech.wav", directory / "speech_ulaw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "Testing the echo line of the voice gateway under load, "
                    "one two three four five six seven eight nine ten."], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-e", "u-law", str(out)], check=True,
                   capture_output=True)
    return out


def run(calls: int, seconds: float, work: Path, wav: Path) -> dict[str, float]:
    # 2 ports per call (RTP + RTCP): the test range is too small for 200 calls
    config = BASE_CONFIG.replace("{port_min: {RTP_MIN}, port_max: {RTP_MAX}}", "{port_min: 41000, port_max: 41999}")
    gateway = start_gateway(work, config, name=f"gw{calls}")
    try:
        scenario = work / f"echo_{calls}.xml"
        scenario.write_text(
            (SIPP_DIR / "echo_rtp_stream.xml").read_text().replace("{WAV}", str(wav)).replace("{LOOPS}", "-1")
            .replace("{PT}", "0").replace("{CODEC}", "PCMU").replace("{PAUSE_MS}", str(int(seconds * 1000)))
        )
        rate = 50
        cmd = [sipp_binary(), "-sf", str(scenario), f"127.0.0.1:{gateway.sip_port}", "-s", "echo",
               "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port(also_tcp=False) & ~1),
               "-m", str(calls), "-l", str(calls), "-r", str(rate), "-nostdin",
               "-timeout", f"{int(seconds + 60)}s"]
        sipp = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ramp = calls / rate + 3.0
        time.sleep(ramp)
        confirmed = len(gateway.logs("call_confirmed"))
        t0, c0 = time.monotonic(), cpu_seconds(gateway.proc.pid)
        log_mark = len(gateway.logs())
        window = seconds - ramp - 3.0
        time.sleep(window)
        t1, c1 = time.monotonic(), cpu_seconds(gateway.proc.pid)
        timing = [line for line in gateway.logs()[log_mark:] if line.get("event") == "playout_timing"
                  and line.get("streams") == calls]
        sipp.wait(seconds + 90)
        ended = gateway.logs("media_stats")
        cpu_per_call = 100.0 * (c1 - c0) / (t1 - t0) / calls
        p50 = max((float(line["p50_ms"]) for line in timing), default=float("nan"))  # type: ignore[arg-type]
        p99 = max((float(line["p99_ms"]) for line in timing), default=float("nan"))  # type: ignore[arg-type]
        worst = max((float(line["max_ms"]) for line in timing), default=float("nan"))  # type: ignore[arg-type]
        received = sum(int(line.get("rx_packets_received", 0)) for line in ended)  # type: ignore[call-overload]
        lost = sum(int(line.get("rx_cumulative_lost", 0)) for line in ended)  # type: ignore[call-overload]
        return {
            "calls": calls,
            "confirmed": confirmed,
            "window_s": t1 - t0,
            "cpu_core_pct": 100.0 * (c1 - c0) / (t1 - t0),
            "cpu_per_call_pct": cpu_per_call,
            "send_p50_ms": p50,
            "send_p99_ms": p99,
            "send_max_ms": worst,
            "timing_windows": len(timing),
            "rx_loss_pct": 100.0 * lost / max(1, received + lost),
            "sipp_rc": float(sipp.returncode if sipp.returncode is not None else -1),
        }
    finally:
        gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--seconds", type=float, default=40.0, help="call length (the window is shorter)")
    parser.add_argument("--out", type=Path, default=None, help="append a markdown table here")
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
        f"- command: `.venv/bin/python benchmarks/bench_echo.py --calls {' '.join(map(str, args.calls))} "
        f"--seconds {args.seconds:g}`",
        f"- python {platform.python_version()}, {os.cpu_count()} logical CPUs (shared), uvloop",
        "",
        "| calls | up | CPU % of a core | CPU % per call | send p50 ms | send p99 ms | send max ms | rx loss % |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['calls']:.0f} | {r['confirmed']:.0f} | {r['cpu_core_pct']:.1f} | {r['cpu_per_call_pct']:.3f} "
            f"| {r['send_p50_ms']:.3f} | {r['send_p99_ms']:.3f} | {r['send_max_ms']:.3f} | {r['rx_loss_pct']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        with args.out.open("a") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
