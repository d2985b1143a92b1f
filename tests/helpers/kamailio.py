"""Kamailio (Debian ``kamailio``) as a real SIP load balancer in front of gateways on loopback.

:func:`start_kamailio` runs ``deploy/kamailio/kamailio.cfg`` unchanged: every deployment value in it is a
``#!define`` overridden here with ``-A`` (listen address and port, dispatcher list, ctl socket, probe
interval, transaction timers). The dispatcher list is the shipped ``deploy/kamailio/dispatcher.list`` with
its destinations rewritten to the gateways under test, so its flags and priorities are the ones tested.
Kamailio stays in the foreground (``-DD``), logs to stderr (``-E``), which a thread drains into
:attr:`KamailioProcess.lines`, and keeps its runtime files in the test's directory (``-Y``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_DIR = REPO / "deploy" / "kamailio"
KAMAILIO_CFG = KAMAILIO_DIR / "kamailio.cfg"
DISPATCHER_LIST = KAMAILIO_DIR / "dispatcher.list"
_DESTINATION = re.compile(r"^(\s*\d+\s+)(\S+)(.*)$")


def kamailio_binary() -> str | None:
    """The kamailio binary (it lives in /usr/sbin, often not on a user's PATH), or None."""
    return shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")


def dispatcher_list_for(destinations: list[str], template: Path = DISPATCHER_LIST) -> str:
    """The shipped dispatcher list with its destination URIs replaced, in order, by ``destinations``."""
    out: list[str] = []
    remaining = list(destinations)
    for line in template.read_text().splitlines():
        match = _DESTINATION.match(line)
        if match is None or line.lstrip().startswith("#"):
            out.append(line)
            continue
        if not remaining:
            raise ValueError(f"{template} lists more destinations than the {len(destinations)} given")
        out.append(f"{match.group(1)}{remaining.pop(0)}{match.group(3)}")
    if remaining:
        raise ValueError(f"{template} lists fewer destinations than the {len(destinations)} given")
    return "\n".join(out) + "\n"


@dataclass
class KamailioProcess:
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip())

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def log(self, contains: str | None = None) -> list[str]:
        with self._lock:
            lines = list(self.lines)
        return [line for line in lines if contains is None or contains in line]

    def wait_for_log(self, *contains: str, timeout: float) -> str:
        """The first line holding any of ``contains``, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log() if any(text in line for text in contains)]
            if found:
                return found[0]
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"kamailio logged none of {contains} within {timeout}s:\n{self.tail()}")
            time.sleep(0.02)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log()[-n:])

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the main process (it stops its children), SIGKILL its process group if that hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode


def options_ping(addr: tuple[str, int], *, timeout: float = 0.5) -> str | None:
    """Send one OPTIONS for the proxy itself; the status line of the answer, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        local = sock.getsockname()
        branch = f"z9hG4bK{time.monotonic_ns()}"
        request = (
            f"OPTIONS sip:{addr[0]}:{addr[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{local[0]}>;tag=probe\r\n"
            f"To: <sip:{addr[0]}:{addr[1]}>\r\n"
            f"Call-ID: {branch}@{local[0]}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), addr)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
    return data.split(b"\r\n", 1)[0].decode("utf-8", "replace")


def start_kamailio(
    workdir: Path,
    port: int,
    destinations: list[str],
    *,
    ping_interval: int = 1,
    fr_timer_ms: int = 1000,
    children: int = 2,
    startup_timeout: float = 15.0,
) -> KamailioProcess:
    """Kamailio on 127.0.0.1:``port`` (UDP and TCP) dispatching to ``destinations`` (SIP URIs)."""
    binary = kamailio_binary()
    if binary is None:
        pytest.fail("kamailio is not installed: `make test` installs the Debian package kamailio")
    workdir.mkdir(parents=True, exist_ok=True)
    ds_list = workdir / "dispatcher.list"
    ds_list.write_text(dispatcher_list_for(destinations))
    defines = {
        "LISTEN_ADDR": "127.0.0.1",
        "LISTEN_PORT": str(port),
        "DISPATCHER_LIST": f'"{ds_list}"',
        "CTL_SOCKET": f'"unix:{workdir / "ctl.sock"}"',
        "DS_PING_INTERVAL": str(ping_interval),
        "FR_TIMER": str(fr_timer_ms),
        "CHILDREN": str(children),
        "LOG_LEVEL": "2",
    }
    cmd = [binary, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-Y", str(workdir), "-m", "64", "-M", "8"]
    for name, value in defines.items():
        cmd += ["-A", f"{name}={value}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=workdir, start_new_session=True)
    kam = KamailioProcess(proc, port, workdir)
    deadline = time.monotonic() + startup_timeout
    while True:
        if proc.poll() is not None:
            kam.stop()
            pytest.fail(f"kamailio exited with {proc.returncode}:\n{kam.tail()}")
        status = options_ping(kam.addr)
        if status is not None and " 200 " in status:
            return kam
        if time.monotonic() > deadline:
            kam.stop()
            pytest.fail(f"kamailio did not answer OPTIONS within {startup_timeout}s:\n{kam.tail()}")
