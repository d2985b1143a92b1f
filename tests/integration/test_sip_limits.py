"""The gateway's answers to SIP messages beyond its parser limits (RFC 3261 §21.5.14, §18.3).

Over UDP a request that can still be read far enough to answer gets 513 Message Too Large; over TCP a
stream that grows past the limit without a message boundary is closed.
"""

from __future__ import annotations

import socket

from gateway.sip.parser import DEFAULT_LIMITS
from tests.integration.harness import GatewayProcess


def _options(call_id: str, extra: str = "") -> bytes:
    return (
        "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{call_id}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=1\r\n"
        "To: <sip:gw@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _ask(sock: socket.socket, addr: tuple[str, int], data: bytes) -> tuple[int, bytes]:
    sock.sendto(data, addr)
    reply, _ = sock.recvfrom(65535)
    return int(reply.split(b" ", 2)[1]), reply


def test_udp_requests_over_the_limits_get_513_and_just_under_get_answered(gateway: GatewayProcess) -> None:
    max_line = DEFAULT_LIMITS.max_line_length
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind(("127.0.0.1", 0))
        # "X-Long: " is 8 characters: the line is exactly at the limit, then one over.
        status, reply = _ask(
            sock, gateway.sip_addr, _options("line-ok", "X-Long: " + "a" * (max_line - 8) + "\r\n")
        )
        assert status == 200 and b"Call-ID: line-ok" in reply
        status, reply = _ask(
            sock, gateway.sip_addr, _options("line-big", "X-Long: " + "a" * (max_line - 7) + "\r\n")
        )
        assert status == 513 and b"Call-ID: line-big" in reply
        # Six header fields and Content-Length, then padding up to exactly the header count limit.
        under = "".join(f"X-H{i}: v\r\n" for i in range(DEFAULT_LIMITS.max_header_count - 7))
        status, reply = _ask(sock, gateway.sip_addr, _options("count-ok", under))
        assert status == 200 and b"Call-ID: count-ok" in reply
        status, reply = _ask(sock, gateway.sip_addr, _options("count-big", under + "X-One-More: v\r\n"))
        assert status == 513 and b"Call-ID: count-big" in reply


def test_tcp_stream_without_a_message_boundary_is_closed(gateway: GatewayProcess) -> None:
    with socket.create_connection(gateway.sip_addr, timeout=5) as sock:
        sock.sendall(b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n")
        try:
            for _ in range(64):  # 64 KiB of header lines and never the empty line that ends them
                sock.sendall(b"X-Pad: " + b"a" * 1015 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending
        try:
            assert sock.recv(4096) == b""
        except ConnectionResetError:
            pass
    gateway.wait_for_log("sip_transport_error")
