"""SIGHUP reload of ``voicegw serve --config F``: a number added to F is routable afterwards while a call that
was already up continues to its normal end; a broken F leaves the running config in place."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

import pytest

from tests.integration.harness import (
    BASE_CONFIG,
    GatewayProcess,
    SippResult,
    run_scenario,
    sipp_binary,
    sipp_failure,
    start_gateway,
)

pytestmark = pytest.mark.integration

NEW_NUMBER = "+15550009999"
LAST_ROUTE = '  - {number: "+15550001111", assistant: demo}\n'


def _with_route(text: str, route: str) -> str:
    """``text`` with ``route`` appended to its ``numbers:`` list."""
    assert LAST_ROUTE in text
    return text.replace(LAST_ROUTE, LAST_ROUTE + f"  - {route}\n")

INVITE = (
    "INVITE sip:{user}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=rl\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: {branch}@test\r\n"
    "CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n"
    "\r\n"
)
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


def _final_status(gateway: GatewayProcess, user: str, branch: str) -> int:
    """Send one INVITE to ``user`` and return the status of the final response (ACKed if not 2xx)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto((INVITE.format(user=user, port=port, branch=branch, len=len(SDP)) + SDP).encode(),
                    gateway.sip_addr)
        while True:
            text = sock.recvfrom(65535)[0].decode()
            status = int(text.split(" ", 2)[1])
            if status >= 200:
                break
        to_line = next(line for line in text.split("\r\n") if line.startswith("To:"))
        ack = (f"ACK sip:{user}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=rl\r\n{to_line}\r\nCall-ID: {branch}@test\r\n"
               "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
        sock.sendto(ack.encode(), gateway.sip_addr)
        return status


def _failure(result: SippResult, cwd: Path, gateway: GatewayProcess) -> str:
    return sipp_failure(result, cwd) + f"\n--- gateway\n{gateway.logs()[-30:]}"


def test_sighup_adds_a_number_while_a_call_continues(tmp_path: Path) -> None:
    sipp_binary()  # skips when SIPp is not installed
    gateway = start_gateway(tmp_path, BASE_CONFIG)
    try:
        assert _final_status(gateway, NEW_NUMBER, "before") == 404

        # A call to echo that stays up 8 s, across the reload.
        first_dir = tmp_path / "first"
        first_dir.mkdir()
        results: dict[str, SippResult] = {}
        first = threading.Thread(target=lambda: results.setdefault("first", run_scenario(
            "uac_pause_bye.xml", cwd=first_dir, target=gateway.sip_addr, service="echo", timeout=40,
            extra=["-d", "8000"])))
        first.start()
        gateway.wait_for_log("call_confirmed", timeout=10)

        text = gateway.config_path.read_text()
        gateway.config_path.write_text(_with_route(text, f'{{number: "{NEW_NUMBER}", assistant: demo}}'))
        gateway.proc.send_signal(signal.SIGHUP)
        reloaded = gateway.wait_for_log("config_reloaded", timeout=10)
        assert reloaded["numbers"] == 4 and reloaded["calls_in_progress"] == 1

        second_dir = tmp_path / "second"
        second_dir.mkdir()
        second = run_scenario("uac_pause_bye.xml", cwd=second_dir, target=gateway.sip_addr, service=NEW_NUMBER,
                              timeout=30, extra=["-d", "1000"])
        assert second.returncode == 0, _failure(second, second_dir, gateway)

        # The first call was not touched: it still ends when its caller hangs up.
        first.join(60)
        assert "first" in results, "first SIPp run did not finish"
        assert results["first"].returncode == 0, _failure(results["first"], first_dir, gateway)
        gateway.wait_for_log("call_ended", count=2, reason="customer-ended-call")
        assert not [line for line in gateway.logs("call_ended") if line.get("reason") != "customer-ended-call"]

        # A broken file changes nothing: the failure names the key, the new number still answers.
        gateway.config_path.write_text(_with_route(text, '{number: "+15550008888", assistant: nobody}'))
        gateway.proc.send_signal(signal.SIGHUP)
        failed = gateway.wait_for_log("config_reload_failed", timeout=10)
        assert "numbers.3.assistant" in str(failed["error"])
        assert len(gateway.logs("config_reloaded")) == 1
        third = run_scenario("uac_pause_bye.xml", cwd=tmp_path, target=gateway.sip_addr, service=NEW_NUMBER,
                             timeout=30, extra=["-d", "500"])
        assert third.returncode == 0, _failure(third, tmp_path, gateway)
        assert _final_status(gateway, "+15550008888", "broken") == 404
        assert gateway.proc.poll() is None
    finally:
        assert gateway.stop() == 0


def test_restart_only_setting_is_reported_and_kept(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, BASE_CONFIG)
    try:
        text = gateway.config_path.read_text()
        moved = text.replace(f"127.0.0.1:{gateway.http_port}", "127.0.0.1:1")
        gateway.config_path.write_text(_with_route(moved, f'{{number: "{NEW_NUMBER}", echo: true}}'))
        gateway.proc.send_signal(signal.SIGHUP)
        restart = gateway.wait_for_log("config_reload_restart_needed", timeout=10)
        assert restart["keys"] == ["http.listen"]
        gateway.wait_for_log("config_reloaded", timeout=10)
        # The API still answers where it was bound; the new number is routed.
        with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=5):
            pass
        status = _final_status(gateway, NEW_NUMBER, "echo1")
        assert status == 200
    finally:
        gateway.stop(signal.SIGINT)  # no drain: the echo call just answered is ended at once
