"""What every load benchmark shares: a gateway process on loopback, SIPp runs with their statistics, /proc
sampling of the gateway, /metrics scraping, percentiles, and the results file (table, command, revision,
machine, PNG plots).

Every run is bounded: SIPp gets ``-timeout`` and we kill it when its step ends (also on Ctrl-C or SIGTERM,
which :func:`install_signal_handlers` turns into KeyboardInterrupt so the ``finally`` blocks run). Traffic
stays on 127.0.0.1; RTP ports come from ``tests.integration.harness.free_rtp_range``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.machine import describe_machine, git_head  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    SIPP_DIR,
    GatewayProcess,
    free_port,
    free_rtp_range,
    sipp_binary,
    start_gateway,
)

RESULTS = REPO / "benchmarks" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CAVEAT = (
    "**Single run** on a 2-CPU machine with SIPp (the load) on the same cores; the load average when it started "
    "is on the machine line. The issue's goals ask for medians of repeated runs: repeat before quoting."
)


def repeated_caveat(runs: int) -> str:
    """The caveat of a result that repeats each step ``runs`` times (the issue asks for medians of repeats)."""
    return (f"**Median of {runs} runs** per step (each run a fresh gateway, the runs interleaved step by step) on a "
            "2-CPU machine with SIPp (the load) on the same cores; every run's row is below the medians, the "
            "load average when the first started is on the machine line.")


# ---------------------------------------------------------------------------------------------- statistics


def median_finite(values: Sequence[float]) -> float:
    """The median of the values that are numbers (a run that measured nothing gives NaN); NaN for none."""
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; NaN for no values."""
    if not values:
        return math.nan
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside 0..1")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return float(ordered[rank - 1])


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int, proc: Path = Path("/proc")) -> int:
    """Resident set size (second field of /proc/<pid>/statm, in pages)."""
    return int((proc / str(pid) / "statm").read_text().split()[1]) * PAGE_SIZE


def open_fds(pid: int, proc: Path = Path("/proc")) -> int:
    return len(os.listdir(proc / str(pid) / "fd"))


