"""The announced address (sip.public_address, for NAT and Docker) is what peers see in Contact and SDP, while
the sockets stay bound to the listen address; OPTIONS advertises what the gateway supports."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.integration.harness import BASE_CONFIG, start_gateway

PUBLIC = BASE_CONFIG.replace(
    'sip: {listen: "127.0.0.1:{SIP_PORT}"}', 'sip: {listen: "127.0.0.1:{SIP_PORT}", public_address: "203.0.113.9:5099"}'
)

INVITE = (
    "INVITE sip:service@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKpub1;rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=pub\r\nTo: <sip:service@127.0.0.1>\r\nCall-ID: pub-1@test\r\n"
    "CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n"
)
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8 0\r\n"
OPTIONS = (
    "OPTIONS sip:service@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKpub2;rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=pub\r\nTo: <sip:service@127.0.0.1>\r\nCall-ID: pub-2@test\r\n"
    "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def _final(sock: socket.socket) -> str:
    while True:
        data, _ = sock.recvfrom(65535)
        text = data.decode()
        if not text.startswith("SIP/2.0 1"):
            return text


def test_contact_and_sdp_use_the_public_address(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, PUBLIC)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            port = sock.getsockname()[1]
            sock.sendto((INVITE.format(port=port, len=len(SDP)) + SDP).encode(), gateway.sip_addr)
            answer = _final(sock)
            assert answer.startswith("SIP/2.0 200"), answer
            assert "Contact: <sip:203.0.113.9:5099>" in answer
            assert "c=IN IP4 203.0.113.9" in answer and "o=- " in answer
            assert "m=audio " in answer and " RTP/AVP 8" in answer  # the offerer's first choice, PCMA, is kept
            # Complete the call so the gateway can stop at once: ACK the 200, then BYE.
            to_line = next(line for line in answer.split("\r\n") if line.startswith("To:"))
            for method, cseq in (("ACK", "1 ACK"), ("BYE", "2 BYE")):
                request = (INVITE.format(port=port, len=0).replace("INVITE sip:", f"{method} sip:", 1)
                           .replace("CSeq: 1 INVITE", f"CSeq: {cseq}").replace("To: <sip:service@127.0.0.1>", to_line)
                           .replace("branch=z9hG4bKpub1", f"branch=z9hG4bKpub{method}")
                           .replace("Content-Type: application/sdp\r\n", ""))
                sock.sendto(request.encode(), gateway.sip_addr)
            assert _final(sock).startswith("SIP/2.0 200")  # the BYE's answer
            gateway.wait_for_log("call_ended", reason="customer-ended-call")
            sock.sendto(OPTIONS.format(port=port).encode(), gateway.sip_addr)
            options = _final(sock)
        assert options.startswith("SIP/2.0 200")
        for header in ("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO", "Accept: application/sdp",
                       "Supported: timer"):
            assert header in options, options
    finally:
        gateway.stop()
