"""SIPp's built-in UAC against `voicegw serve`: 100 calls at 10 calls/s, none may fail."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import GatewayProcess, run_sipp


def test_sipp_uac_100_calls_at_10_cps(gateway: GatewayProcess, tmp_path: Path) -> None:
    host, port = gateway.sip_addr
    result = run_sipp(
        ["-sn", "uac", f"{host}:{port}", "-s", "echo", "-i", "127.0.0.1", "-m", "100", "-r", "10",
         "-l", "50", "-d", "500"],
        cwd=tmp_path,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stats.get("SuccessfulCall(C)") == "100", result.stats
    assert result.stats.get("FailedCall(C)") == "0", result.stats
    # Every call reached the gateway and ended by the caller's BYE.
    gateway.wait_for_log("call_ended", count=100, timeout=10)
    ended = gateway.logs("call_ended")
    assert len(ended) == 100
    assert {line.get("reason") for line in ended} == {"customer-ended-call"}
