"""Graceful lifecycle under many calls: SIPp places N short calls (INVITE/200/ACK/BYE with SDP, so every call
takes RTP ports, a media endpoint and its tasks); all succeed, and afterwards the gateway holds exactly the file
descriptors, asyncio tasks and RTP ports it held before (after a warm-up batch). The default suite runs 500
calls; `make bench` runs the 10,000-call version (issue: "no growth in open fds, tasks or RTP ports")."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import (
    BASE_CONFIG,
    SIPP_DIR,
    GatewayProcess,
    free_port,
    run_sipp,
    start_gateway,
)

pytestmark = pytest.mark.integration

CONFIG = BASE_CONFIG.replace("log: {level: info}", "log: {level: warning, levels: {app: info}}")
assert CONFIG != BASE_CONFIG


def _gauge(gateway: GatewayProcess, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{gateway.http_port}/metrics", timeout=5).text
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    assert seen, f"{name} missing from /metrics"
    return total


def _snapshot(gateway: GatewayProcess) -> dict[str, float]:
    """Once the gateway is idle: no call up, and the task gauge (refreshed once a second) stable."""
    deadline = time.monotonic() + 20
    while _gauge(gateway, "voicegw_calls_active") > 0:
        assert time.monotonic() < deadline, "calls still up 20 s after SIPp finished"
        time.sleep(0.2)
    time.sleep(2.5)  # ended calls' last tasks finish; the probe refreshes the task gauge (twice by now)
    return {
        "fds": len(os.listdir(f"/proc/{gateway.proc.pid}/fd")),
        "tasks": _gauge(gateway, "voicegw_asyncio_tasks"),
        "rtp_ports": _gauge(gateway, "voicegw_rtp_ports_in_use"),
    }


def _calls(gateway: GatewayProcess, tmp_path: Path, count: int, rate: int) -> None:
    result = run_sipp(
        ["-sf", str(SIPP_DIR / "uac_signalling_only.xml"), f"127.0.0.1:{gateway.sip_port}", "-s", "echo",
         "-i", "127.0.0.1", "-m", str(count), "-r", str(rate), "-l", "100", "-trace_err",
         # the offered media port: nobody listens there, the echo line has nothing to echo
         "-key", "rtp_port", str(free_port(also_tcp=False))],
        cwd=tmp_path,
        timeout=count / rate + 60,
    )
    problems = [line for line in gateway.log_lines if line.get("level") in ("warning", "error")]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + f"\ngateway: {problems[-20:]}"
    assert int(result.stats["SuccessfulCall(C)"]) == count and int(result.stats["FailedCall(C)"]) == 0


def _no_growth(tmp_path: Path, count: int, rate: int) -> None:
    gateway = start_gateway(tmp_path, CONFIG)
    try:
        _calls(gateway, tmp_path, 100, 100)  # warm-up: lazily built things (codecs, caches, pools) exist now
        before = _snapshot(gateway)
        _calls(gateway, tmp_path, count, rate)
        after = _snapshot(gateway)
        assert before["rtp_ports"] == after["rtp_ports"] == 0
        assert after["fds"] <= before["fds"], (before, after)
        assert after["tasks"] <= before["tasks"], (before, after)
        assert gateway.proc.poll() is None
    finally:
        gateway.stop()


def test_five_hundred_calls_leave_no_fds_tasks_or_ports_behind(tmp_path: Path) -> None:
    _no_growth(tmp_path, 500, 100)


@pytest.mark.slow
def test_ten_thousand_calls_leave_no_fds_tasks_or_ports_behind(tmp_path: Path) -> None:
    _no_growth(tmp_path, 10_000, 100)
