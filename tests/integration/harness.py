"""Real-socket test harness: a `voicegw serve` subprocess on free loopback ports, and SIPp runs against it."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SIPP_DIR = REPO / "tests" / "sipp"
SHARED_SIP = REPO.parent / "shared" / "data" / "sip"
STARTUP_TIMEOUT = 20.0


def free_port(kind: int = socket.SOCK_DGRAM, *, also_tcp: bool = True) -> int:
    """A port free for UDP (and TCP) on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not also_tcp:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


RTP_AREA = (30000, 32767)  # above baresip's RTP ports (10000-29999), below the kernel's ephemeral ports
_rtp_blocks = itertools.count()


def free_rtp_range(size: int = 200) -> tuple[int, int]:
    """A block of ports for one gateway, inside RTP_AREA: never in the kernel's ephemeral range (32768+), where
    any client socket of any process may already hold a port; consecutive gateways of one test run get
    different blocks (two gateways behind a proxy), the pid spreads parallel runs, and a block where another
    process (a second test run, a benchmark) holds a port right now is skipped."""
    slots = (RTP_AREA[1] - RTP_AREA[0] + 1) // size
    first = os.getpid() + next(_rtp_blocks)
    for k in range(slots):
        base = RTP_AREA[0] + ((first + k) % slots) * size
        if _all_bindable(base, base + size - 1):
            for _ in range(k):
                next(_rtp_blocks)  # the next gateway of this run starts after the block taken now
            return base, base + size - 1
    base = RTP_AREA[0] + (first % slots) * size
    return base, base + size - 1  # every block busy: the gateway moves past taken ports itself


def _all_bindable(low: int, high: int) -> bool:
    for port in range(low, high + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail("sipp is not installed: `make test` installs the Debian package sip-tester")
    return path


@dataclass
class GatewayProcess:
    """A running gateway; a reader thread drains its stdout continuously (a full pipe would stall it)."""

    config_path: Path
    sip_port: int
    http_port: int
    proc: subprocess.Popen[bytes]
    log_lines: list[dict[str, object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "non_json", "text": raw.decode("utf-8", "replace").rstrip()}
            with self._lock:
                self.log_lines.append(line)

    @property
    def sip_addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    def logs(self, event: str | None = None) -> list[dict[str, object]]:
        with self._lock:
            lines = list(self.log_lines)
        return [line for line in lines if event is None or line.get("event") == event]

    def wait_for_log(self, event: str, timeout: float = 10.0, count: int = 1, **fields: object) -> dict[str, object]:
        """Wait until ``count`` lines with ``event`` (and ``fields``) were logged; returns the last."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.logs(event) if all(line.get(k) == v for k, v in fields.items())]
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(
                    f"{len(found)}/{count} {event!r} log lines within {timeout}s; last lines: {self.logs()[-15:]}"
                )
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode


def start_gateway(tmp_path: Path, config_text: str, *, name: str = "gw") -> GatewayProcess:
    sip_port = free_port()
    http_port = free_port(socket.SOCK_STREAM, also_tcp=False)
    port_min, port_max = free_rtp_range()
    text = (
        config_text.replace("{SIP_PORT}", str(sip_port))
        .replace("{HTTP_PORT}", str(http_port))
        .replace("{RTP_MIN}", str(port_min))
        .replace("{RTP_MAX}", str(port_max))
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    gw = GatewayProcess(path, sip_port, http_port, proc)
    try:
        gw.wait_for_log("gateway_started", timeout=STARTUP_TIMEOUT)
    except AssertionError:
        gw.stop(signal.SIGKILL)
        raise
    return gw


def start_default_gateway(tmp_path: Path) -> GatewayProcess:
    """``voicegw serve`` with no ``--config``: the embedded default (as ``make run``), on free ports."""
    sip_port = free_port()
    http_port = free_port(socket.SOCK_STREAM, also_tcp=False)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VOICEGW_SIP_LISTEN": f"127.0.0.1:{sip_port}",
           "VOICEGW_HTTP_LISTEN": f"127.0.0.1:{http_port}"}
    for key in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "ELEVENLABS_API_KEY"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
        env=env,
    )
    gw = GatewayProcess(tmp_path / "default", sip_port, http_port, proc)
    try:
        gw.wait_for_log("gateway_started", timeout=STARTUP_TIMEOUT)
    except AssertionError:
        gw.stop(signal.SIGKILL)
        raise
    return gw


BASE_CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
assistants:
  demo: {firstMessage: "Hello", model: {provider: rules}, silenceTimeoutSeconds: 600}
numbers:
  - {number: "echo", echo: true}
  - {number: "service", assistant: demo}
  - {number: "+15550001111", assistant: demo}
# The test client is a trusted trunk (never rate-limited); RFC 4475 outcomes are written for a UAS answering 404.
security: {trusted_sources: ["127.0.0.1/32"], hide_unknown_numbers: false}
log: {level: info}
"""


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    stats: dict[str, str]


def run_sipp(
    args: list[str],
    *,
    cwd: Path,
    timeout: float = 120.0,
) -> SippResult:
    """Run SIPp to completion (bounded by -timeout and our own timeout); parse its final statistics."""
    stat_file = cwd / f"sipp_stats_{time.monotonic_ns()}.csv"
    # SIPp's default local port is 5060: give every run its own so tests never collide with each other or with
    # a gateway someone runs on this machine.
    local = [] if "-p" in args else ["-p", str(free_port())]
    cmd = [sipp_binary(), *args, *local, "-nostdin", "-trace_stat", "-stf", str(stat_file), "-fd", "1",
           "-timeout", f"{int(timeout)}s", "-timeout_error"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout + 30, check=False)
    stats: dict[str, str] = {}
    if stat_file.exists():
        rows = [line.split(";") for line in stat_file.read_text().splitlines() if line.strip()]
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1], strict=False))
    return SippResult(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"),
                      stats)


def run_scenario(
    scenario: str,
    *,
    cwd: Path,
    target: tuple[str, int] | None = None,
    service: str = "service",
    calls: int = 1,
    timeout: float = 30.0,
    extra: list[str] | None = None,
) -> SippResult:
    """Run ``tests/sipp/<scenario>`` once (``calls`` times), tracing messages and errors into ``cwd``.

    ``target`` is the gateway for a UAC scenario; a UAS scenario (target None) listens where the caller says
    (``extra=["-p", str(port)]``). ``[rtp_port]`` in the scenario's SDP is a free port nobody listens on:
    these runs check signalling, not audio.
    """
    args = ["-sf", str(SIPP_DIR / scenario), "-i", "127.0.0.1", "-m", str(calls),
            "-key", "rtp_port", str(free_port(also_tcp=False)), "-trace_msg", "-trace_err"]
    if target is not None:
        args += [f"{target[0]}:{target[1]}", "-s", service]
    return run_sipp([*args, *(extra or [])], cwd=cwd, timeout=timeout)


def sipp_failure(result: SippResult, cwd: Path | None = None) -> str:
    """What to show when a SIPp run did not exit 0: its errors and the last messages it traced."""
    traced = ""
    if cwd is not None:
        for log in sorted(cwd.glob("*_messages.log")) + sorted(cwd.glob("*_errors.log")):
            traced += f"\n--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
    return f"exit {result.returncode}\n{result.stderr[-2000:]}{traced}"
