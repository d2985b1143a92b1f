"""An RTP port the gateway wanted is taken by another process: the call moves to the next free port of the pool;
only when none is left is the INVITE refused with 503 + Retry-After (never left without a final response, where
the caller would hang until its timer B)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from tests.integration.harness import GatewayProcess, free_port, run_scenario, sipp_failure, start_gateway


def _squatted_gateway(tmp_path: Path, pool_ports: int) -> tuple[int, socket.socket, GatewayProcess]:
    """A gateway whose RTP pool starts at an even port another socket already holds."""
    rtp = free_port(also_tcp=False)
    rtp -= rtp % 2
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", rtp))
    config = f"""
sip: {{listen: "127.0.0.1:{{SIP_PORT}}"}}
rtp: {{port_min: {rtp}, port_max: {rtp + 2 * pool_ports - 1}}}
http: {{listen: "127.0.0.1:{{HTTP_PORT}}"}}
numbers: [{{number: "echo", echo: true}}]
"""
    return rtp, squatter, start_gateway(tmp_path, config)


def test_a_taken_rtp_port_is_a_503_not_a_silent_call(tmp_path: Path) -> None:
    rtp, squatter, gw = _squatted_gateway(tmp_path, pool_ports=1)
    try:
        result = run_scenario("uac_expect_503.xml", cwd=tmp_path, target=gw.sip_addr, service="echo", timeout=20)
        assert result.returncode == 0, sipp_failure(result, tmp_path)
        line = gw.wait_for_log("rtp_bind_failed")
        assert line["port"] == rtp
        assert gw.wait_for_log("call_ended")["reason"] == "call.start.error-get-transport"
    finally:
        gw.stop()
        squatter.close()


def test_a_taken_rtp_port_is_swapped_for_a_free_one(tmp_path: Path) -> None:
    # Pool: rtp (taken) and rtp + 2 (free). Ports go back to the far end of the pool, so of two calls in a row
    # at least one draws the taken port: both must still be answered, on the free port.
    rtp, squatter, gw = _squatted_gateway(tmp_path, pool_ports=2)
    try:
        for _ in range(2):
            result = run_scenario("uac_signalling_only.xml", cwd=tmp_path, target=gw.sip_addr, service="echo",
                                  timeout=20)
            assert result.returncode == 0, sipp_failure(result, tmp_path)
        swapped = gw.wait_for_log("rtp_port_taken")
        assert (swapped["port"], swapped["next_port"]) == (rtp, rtp + 2)
        assert not gw.logs("rtp_bind_failed")
        # the 200 OKs' SDP names the port actually bound, never the taken one
        traces = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*_messages.log"))
        offered = {int(port) for port in re.findall(r"m=audio (\d+) ", traces)}
        assert rtp + 2 in offered and rtp not in offered
    finally:
        gw.stop()
        squatter.close()
