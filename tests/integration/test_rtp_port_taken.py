"""An RTP port the gateway wanted is taken by another process: the INVITE is refused with 503 + Retry-After
instead of being left without a final response (the caller would otherwise hang until its timer B)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.integration.harness import free_port, run_scenario, sipp_failure, start_gateway


def test_a_taken_rtp_port_is_a_503_not_a_silent_call(tmp_path: Path) -> None:
    rtp = free_port(also_tcp=False)
    rtp -= rtp % 2
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", rtp))
    config = f"""
sip: {{listen: "127.0.0.1:{{SIP_PORT}}"}}
rtp: {{port_min: {rtp}, port_max: {rtp + 1}}}
http: {{listen: "127.0.0.1:{{HTTP_PORT}}"}}
numbers: [{{number: "echo", echo: true}}]
"""
    gw = start_gateway(tmp_path, config)
    try:
        result = run_scenario("uac_expect_503.xml", cwd=tmp_path, target=gw.sip_addr, service="echo", timeout=20)
        assert result.returncode == 0, sipp_failure(result, tmp_path)
        line = gw.wait_for_log("rtp_bind_failed")
        assert line["port"] == rtp
        assert gw.wait_for_log("call_ended")["reason"] == "call.start.error-get-transport"
    finally:
        gw.stop()
        squatter.close()
