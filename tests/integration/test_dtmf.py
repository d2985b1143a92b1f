"""DTMF from a real peer reaches the call: RFC 4733 telephone-event packets (SIPp replaying the
sip-tester pcaps) and SIP INFO application/dtmf-relay (SIPp), read back from the gateway's log."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import SIPP_DIR, GatewayProcess, free_port, run_sipp


def test_rfc4733_and_sip_info_digits_arrive(gateway: GatewayProcess, tmp_path: Path) -> None:
    host, port = gateway.sip_addr
    result = run_sipp(
        ["-sf", str(SIPP_DIR / "echo_dtmf.xml"), f"{host}:{port}", "-s", "echo", "-i", "127.0.0.1",
         "-p", str(free_port()), "-mp", str(free_port(also_tcp=False) & ~1), "-m", "1", "-trace_err"],
        cwd=tmp_path,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    stats = gateway.wait_for_log("media_stats", timeout=10)
    digits = [(line["digit"], line["method"]) for line in gateway.logs("dtmf_digit")]
    assert digits == [("1", "rfc4733"), ("#", "rfc4733"), ("7", "sip-info")]
    assert stats["dtmf_digits"] == 3
    assert stats["dropped"] == {}
