"""Abuse at the SIP edge against `voicegw serve`: a SIPVicious scan learns nothing about which numbers exist and
moves the limit counters, and a SIPp INVITE flood from one untrusted address (127.0.0.2) is shed while calls from
the trusted trunk address (127.0.0.1) all succeed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.harness import GatewayProcess, run_sipp, start_gateway

NUMBERS = "".join(f'  - {{number: "{n}", echo: true}}\n' for n in range(100, 106))
CONFIG = """
sip: {listen: "127.0.0.1:{SIP_PORT}"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
numbers:
""" + NUMBERS + """
security: SECURITY
log: {level: info}
"""
# The carrier lives elsewhere: 127.0.0.1 is an untrusted source like any address on the internet.
HARDENED = '{trusted_sources: ["192.0.2.0/24"], rate: 10, burst: 20, reject_seconds: 3}'
# The control: what a scan finds on a gateway without the protections (every source allowed, 404 for unknown).
OPEN = "{untrusted: allow, hide_unknown_numbers: false, scanner_user_agents: []}"
EXTENSION_RE = re.compile(r"\|\s*(\d+)\s*\|\s*(\w+)\s*\|")
CONFIGURED = {str(n) for n in range(100, 106)}


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install sipvicious (in the dev extra)")
    return found


def _svwar(gw: GatewayProcess, *args: str) -> str:
    cmd = [_tool("sipvicious_svwar"), *args, "--maximumtime=3", f"udp://127.0.0.1:{gw.sip_port}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


def _extensions(output: str) -> dict[str, str]:
    """svwar's result table: extension -> how it judged it (noauth, reqauth, weird)."""
    return dict(EXTENSION_RE.findall(output))


def _metric(gw: GatewayProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_svwar_finds_the_numbers_of_an_open_gateway(tmp_path: Path) -> None:
    """The control experiment: the scan below is able to see extensions when nothing hides them."""
    gw = start_gateway(tmp_path, CONFIG.replace("SECURITY", OPEN), name="open")
    try:
        found = _extensions(_svwar(gw, "-c", "-m", "INVITE", "-e", "98-108"))
    finally:
        gw.stop()
    assert {ext for ext, verdict in found.items() if verdict in ("noauth", "reqauth")} == CONFIGURED


def test_sipvicious_scan_learns_nothing_and_trips_the_limits(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, CONFIG.replace("SECURITY", HARDENED), name="hardened")
    try:
        # svmap announces itself (User-Agent: friendly-scanner): dropped, so there is no SIP device to map.
        svmap = subprocess.run([_tool("sipvicious_svmap"), "-p", str(gw.sip_port), "127.0.0.1"],
                               capture_output=True, text=True, timeout=60, check=False)
        assert "found nothing" in svmap.stdout + svmap.stderr, svmap.stdout + svmap.stderr
        # svwar in compact form sends no User-Agent: it is answered, and every number gets the same answer.
        for method in ("INVITE", "REGISTER"):
            output = _svwar(gw, "-c", "--force", "-m", method, "-e", "95-115")
            assert not _extensions(output), output
        # Fast and long: over the rate, svwar meets 503s (then silence) and calls every extension from there on
        # "weird", configured or not: nothing it lists tells the numbers apart.
        found = _extensions(_svwar(gw, "-c", "--force", "-m", "OPTIONS", "-e", "1-300"))
        assert set(found.values()) <= {"weird"}, found
        assert len(found.keys() - CONFIGURED) >= 100, found  # the 6 real numbers drown among the unconfigured
        assert _metric(gw, 'voicegw_sip_messages_dropped_total{reason="scanner"}') >= 1
        assert _metric(gw, "voicegw_sip_requests_limited_total") >= 1
        assert _metric(gw, 'voicegw_sip_invites_total{outcome="forbidden"}') >= 1
        assert _metric(gw, 'voicegw_sip_invites_total{outcome="accepted"}') == 0
        assert gw.logs("sip_source_limited")
    finally:
        gw.stop()


def test_invite_flood_from_one_source_is_shed_while_the_trunk_calls_all_succeed(tmp_path: Path) -> None:
    security = '{trusted_sources: ["127.0.0.1/32"], rate: 20, burst: 40, reject_seconds: 2}'
    gw = start_gateway(tmp_path, CONFIG.replace("SECURITY", security), name="flood")
    host, port = gw.sip_addr
    flood_dir, trunk_dir = tmp_path / "flood", tmp_path / "trunk"
    flood_dir.mkdir()
    trunk_dir.mkdir()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            flood = pool.submit(
                run_sipp,
                ["-sn", "uac", f"{host}:{port}", "-s", "100", "-i", "127.0.0.2", "-m", "1500", "-r", "300",
                 "-l", "1500", "-recv_timeout", "3000"],
                cwd=flood_dir, timeout=15,
            )
            trunk = pool.submit(
                run_sipp,
                ["-sn", "uac", f"{host}:{port}", "-s", "101", "-i", "127.0.0.1", "-m", "30", "-r", "10",
                 "-l", "30", "-d", "300"],
                cwd=trunk_dir, timeout=30,
            )
            trunk_result, flood_result = trunk.result(), flood.result()
        assert trunk_result.returncode == 0, trunk_result.stdout[-3000:] + trunk_result.stderr[-2000:]
        assert trunk_result.stats.get("SuccessfulCall(C)") == "30", trunk_result.stats
        assert trunk_result.stats.get("FailedCall(C)") == "0", trunk_result.stats
        assert flood_result.stats.get("SuccessfulCall(C)") in (None, "0"), flood_result.stats
        shed = _metric(gw, 'voicegw_sip_requests_limited_total{action="503"}')
        dropped = _metric(gw, 'voicegw_sip_requests_limited_total{action="drop"}')
        assert shed >= 1 and dropped >= 1, (shed, dropped)
        # the flood's INVITEs that got a token were refused by the ACL, never routed to a call
        assert _metric(gw, 'voicegw_sip_invites_total{outcome="accepted"}') == 30
        assert len(gw.logs("sip_source_limited")) <= 4  # one line per decision, not per packet
    finally:
        gw.stop()
