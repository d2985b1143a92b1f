"""Load shedding end to end against `voicegw serve`: a gateway whose playout threshold is 0 (every tick counts as
late, sent from a loop timer or handed to the RTP pacer; one late tick in a second is enough) is overloaded as soon
as one call's media runs. A second SIPp INVITE then gets 503 with Retry-After, OPTIONS is still answered 200, and the established
call goes on to its own BYE untouched. (Overloading a shared 2-core machine for real is neither cheap nor
deterministic; the unit tests cover the real thresholds with a fake clock.)"""

from __future__ import annotations

import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.integration.harness import BASE_CONFIG, run_scenario, sipp_failure, start_gateway

SECURITY = (
    'security: {trusted_sources: ["127.0.0.1/32"], hide_unknown_numbers: false, retry_after: 17, '
    "overload_playout_late_seconds: 0, overload_playout_late_share: 0.02, overload_hold_seconds: 60}"
)
CONFIG = BASE_CONFIG.replace(
    'security: {trusted_sources: ["127.0.0.1/32"], hide_unknown_numbers: false}', SECURITY
)


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _options(addr: tuple[str, int]) -> str:
    """One OPTIONS out of dialog; the status line of the answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{addr[0]}:{addr[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKoverload1;rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{port}>;tag=probe1\r\n"
            f"To: <sip:{addr[0]}:{addr[1]}>\r\n"
            "Call-ID: overload-options-1@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), addr)
        data, _ = sock.recvfrom(65535)
    return data.decode(errors="replace").split("\r\n", 1)[0]


def test_past_the_playout_threshold_new_invites_get_503_while_the_established_call_continues(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, CONFIG, name="overload")
    first_dir, second_dir = tmp_path / "established", tmp_path / "shed"
    first_dir.mkdir()
    second_dir.mkdir()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            established = pool.submit(
                run_scenario, "uac_pause_bye.xml", cwd=first_dir, target=gw.sip_addr, service="echo",
                timeout=40, extra=["-d", "6000"],
            )
            started = gw.wait_for_log("overload_started", timeout=15)
            assert started["signal"] == "playout_lateness", started
            assert _options(gw.sip_addr) == "SIP/2.0 200 OK"  # OPTIONS answers as without load; only draining 503s
            shed = run_scenario("uac_expect_503.xml", cwd=second_dir, target=gw.sip_addr, service="echo")
            assert shed.returncode == 0, sipp_failure(shed, second_dir)
            traced = "".join(p.read_text(errors="replace") for p in second_dir.glob("*_messages.log"))
            assert "SIP/2.0 503" in traced and "Retry-After: 17" in traced, traced[-3000:]
            first = established.result()
        assert first.returncode == 0, sipp_failure(first, first_dir)
        assert first.stats.get("SuccessfulCall(C)") == "1", first.stats
        assert _metric(gw.http_port, 'voicegw_sip_invites_total{outcome="accepted"}') == 1
        assert _metric(gw.http_port, 'voicegw_sip_invites_total{outcome="overloaded"}') == 1
        assert _metric(gw.http_port, 'voicegw_overload_episodes_total{signal="playout_lateness"}') == 1
        # the established call ended by its own BYE, not by the gateway
        ended = gw.wait_for_log("call_ended", timeout=10)
        assert ended["reason"] == "customer-ended-call", ended
    finally:
        gw.stop()
