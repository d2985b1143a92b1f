"""A call over SIP/TLS with SDES-keyed SRTP between two gateways (RFC 3261 §26.2, RFC 4568, RFC 3711).

B listens for TLS with a certificate from a throwaway CA and routes ``echo`` with ``srtp: require``;
A dials it through a trunk with ``transport: tls`` and ``srtp: require``, trusting that CA. A's assistant
speaks its first message (offline TTS), B echoes it back: both sides receive and decode audio, neither
counts an SRTP error, and the datagrams on the wire between them carry SRTP auth tags (not plain G.711).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.certs import make_pki
from tests.integration.harness import GatewayProcess, free_port, start_gateway

pytestmark = pytest.mark.integration

B_CONFIG = """
sip:
  listen: "127.0.0.1:{SIP_PORT}"
  tls: {listen: "127.0.0.1:TLS_PORT", cert_file: "CERT", key_file: "KEY"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
numbers:
  - {number: "+15550001111", echo: true, srtp: require}
security: {trusted_sources: ["127.0.0.1/32"]}
log: {level: info, sip_trace: true}
"""

A_CONFIG = """
sip:
  listen: "127.0.0.1:{SIP_PORT}"
  tls: {ca_file: "CA"}
rtp: {port_min: {RTP_MIN}, port_max: {RTP_MAX}}
http: {listen: "127.0.0.1:{HTTP_PORT}"}
assistants:
  talker:
    firstMessage: "Hello, this call is encrypted end to end."
    model: {provider: rules}
    silenceTimeoutSeconds: 600
trunks:
  - {name: b, host: 127.0.0.1, port: TLS_PORT, transport: tls, srtp: require}
security: {trusted_sources: ["127.0.0.1/32"], outbound_allow: ["+1555*"]}
log: {level: info, sip_trace: true}
"""


class LoopbackSniffer:
    """UDP datagrams to ``ports`` seen on lo (needs CAP_NET_RAW; ``available`` is False without it)."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self.payloads: list[bytes] = []
        self._stop = threading.Event()
        try:
            self._sock: socket.socket | None = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
            self._sock.bind(("lo", 0))
            self._sock.settimeout(0.1)
        except (PermissionError, OSError, AttributeError):
            self._sock = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def available(self) -> bool:
        return self._sock is not None

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65536)
            except TimeoutError:
                continue
            ip = frame[14:]  # Ethernet header on lo
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            header = (ip[0] & 0x0F) * 4
            _, dst_port, length, _ = struct.unpack("!HHHH", ip[header:header + 8])
            if dst_port in self.ports and len(self.payloads) < 2000:
                self.payloads.append(ip[header + 8:header + length])

    @contextlib.contextmanager
    def running(self) -> Iterator[LoopbackSniffer]:
        if self._sock is not None:
            self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            if self._sock is not None:
                self._thread.join(2)
                self._sock.close()


def count(line: dict[str, object], key: str) -> int:
    value = line.get(key, 0)
    assert isinstance(value, int), (key, value)
    return value


def rtp_range(gw: GatewayProcess) -> range:
    text = gw.config_path.read_text()
    start = text.index("port_min: ") + len("port_min: ")
    low = int(text[start:text.index(",", start)])
    start = text.index("port_max: ") + len("port_max: ")
    high = int(text[start:text.index("}", start)])
    return range(low, high + 1)


def test_call_over_tls_with_srtp_has_audio_both_ways(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port(socket.SOCK_STREAM, also_tcp=False)
    b_text = (B_CONFIG.replace("TLS_PORT", str(tls_port)).replace("CERT", str(pki.cert_file))
              .replace("KEY", str(pki.key_file)))
    a_text = A_CONFIG.replace("TLS_PORT", str(tls_port)).replace("CA", str(pki.ca_file))
    b = start_gateway(tmp_path, b_text, name="b")
    a = None
    try:
        a = start_gateway(tmp_path, a_text, name="a")
        sniffer = LoopbackSniffer(rtp_range(b))
        with sniffer.running(), httpx.Client(base_url=f"http://127.0.0.1:{a.http_port}", timeout=10) as api:
            r = api.post("/call", json={"assistantId": "talker", "phoneNumberId": "b", "customer": {"number": "+15550001111"}})
            assert r.status_code == 201, r.text
            call_id = r.json()["id"]
            b.wait_for_log("call_confirmed", timeout=15)
            time.sleep(4)  # the first message goes out and comes back
            assert api.delete(f"/call/{call_id}").status_code == 200
        a_stats = a.wait_for_log("media_stats", timeout=15)
        b_stats = b.wait_for_log("media_stats", timeout=15)
        a_srtp = a.wait_for_log("srtp_stats", timeout=5)
        b_srtp = b.wait_for_log("srtp_stats", timeout=5)
    finally:
        if a is not None:
            a.stop()
        b.stop()

    # Signalling went over TLS both ways, with a sips-capable Contact and our Via.
    b_invite = next(line for line in b.logs("sip_recv") if str(line["message"]).startswith("INVITE "))
    assert b_invite["transport"] == "tls"
    assert "Via: SIP/2.0/TLS" in str(b_invite["message"]) and "transport=tls" in str(b_invite["message"])
    # Keys never reach a log, not even the SIP trace.
    assert "inline:<redacted>" in str(b_invite["message"])
    for line in [*a.logs(), *b.logs()]:
        assert "inline:" not in str(line).replace("inline:<redacted>", "")

    # Audio both ways: A's first message reached B (B echoed it) and came back decoded at A.
    assert count(b_stats, "rx_packets_received") > 50, b_stats
    assert count(b_stats, "packets_sent") > 50, b_stats
    assert count(a_stats, "rx_packets_received") > 50, a_stats
    assert a_stats["codec"] == b_stats["codec"]
    # SRTP both ways and nothing failed authentication.
    for srtp in (a_srtp, b_srtp):
        assert srtp["suite"] == "AES_CM_128_HMAC_SHA1_80"
        assert count(srtp, "in_rtp") > 50 and count(srtp, "out_rtp") > 50, srtp
        assert not any(key.endswith("_error") for key in srtp), srtp
    for stats in (a_stats, b_stats):
        assert "srtp" not in str(stats["dropped"]), stats

    # On the wire (when this machine lets us sniff lo): RTP with a 10-byte auth tag, not plain G.711.
    if sniffer.available:
        rtp = [p for p in sniffer.payloads if len(p) >= 12 and p[0] >> 6 == 2 and p[1] & 0x7F in (0, 8)]
        assert len(rtp) > 50
        assert all(len(p) == 12 + 160 + 10 for p in rtp), {len(p) for p in rtp}
