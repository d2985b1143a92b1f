"""Throughput of the SIP message layer: parse and serialise a typical INVITE with SDP and a 200 OK.

Run:  .venv/bin/python benchmarks/bench_sip_parser.py [--runs 7] [--seconds 0.5]
Writes benchmarks/results/sip_parser.md (median of the runs, messages per second on one core).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model, git_revision  # noqa: E402 - benchmarks/machine.py

from gateway.sip.message import Message, Request, make_response  # noqa: E402
from gateway.sip.parser import parse_message  # noqa: E402

_MEASURED_FILES = [
    *(
        f"gateway/sip/{name}.py"
        for name in ("grammar", "uri", "fields", "headers", "message", "parser", "errors")
    ),
    "benchmarks/bench_sip_parser.py",
]
CAPTURED = ROOT / ".." / "shared" / "data" / "sip" / "captured"


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over at least ``seconds``."""
    batch = 200
    calls = 0
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed


def _median_rate(fn: Callable[[], object], runs: int, seconds: float) -> tuple[float, float, float]:
    rates = [_rate(fn, seconds) for _ in range(runs)]
    return statistics.median(rates), min(rates), max(rates)


def _touch_views(message: Message) -> None:
    # What the transaction and dialog layers read from every message.
    _ = (message.call_id, message.cseq, message.from_, message.to, message.top_via, message.contacts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "sip_parser.md")
    args = parser.parse_args()

    invite_bytes = (CAPTURED / "invite-pjsip-2.15.dat").read_bytes()
    invite = parse_message(invite_bytes)
    assert isinstance(invite, Request)
    ok = make_response(invite, 200, to_tag="a1b2c3d4", body=invite.body, content_type="application/sdp")
    ok.headers.add("Contact", "<sip:gateway@127.0.0.1:5060>")
    ok_bytes = ok.serialize()

    cases: list[tuple[str, Callable[[], object]]] = [
        ("parse INVITE+SDP (pjsip capture)", lambda: parse_message(invite_bytes)),
        ("parse INVITE + read typed views", lambda: _touch_views(parse_message(invite_bytes))),
        ("serialize INVITE+SDP", invite.serialize),
        ("parse 200 OK+SDP", lambda: parse_message(ok_bytes)),
        ("serialize 200 OK+SDP", ok.serialize),
        ("make_response 200 + serialize", lambda: make_response(invite, 200, to_tag="x").serialize()),
    ]
    rows = []
    for name, fn in cases:
        median, low, high = _median_rate(fn, args.runs, args.seconds)
        rows.append((name, median, low, high))
        print(f"{name:40s} {median:>10,.0f} msg/s  (min {low:,.0f}, max {high:,.0f})")

    command = f".venv/bin/python benchmarks/bench_sip_parser.py --runs {args.runs} --seconds {args.seconds}"
    lines = [
        "# SIP parser throughput",
        "",
        f"- command: `{command}`",
        f"- git revision: {git_revision(_MEASURED_FILES)}",
        f"- python: {platform.python_implementation()} {platform.python_version()}",
        f"- CPU: {cpu_model()} (single thread; the machine was shared with other work, so figures are a floor)",
        f"- method: median of {args.runs} runs of at least {args.seconds} s each; messages per second on one core",
        f"- INVITE: `shared/data/sip/captured/invite-pjsip-2.15.dat` ({len(invite_bytes)} bytes); "
        f"200 OK: its answer built by make_response with the same SDP ({len(ok_bytes)} bytes)",
        "",
        "| case | median msg/s | min | max | µs/msg |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, median, low, high in rows:
        lines.append(f"| {name} | {median:,.0f} | {low:,.0f} | {high:,.0f} | {1e6 / median:.1f} |")
    lines.append("")
    lines.append(
        "parse_message validates what a UAS must check (RFC 3261 §8.2) and caches the typed views it "
        "parsed, so reading them afterwards costs a copy, not a parse."
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
