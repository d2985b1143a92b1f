"""RFC 3261 §13.3.1.4: a 200 OK that is never ACKed is retransmitted, then the session ends with a BYE."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import BASE_CONFIG, SIPP_DIR, run_sipp, start_gateway

# T1 = 0.1 s: 64*T1 = 6.4 s until the gateway gives up waiting for the ACK.
FAST_TIMERS = BASE_CONFIG.replace('sip: {listen: "127.0.0.1:{SIP_PORT}"}',
                                  'sip: {listen: "127.0.0.1:{SIP_PORT}", timers: {t1: 0.1, t2: 4.0}}')


def test_unacknowledged_200_is_retransmitted_then_bye(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, FAST_TIMERS)
    try:
        host, port = gateway.sip_addr
        result = run_sipp(
            ["-sf", str(SIPP_DIR / "uac_no_ack.xml"), f"{host}:{port}", "-s", "service", "-i", "127.0.0.1",
             "-m", "1", "-trace_msg", "-message_file", str(tmp_path / "msgs.log")],
            cwd=tmp_path,
            timeout=30,
        )
        assert result.returncode == 0, result.stdout[-2500:]
        messages = (tmp_path / "msgs.log").read_text()
        # The 200 OK came more than once (retransmitted while no ACK arrived), and then a BYE.
        assert messages.count("SIP/2.0 200 OK") >= 4, messages[-3000:]
        assert "BYE sip:" in messages
        ended = gateway.wait_for_log("call_ended", timeout=5)
        assert ended["reason"] == "sip-ack-timeout"
    finally:
        gateway.stop()
