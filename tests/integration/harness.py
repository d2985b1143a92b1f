"""Real-socket test harness: a `voicegw serve` subprocess on free loopback ports, and SIPp runs against it."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
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


def free_rtp_range(size: int = 200) -> tuple[int, int]:
    """A block of even ports, chosen away from the ephemeral range other tests draw from."""
    base = 30000 + (os.getpid() % 500) * 40
    return base, base + size - 1


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        pytest.fail("sipp is not installed: `make test` installs the Debian package sip-tester")
    return path


@dataclass
class GatewayProcess:
    config_path: Path
    sip_port: int
    http_port: int
    proc: subprocess.Popen[bytes]
    log_lines: list[dict[str, object]] = field(default_factory=list)
    _buffer: bytes = b""

    @property
    def sip_addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    def read_logs(self, timeout: float = 0.0) -> list[dict[str, object]]:
        """Collect JSON log lines printed so far (waiting up to ``timeout`` for the first)."""
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        new: list[dict[str, object]] = []
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            if not sel.select(remaining if not new else 0):
                break
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                try:
                    new.append(json.loads(line))
                except ValueError:
                    new.append({"event": "non_json", "text": line.decode("utf-8", "replace")})
        sel.close()
        self.log_lines.extend(new)
        return new

    def wait_for_log(self, event: str, timeout: float = 10.0, **fields: object) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        seen = iter(list(self.log_lines))
        while True:
            for line in seen:
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event!r} log line within {timeout}s; last lines: {self.log_lines[-15:]}")
            seen = iter(self.read_logs(0.2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.read_logs(0)
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


BASE_CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
assistants:
  demo: {firstMessage: "Hello", model: {provider: rules}}
numbers:
  - {number: "echo", echo: true}
  - {number: "service", assistant: demo}
  - {number: "+15550001111", assistant: demo}
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
    cmd = [sipp_binary(), *args, "-nostdin", "-trace_stat", "-stf", str(stat_file), "-fd", "1",
           "-timeout", f"{int(timeout)}s", "-timeout_error"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout + 30, check=False)
    stats: dict[str, str] = {}
    if stat_file.exists():
        rows = [line.split(";") for line in stat_file.read_text().splitlines() if line.strip()]
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1], strict=False))
    return SippResult(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"),
                      stats)