def tcp_connections_to(pid: int, ports: set[int], proc: Path = Path("/proc")) -> int:
    """The process's TCP sockets connected to any of ``ports`` (IPv4 or IPv6, any state but listening): its
    sockets' inodes from /proc/<pid>/fd matched against /proc/<pid>/net/tcp{,6}."""
    inodes = set()
    for fd in os.listdir(proc / str(pid) / "fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(proc / str(pid) / "fd" / fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (proc / str(pid) / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and fields[3] != "0A" and int(fields[2].rsplit(":", 1)[1], 16) in ports:
                    count += 1
    return count


@dataclass
class CpuWindow:
    """CPU share of one process between :meth:`start` and :meth:`stop` (100 = one core)."""

    pid: int
    t0: float = 0.0
    c0: float = 0.0
    t1: float = 0.0
    c1: float = 0.0

    def start(self) -> None:
        self.t0, self.c0 = time.monotonic(), cpu_seconds(self.pid)

    def stop(self) -> None:
        self.t1, self.c1 = time.monotonic(), cpu_seconds(self.pid)

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    @property
    def core_pct(self) -> float:
        return 100.0 * (self.c1 - self.c0) / self.seconds if self.seconds > 0 else math.nan


# ---------------------------------------------------------------------------------------------- /metrics


def scrape(http_port: int, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=timeout) as response:
        return str(response.read().decode())


def _sample_labels(line: str) -> tuple[str, dict[str, str], float]:
    head, _, value = line.rpartition(" ")
    name, _, rest = head.partition("{")
    labels: dict[str, str] = {}
    for part in rest.rstrip("}").split(","):
        if "=" in part:
            key, _, val = part.partition("=")
            labels[key.strip()] = val.strip().strip('"')
    return name, labels, float(value)


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of one sample in a Prometheus exposition (NaN when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        sample, got, value = _sample_labels(line)
        if sample == name and all(got.get(k) == v for k, v in (labels or {}).items()):
            return value
    return math.nan


def histogram_buckets(text: str, name: str, labels: Mapping[str, str] | None = None) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` pairs of a histogram, sorted by ``le``."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "_bucket"):
            continue
        _, got, value = _sample_labels(line)
        if all(got.get(k) == v for k, v in (labels or {}).items()):
            out.append((float(got["le"]), value))
    return sorted(out)


def bucket_delta(after: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Observations between two scrapes of the same histogram."""
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Upper bound of the bucket holding quantile ``q`` (an upper bound on the true value; inf past the last)."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return math.inf


# ---------------------------------------------------------------------------------------------- SIPp


def parse_sipp_stats(text: str) -> list[dict[str, str]]:
    """Rows of a SIPp ``-trace_stat`` CSV (``;``-separated, header first)."""
    rows = [line.rstrip(";").split(";") for line in text.splitlines() if line.strip()]
    if len(rows) < 2:
        return []
    header = rows[0]
    return [dict(zip(header, row, strict=False)) for row in rows[1:]]


def parse_sipp_rtt(text: str) -> list[float]:
    """Response times in ms from a SIPp ``-trace_rtt`` CSV (``Date_ms;response_time_ms;rtd_no``)."""
    values = []
    for line in text.splitlines():
        parts = line.strip().rstrip(";").split(";")
        if len(parts) < 2:
            continue
        try:
            values.append(float(parts[1]))
        except ValueError:
            continue  # the header
    return values


def _count(row: Mapping[str, str], key: str) -> int:
    try:
        return int(row.get(key, "0") or 0)
    except ValueError:
        return 0


@dataclass
class SippRun:
    """One SIPp process driven in the background; its stat and rtt files live in ``work``."""

    proc: subprocess.Popen[bytes]
    work: Path
    stat_file: Path
    stderr_file: Path | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def wait(self, timeout: float) -> int | None:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            rc = None
        self.ended = self.ended or time.monotonic()
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.ended = self.ended or time.monotonic()

    def check_running(self) -> None:
        """Raise if SIPp has exited (a port taken between our probe and its bind, a bad argument): a benchmark
        must not go on measuring an idle gateway. The message carries the end of SIPp's error output."""
        if self.proc.poll() is None:
            return
        errors = self.stderr_file.read_text(errors="replace").strip() if self.stderr_file.exists() else ""
        raise RuntimeError(f"SIPp exited with status {self.proc.returncode}: {errors[-300:] or 'no error output'}")

    def stats(self) -> dict[str, str]:
        rows = parse_sipp_stats(self.stat_file.read_text()) if self.stat_file.exists() else []
        return rows[-1] if rows else {}

    def succeeded(self) -> int:
        return _count(self.stats(), "SuccessfulCall(C)")

    def failed(self) -> int:
        return _count(self.stats(), "FailedCall(C)")

    def setup_times_ms(self) -> list[float]:
        values: list[float] = []
        for path in sorted(self.work.glob(f"{self.stat_file.stem.removesuffix('_stat')}*_rtt.csv")):
            values += parse_sipp_rtt(path.read_text())
        return values


@contextlib.contextmanager
def sipp(
    scenario: Path,
    gateway: GatewayProcess,
    work: Path,
    *,
    service: str,
    calls: int,
    rate: float,
    limit: int | None = None,
    timeout: float,
    extra: Sequence[str] = (),
) -> Iterator[SippRun]:
    """Run ``scenario`` against ``gateway`` in the background; killed on exit from the block."""
    tag = f"{scenario.stem}_{time.monotonic_ns()}"
    # SIPp names its rtt file after the scenario file: give each run its own copy so files never mix.
    own = work / f"{tag}.xml"
    own.write_text(scenario.read_text())
    stat_file = work / f"{tag}_stat.csv"
    cmd = [sipp_binary(), "-sf", str(own), f"127.0.0.1:{gateway.sip_port}", "-s", service,
           "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port(also_tcp=False) & ~1),
           "-key", "rtp_port", str(free_port(also_tcp=False)),
           "-m", str(calls), "-r", f"{rate:g}", "-l", str(limit if limit is not None else calls),
           "-nostdin", "-trace_stat", "-stf", str(stat_file), "-fd", "1",
           "-trace_rtt", "-rtt_freq", "1", "-timeout", f"{int(timeout)}s", *extra]
    stderr_file = work / f"{tag}_stderr.log"
    with stderr_file.open("wb") as stderr:
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=stderr)
    run = SippRun(proc, work, stat_file, stderr_file)
    try:
        yield run
    finally:
        run.stop()


def echo_scenario(work: Path, wav: Path, seconds: float, name: str = "echo") -> Path:
    """tests/sipp/echo_rtp_stream.xml filled in: PCMU ``wav`` looped with rtp_stream for ``seconds``."""
    path = work / f"{name}.xml"
    path.write_text(
        (SIPP_DIR / "echo_rtp_stream.xml").read_text().replace("{WAV}", str(wav)).replace("{LOOPS}", "-1")
        .replace("{PT}", "0").replace("{CODEC}", "PCMU").replace("{PAUSE_MS}", str(int(seconds * 1000)))
    )
    return path


def speech_wav(work: Path, text: str, name: str = "speech", pad: tuple[float, float] | None = None) -> Path:
    """espeak-ng speech as an 8 kHz mu-law WAV (optionally padded with silence before/after, in seconds)."""
    raw, out = work / f"{name}_raw.wav", work / f"{name}_ulaw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    extra = ["pad", f"{pad[0]:g}", f"{pad[1]:g}"] if pad else []
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-e", "u-law", str(out), *extra], check=True,
                   capture_output=True)
    return out


# ---------------------------------------------------------------------------------------------- gateway


@contextlib.contextmanager
def gateway(work: Path, config: str, *, name: str, rtp_ports: int = 1000) -> Iterator[GatewayProcess]:
    """A ``voicegw serve`` process with ``rtp_ports`` RTP ports from free_rtp_range; stopped on exit."""
    low, high = free_rtp_range(rtp_ports)
    gw = start_gateway(work, config.replace("{RTP_MIN}", str(low)).replace("{RTP_MAX}", str(high)), name=name)
    try:
        yield gw
    finally:
        gw.stop()


def install_signal_handlers() -> None:
    """SIGTERM (and SIGHUP) end a run like Ctrl-C: KeyboardInterrupt unwinds through every ``finally``."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


# ---------------------------------------------------------------------------------------------- results


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line(argv: Sequence[str] | None = None) -> str:
    args = list(sys.argv if argv is None else argv)
    script = Path(args[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(REPO)
    return " ".join([".venv/bin/python", str(script), *args[1:]])


def write_result(
    path: Path,
    *,
    title: str,
    sections: Sequence[str],
    plots: Sequence[Path] = (),
    command: str | None = None,
    revision: str | None = None,
    machine: str | None = None,
    caveat: str | None = None,
) -> Path:
    """``path``: a markdown file with the title, the single-run caveat, the exact command, the revision, the
    machine, then ``sections`` (tables and notes) and links to ``plots`` (relative to the file)."""
    parts = [
        f"# {title}",
        "",
        caveat or CAVEAT,
        "",
        f"- command: `{command or command_line()}`",
        f"- revision: `{revision or git_head()}`",
        f"- machine: {machine or describe_machine()}",
        "",
        *[section + "\n" for section in sections],
    ]
    for plot in plots:
        rel = os.path.relpath(plot, path.parent)
        parts.append(f"![{plot.stem}]({rel})\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts).rstrip() + "\n")
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lines(path: Path, x: Sequence[float], series: Mapping[str, Sequence[float]], *, title: str,
               xlabel: str, ylabel: str) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ys in series.items():
        ax.plot(list(x), list(ys), marker="o", label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_cdf(path: Path, series: Mapping[str, Sequence[float]], *, title: str, xlabel: str) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in series.items():
        ordered = sorted(v for v in values if not math.isnan(v))
        if ordered:
            ax.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post", label=label)
    ax.set(title=title, xlabel=xlabel, ylabel="fraction <= x", ylim=(0, 1.02))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# Echo line and the rules demo assistant; loopback is a trusted source (no per-source rate limit) and the
# concurrent-call cap is above every step, so what limits a run is the gateway, not its admission policy.
BENCH_CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
security: {trusted_sources: ["127.0.0.0/8"], max_calls: 5000}
assistants:
  demo: {firstMessage: "Hello", model: {provider: rules}, silenceTimeoutSeconds: 600}
numbers:
  - {number: "echo", echo: true}
log: {level: info}
"""
