"""``make fuzz``: run every parser fuzz target under atheris and record what was run.

Each target (``fuzz/targets.py``) runs in its own libFuzzer process, ``--jobs`` at a time, for its share of
``--runs`` inputs, seeded with the RFC 4475 / RFC 5118 torture messages and the captured messages in
``../shared/data/sip/``. A target stops early at ``--max-seconds``. The totals, the time, the command and
the git revision go to stdout and to ``--out``; a crashing or hanging input is kept under ``fuzz/crashes/``
(replay it with ``python -m fuzz.replay FILE``) and makes the run exit non-zero.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fuzz.targets import REPO, TARGETS, seeds

# Share of the total runs per target: the SIP message parser and the stream framer get the most.
WEIGHTS = {
    "sip": 4,
    "sip_amplified": 1,
    "stream": 3,
    "sdp": 3,
    "rtp": 2,
    "rtcp": 2,
    "digest": 2,
    "dtmf_info": 1,
}
# Inputs up to this size: enough for every seed message and to cross the parsers' line limits.
MAX_LEN = {"sip": 16384, "stream": 4096, "sip_amplified": 2048, "sdp": 8192}
CRASHES = REPO / "fuzz" / "crashes"

_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STAT_RUNS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass(slots=True)
class Outcome:
    target: str
    runs: int
    seconds: float
    returncode: int
    artifact: str | None
    excerpt: str


def _run_target(name: str, runs: int, max_seconds: int, workdir: Path) -> Outcome:
    corpus = workdir / name
    corpus.mkdir()
    for i, seed in enumerate(seeds(name)):
        (corpus / f"seed-{i:03d}").write_bytes(seed)
    CRASHES.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "fuzz.worker",
        name,
        f"-runs={runs}",
        f"-max_len={MAX_LEN.get(name, 4096)}",
        f"-max_total_time={max_seconds}",
        "-timeout=10",  # a single input taking 10 s is a hang
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={CRASHES}/{name}-",
        str(corpus),
    ]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, errors="replace", check=False)
    seconds = time.monotonic() - started
    log = proc.stderr + proc.stdout
    executed = _STAT_RUNS.findall(log) or [m[0] for m in _DONE.findall(log)]
    artifact = _ARTIFACT.search(log)
    excerpt = ""
    if proc.returncode != 0:
        lines = log.splitlines()
        start = next(
            (i for i, line in enumerate(lines) if "Uncaught Python exception" in line or "ERROR" in line), 0
        )
        excerpt = "\n".join(lines[start : start + 40])
    return Outcome(
        target=name,
        runs=int(executed[-1]) if executed else 0,
        seconds=seconds,
        returncode=proc.returncode,
        artifact=artifact.group(1) if artifact else None,
        excerpt=excerpt,
    )


def _revision() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "gateway", "fuzz"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")


def _report(outcomes: list[Outcome], total_seconds: float, argv: list[str], jobs: int) -> str:
    total = sum(o.runs for o in outcomes)
    failed = [o for o in outcomes if o.returncode != 0]
    lines = [
        "# Parser fuzzing",
        "",
        f"Command: `python -m fuzz.run {shlex.join(argv)}` (what `make fuzz` runs), atheris/libFuzzer, {jobs} processes",
        f"Revision: {_revision()}",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"**{total:,} inputs in {total_seconds:.0f} s wall time, {len(failed)} failing target(s).**",
        "",
        "Invariant: each parser returns a value or raises its own protocol error, never another exception,",
        "never hangs (libFuzzer -timeout=10 per input) and stays within 2 GiB; accepted input re-serialises and",
        "parses again. Seeds: ../shared/data/sip/rfc4475, rfc5118 and captured messages.",
        "",
        "| target | inputs | seconds | result |",
        "|---|---:|---:|---|",
    ]
    for o in outcomes:
        result = "ok" if o.returncode == 0 else f"FAILED (exit {o.returncode}), reproducer `{o.artifact}`"
        lines.append(f"| {o.target} | {o.runs:,} | {o.seconds:.0f} | {result} |")
    for o in failed:
        lines += ["", f"## {o.target}", "", "```", o.excerpt, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2_000_000, help="total inputs across all targets")
    parser.add_argument("--jobs", type=int, default=2, help="targets fuzzed in parallel")
    parser.add_argument("--max-seconds", type=int, default=600, help="time limit per target")
    parser.add_argument("--targets", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fuzz.md")
    args = parser.parse_args(argv)
    weight = sum(WEIGHTS[t] for t in args.targets)
    shares = {t: max(1, args.runs * WEIGHTS[t] // weight) for t in args.targets}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="voicegw-fuzz-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(_run_target, t, shares[t], args.max_seconds, Path(tmp)) for t in args.targets]
        outcomes = []
        for future in futures:
            outcome = future.result()
            status = "ok" if outcome.returncode == 0 else f"FAILED: {outcome.artifact}"
            print(
                f"{outcome.target}: {outcome.runs:,} inputs in {outcome.seconds:.0f} s {status}", flush=True
            )
            outcomes.append(outcome)
    report = _report(outcomes, time.monotonic() - started, argv, args.jobs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 1 if any(o.returncode != 0 for o in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
